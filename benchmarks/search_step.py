"""Time one search step: proxy training + validation of one architecture, the
controller's sampling and one PPO update.

Settings follow the figures measured for the authors' implementation on the
same 2-core machine (WACV space; 100 stage-1 images at 256x256, batch 16,
5 epochs; one stage-2 epoch at batch 8): 27 to 142 s per architecture,
6.3 s (WACV) and 3.3 s (CVPR) per PPO update. The published wacv arch0 and
cvpr arch0 are timed, interleaved, on synthetic CityScapes (train 100 images,
val 12, 256x512). Early stopping is off so that both stages always run. As an
in-run baselines, timed interleaved with the default (channels_last: auto, the
format and depthwise kernels that nasseg.search.kernels measured to be faster on
this machine): the
authors' per-architecture loop re-implemented step for step on the same
networks (benchmarks/authors_loop.py; the target is at most 0.5x its time), and
the same training as ours with NCHW tensors (channels_last off).

Each of the three runs in its own process (spawned once per space, then asked for
one architecture at a time, in turn), so that what one sets for its process stays
its own: ours tunes glibc's allocator (nasseg.runtime.tune_malloc), the authors'
loop runs with the defaults, as their code did.

    python benchmarks/search_step.py [--reps 3] [--threads 2] [--spaces wacv cvpr]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


ARMS = ("ours", "ours NCHW", "authors")


def _settings(images: int):
    from nasseg.search.config import (EarlyStoppingConfig, ProxyConfig, SearchDataConfig, StageOneConfig,
                                      StageTwoConfig)
    proxy = ProxyConfig(agg_size=48, repeats=1, aux_cell=True, aux_weight=0.0, encoder_weights="none",
                        stage1=StageOneConfig(epochs=5, batch_size=16, crop_size=256, resize_side=512,
                                              num_images=images, lr=7e-3, val_every=5),
                        stage2=StageTwoConfig(epochs=1, batch_size=8, crop_size=256, resize_side=512,
                                              enc_optim="adam", enc_lr=5e-4, dec_lr=2e-3),
                        early_stopping=EarlyStoppingConfig(enabled=False),
                        val_batch_size=4, val_num_images=12)
    data = SearchDataConfig(train_split="train", val_split="val", resize_longer=True,
                            val_resize_side=512, val_crop_size=None)
    return proxy, data


def arm(conn, name: str, space: str, prep: Path, images: int, threads: int) -> None:
    """One arm in its own process: set up, then train one architecture per request (its seed)."""
    import torch

    import authors_loop
    import nasseg
    from nasseg.search.data import make_proxy_data
    from nasseg.search.early_stopping import EarlyStopping
    from nasseg.search.evaluator import ProxyEvaluator
    from nasseg.search.failures import Status
    from nasseg.search.runner import SearchConfig

    torch.set_num_threads(threads)
    proxy, data = _settings(images)
    if name == "ours NCHW":
        proxy = proxy.model_copy(update={"channels_last": False})
    genotype = nasseg.published_genotype(space, "arch0")
    pdata = make_proxy_data(prep, SearchConfig(space=space, data=data, proxy=proxy))
    t = time.perf_counter()
    if name == "authors":
        # Stage-1 features once per search at batch 1 (not timed, as ours); a fresh encoder
        # read from disk for each architecture (timed).
        model = nasseg.build_segmenter(genotype, pdata.num_classes, agg_size=proxy.agg_size, repeats=proxy.repeats)
        encoder_file = prep.parent / f"{space}_encoder.pt"
        torch.save(model.encoder.state_dict(), encoder_file)
        task0 = authors_loop.populate_task0(model.encoder, pdata, images)
    else:
        ev = ProxyEvaluator(space, proxy, pdata, "cpu")
    conn.send(time.perf_counter() - t)
    while (seed := conn.recv()) is not None:
        t = time.perf_counter()
        if name == "authors":
            authors_loop.evaluate(genotype, proxy, pdata, task0, str(encoder_file), seed)
            timings = {}
        else:
            result = ev.evaluate(genotype, seed, EarlyStopping(ev.config.early_stopping))
            assert result.status == Status.OK, result.reason
            timings = result.timings
        conn.send((time.perf_counter() - t, timings))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions of each step")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--images", type=int, default=100, help="stage-1 images")
    parser.add_argument("--ppo-reps", type=int, default=10, help="timed PPO updates")
    parser.add_argument("--spaces", nargs="+", default=["wacv", "cvpr"], choices=["wacv", "cvpr"])
    args = parser.parse_args()

    import multiprocessing as mp

    import torch

    from nasseg.data import prepare_dataset, synthesize_dataset
    from nasseg.runtime import describe_machine
    from nasseg.search.strategies import StrategyConfig, make_strategy

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="nasseg-bench-"))
    n_total = int((args.images + 12) / 0.75) + 1   # synthesize puts 75 % in train
    synthesize_dataset("cityscapes", tmp / "raw", num_images=n_total, seed=0, height=256, width=512)
    prepare_dataset("cityscapes", tmp / "raw", tmp / "prep")

    print(f"{describe_machine()}, {args.threads} threads; {args.images} stage-1 images 256x256 batch 16 x 5 epochs, one stage-2 "
          f"epoch batch 8, {args.reps} reps, each arm in its own process")
    print(f"{'step':44s} {'median s':>9s} {'min s':>8s} {'archs/h':>8s}")
    ctx = mp.get_context("spawn")
    for space in args.spaces:
        conns, procs, setup = {}, [], {}
        for name in ARMS:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=arm, args=(child, name, space, tmp / "prep", args.images, args.threads))
            proc.start()
            child.close()
            conns[name] = parent
            setup[name] = parent.recv()   # one set-up at a time: each measures on a quiet machine
            procs.append(proc)
        times: dict[str, list[float]] = {a: [] for a in ARMS}
        parts: dict[str, list[dict]] = {a: [] for a in ARMS}
        for rep in range(args.reps):
            for name in ARMS:   # interleaved, one request at a time
                conns[name].send(1000 + rep)
                seconds, timings = conns[name].recv()
                times[name].append(seconds)
                parts[name].append(timings)
        for name in ARMS:
            conns[name].send(None)
        for proc in procs:
            proc.join()
        for name in ARMS:
            med, best = statistics.median(times[name]), min(times[name])
            label = {"ours": "", "ours NCHW": " (NCHW baseline)", "authors": " (authors loop baseline)"}[name]
            print(f"{space + ' arch0' + label + ': one arch':44s} {med:9.2f} {best:8.2f} {3600 / med:8.0f}")
            for key in ("stage1_s", "stage2_s", "validation_s") if name != "authors" else ():
                vals = [p[key] for p in parts[name]]
                print(f"{'  ' + key:44s} {statistics.median(vals):9.2f} {min(vals):8.2f}")
            what = "cache features, val set" if name != "authors" else "stage-1 features (not timed)"
            print(f"{'  one-off per worker: ' + what:44s} {setup[name]:9.2f}")
        ours, theirs = times["ours"], times["authors"]
        print(f"{'  ' + space + ' ours / authors (median, min)':44s} "
              f"{statistics.median(ours) / statistics.median(theirs):9.2f} {min(ours) / min(theirs):8.2f}")

    for space in args.spaces:
        strategy = make_strategy(StrategyConfig(name="ppo"), space, seed=0)
        sample_t, update_t = [], []
        for i in range(100 + args.ppo_reps):
            t = time.perf_counter()
            p = strategy.propose()
            sample_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            strategy.observe(p, reward=(i % 7) / 7)
            if i >= 100:   # buffer full: 100 samples per update
                update_t.append(time.perf_counter() - t)
        print(f"{space + ' controller: sample one architecture':44s} {statistics.median(sample_t):9.4f} {min(sample_t):8.4f}")
        print(f"{space + ' controller: one PPO update (buffer 100)':44s} {statistics.median(update_t):9.4f} {min(update_t):8.4f}")


if __name__ == "__main__":
    main()
