"""Time one search step: proxy training + validation of one architecture, the
controller's sampling and one PPO update.

Settings follow the figures measured for the authors' implementation on the
same 2-core machine (WACV space; 100 stage-1 images at 256x256, batch 16,
5 epochs; one stage-2 epoch at batch 8): 27 to 142 s per architecture,
6.3 s (WACV) and 3.3 s (CVPR) per PPO update. The published wacv arch0 and
cvpr arch0 are timed, interleaved, on synthetic CityScapes (train 100 images,
val 12, 256x512). Early stopping is off so that both stages always run. As an
in-run baselines, timed interleaved with the default (channels_last: auto, the
format that nasseg.search.kernels measured to be faster on this machine): the
authors' per-architecture loop re-implemented step for step on the same
networks (benchmarks/authors_loop.py; the target is at most 0.5x its time), and
the same training as ours with NCHW tensors (channels_last off).

    python benchmarks/search_step.py [--reps 3] [--threads 2]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions of each step")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--images", type=int, default=100, help="stage-1 images")
    parser.add_argument("--ppo-reps", type=int, default=10, help="timed PPO updates")
    args = parser.parse_args()

    import torch

    import authors_loop
    import nasseg
    from nasseg.data import prepare_dataset, synthesize_dataset
    from nasseg.search.config import (EarlyStoppingConfig, ProxyConfig, SearchDataConfig, StageOneConfig,
                                      StageTwoConfig)
    from nasseg.search.data import make_proxy_data
    from nasseg.search.early_stopping import EarlyStopping
    from nasseg.search.evaluator import ProxyEvaluator
    from nasseg.search.failures import Status
    from nasseg.search.runner import SearchConfig
    from nasseg.search.strategies import StrategyConfig, make_strategy

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="nasseg-bench-"))
    n_total = int((args.images + 12) / 0.75) + 1   # synthesize puts 75 % in train
    synthesize_dataset("cityscapes", tmp / "raw", num_images=n_total, seed=0, height=256, width=512)
    prepare_dataset("cityscapes", tmp / "raw", tmp / "prep")

    proxy = ProxyConfig(agg_size=48, repeats=1, aux_cell=True, aux_weight=0.0, encoder_weights="none",
                        stage1=StageOneConfig(epochs=5, batch_size=16, crop_size=256, resize_side=512,
                                              num_images=args.images, lr=7e-3, val_every=5),
                        stage2=StageTwoConfig(epochs=1, batch_size=8, crop_size=256, resize_side=512,
                                              enc_optim="adam", enc_lr=5e-4, dec_lr=2e-3),
                        early_stopping=EarlyStoppingConfig(enabled=False),
                        val_batch_size=4, val_num_images=12)
    data = SearchDataConfig(train_split="train", val_split="val", resize_longer=True,
                            val_resize_side=512, val_crop_size=None)
    evaluators, setup, genotypes = {}, {}, {}
    baselines = {}
    for space in ("wacv", "cvpr"):
        # The authors' loop: stage-1 features once per search at batch 1 (not timed, as
        # ours); a fresh encoder read from disk for each architecture (timed).
        config = SearchConfig(space=space, data=data, proxy=proxy)
        baseline_data = make_proxy_data(tmp / "prep", config)
        model = nasseg.build_segmenter(nasseg.published_genotype(space, "arch0"), baseline_data.num_classes,
                                       agg_size=proxy.agg_size, repeats=proxy.repeats)
        encoder_file = tmp / f"{space}_encoder.pt"
        torch.save(model.encoder.state_dict(), encoder_file)
        baselines[space + " authors"] = (baseline_data, str(encoder_file),
                                         authors_loop.populate_task0(model.encoder, baseline_data, args.images))
        for variant, cfg in (("", proxy), (" NCHW", proxy.model_copy(update={"channels_last": False}))):
            config = SearchConfig(space=space, data=data, proxy=cfg)
            t = time.perf_counter()
            evaluators[space + variant] = ProxyEvaluator(space, cfg, make_proxy_data(tmp / "prep", config), "cpu")
            setup[space + variant] = time.perf_counter() - t
            genotypes[space + variant] = nasseg.published_genotype(space, "arch0")

    times: dict[str, list[float]] = {s: [] for s in [*evaluators, *baselines]}
    parts: dict[str, list[dict]] = {s: [] for s in evaluators}
    for rep in range(args.reps):
        for space, ev in evaluators.items():
            t = time.perf_counter()
            result = ev.evaluate(genotypes[space], 1000 + rep, EarlyStopping(ev.config.early_stopping))
            times[space].append(time.perf_counter() - t)
            assert result.status == Status.OK, result.reason
            parts[space].append(result.timings)
            authors = space.split()[0] + " authors"
            if authors in baselines and " " not in space:
                baseline_data, encoder_file, task0 = baselines[authors]
                t = time.perf_counter()
                authors_loop.evaluate(genotypes[space], proxy, baseline_data, task0, encoder_file, 1000 + rep)
                times[authors].append(time.perf_counter() - t)

    print(f"torch {torch.__version__}, {args.threads} threads, CPU; {args.images} stage-1 images "
          f"256x256 batch 16 x 5 epochs, one stage-2 epoch batch 8, {args.reps} reps")
    print(f"{'step':44s} {'median s':>9s} {'min s':>8s} {'archs/h':>8s}")
    for space in evaluators:
        med, best = statistics.median(times[space]), min(times[space])
        name = space.split()[0] + " arch0" + (" (NCHW baseline)" if "NCHW" in space else "") + ": one arch"
        print(f"{name:44s} {med:9.2f} {best:8.2f} {3600 / med:8.0f}")
        for key in ("stage1_s", "stage2_s", "validation_s"):
            vals = [p[key] for p in parts[space]]
            print(f"{'  ' + key:44s} {statistics.median(vals):9.2f} {min(vals):8.2f}")
        print(f"{'  one-off per worker: cache features, val set':44s} {setup[space]:9.2f}")
    for authors in baselines:
        space = authors.split()[0]
        med, best = statistics.median(times[authors]), min(times[authors])
        print(f"{space + ' arch0 (authors loop baseline): one arch':44s} {med:9.2f} {best:8.2f} {3600 / med:8.0f}")
        print(f"{'  ours / authors (median, min)':44s} {statistics.median(times[space]) / med:9.2f} "
              f"{min(times[space]) / best:8.2f}")

    for space in ("wacv", "cvpr"):
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
