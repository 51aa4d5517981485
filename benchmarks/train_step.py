"""Time one training step of nasseg.training against the model's own step on the same batch.

* ours: :meth:`nasseg.training.trainer.Trainer.train_steps` -- the next batch from the
  prefetching loader (worker processes read, augment and collate it), the step (forward,
  loss at decoder resolution, backward, both optimisers, poly schedules, GradScaler) and
  the bookkeeping (loss summed on the device, progress counters);
* bare: the same network and optimisers on one batch held in memory -- forward, the same
  loss, backward, both optimiser steps, nothing else.

The two run interleaved in one process, in blocks of --block steps, --reps times; the
per-step median and minimum of each are printed with their ratio (the target: at most
1.2), with the CPU named (lscpu's model name and AVX flags). Settings: the published wacv
arch0 and cvpr arch0 (auxiliary heads on, weight 0.15) at the released decoder size
(agg_size 64, repeats 2), synthetic CityScapes at 256x512, crops of --crop, batches of
--batch, --workers loader processes.

    python benchmarks/train_step.py [--reps 5] [--block 3] [--threads 2] [--workers 0]

Measured on a shared 2-core AMD EPYC (AVX-512; torch 2.14, 2 threads, batch 8, crop 256):
per-step median ratios 1.06-1.08 with the loader in line (--workers 0), 1.05-1.15 with one
loader process, which takes turns with the two training threads on two cores (once 1.25 by
the minimum while other work ran on the machine); the step itself on a batch in memory costs
the same as the baseline: the difference is reading and augmenting the batch.
"""
from __future__ import annotations

import argparse
import copy
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cpu_name() -> str:
    """lscpu's model name and the AVX flags (from /proc/cpuinfo when lscpu is missing)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = re.search(r"^Model name:\s*(.+)$", text, re.M)
        flags = re.search(r"^Flags:\s*(.+)$", text, re.M)
        name, flag_list = (model.group(1).strip() if model else "?"), (flags.group(1).split() if flags else [])
    except (OSError, subprocess.CalledProcessError):
        info = Path("/proc/cpuinfo").read_text()
        name = re.search(r"^model name\s*:\s*(.+)$", info, re.M).group(1).strip()
        flag_list = re.search(r"^flags\s*:\s*(.+)$", info, re.M).group(1).split()
    avx = sorted(f for f in flag_list if f.startswith("avx") or f.startswith("amx"))
    return f"{name}; {os.cpu_count()} logical CPUs; {' '.join(avx) or 'no AVX'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="interleaved blocks of each")
    parser.add_argument("--block", type=int, default=3, help="steps per block")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--workers", type=int, default=0,
                        help="loader processes (default 0, as the 2-core presets: see params.yaml)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--spaces", nargs="+", default=["wacv", "cvpr"])
    args = parser.parse_args()

    import torch

    import nasseg
    from nasseg.data import prepare_dataset, synthesize_dataset
    from nasseg.training import TrainConfig
    from nasseg.training.distributed import setup
    from nasseg.training.optim import make_optimisers
    from nasseg.training.trainer import Trainer

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="nasseg-bench-train-"))
    synthesize_dataset("cityscapes", tmp / "raw", num_images=48, seed=0, height=256, width=512)
    prepare_dataset("cityscapes", tmp / "raw", tmp / "prep")

    print(f"CPU: {cpu_name()}")
    print(f"torch {torch.__version__}, {args.threads} threads, {args.workers} loader workers; batch {args.batch}, "
          f"crop {args.crop} from 256x512 images; {args.reps} interleaved blocks of {args.block} steps")
    print(f"{'per step':48s} {'median s':>9s} {'min s':>8s}")
    for space in args.spaces:
        config = TrainConfig(epochs=50, batch_size=args.batch, crop_size=args.crop, resize_side=512,
                             resize_longer=True, encoder_weights="none", agg_size=64, repeats=2,
                             aux_weight=0.15 if space == "cvpr" else 0.0, num_workers=args.workers,
                             checkpoint_every_steps=0, val_every=50)
        trainer = Trainer(config, nasseg.published_genotype(space, "arch0"), tmp / "prep",
                          state_dir=tmp / f"state-{space}", info=setup("cpu"), progress=False)
        trainer.train_mode()
        batches = trainer.batches()
        # The bare step: a copy of the network and its optimisers, one batch in memory.
        model = copy.deepcopy(trainer.module).train()
        optimisers = make_optimisers(model, config)
        images, targets = next(batches)
        aux = trainer.loss.uses_aux

        def bare_step() -> None:
            out = model(images, aux)
            loss = trainer.loss(out, targets)
            for opt in optimisers.values():
                opt.zero_grad(set_to_none=True)
            loss.backward()
            for opt in optimisers.values():
                opt.step()

        for _ in range(2):   # warm-up: kernel choice, allocator, the loader's first batches
            bare_step()
            trainer.train_steps(0, trainer.progress.step + 1, batches)
        ours, bare = [], []
        for _ in range(args.reps):
            t = time.perf_counter()
            trainer.train_steps(0, trainer.progress.step + args.block, batches)
            ours.append((time.perf_counter() - t) / args.block)
            t = time.perf_counter()
            for _ in range(args.block):
                bare_step()
            bare.append((time.perf_counter() - t) / args.block)
        for name, times in ((f"{space} arch0: training step (nasseg.training)", ours),
                            (f"{space} arch0: model's own step (baseline)", bare)):
            print(f"{name:48s} {statistics.median(times):9.3f} {min(times):8.3f}")
        print(f"{'  ratio ours / baseline (median, min)':48s} {statistics.median(ours) / statistics.median(bare):9.2f} "
              f"{min(ours) / min(bare):8.2f}")


if __name__ == "__main__":
    main()
