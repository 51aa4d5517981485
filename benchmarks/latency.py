"""Eval-mode latency of the published WACV arch0 in every backend against the unfused eager network.

* baseline: the network as built (BatchNorm modules unfused, eager mode, NCHW), eval mode,
  batch 1 -- it computes what the authors' model computes (their model code, ported and
  checked output for output in tests/test_models.py); nothing of theirs is imported;
* the backends of nasseg.backends on the deployable network (BatchNorm folded, dead branches
  removed): eager, channels_last, compile (torch.compile with freezing), onnxruntime, openvino
  (float32), int8 and int8_openvino (ONNX Runtime static quantisation run in ONNX Runtime and
  in OpenVINO; calibrated on random images here: their speed, not their accuracy, which the
  benchmark stage measures on real images).

Per size, every arm is prepared and checked against the baseline first, then the arms are timed
interleaved: --reps rounds, each arm once per round with at least --min-seconds of timed runs
(nasseg.latency.measure). Printed per arm: median and minimum over the rounds in ms, and their
ratios to the baseline's median and minimum; the targets are the best float32 backend at most
0.2x the baseline at 360x480 and 0.1x at 1024x2048, int8 faster still. The CPU is named with its
vector extensions (figures move between machines; ratios within one run are what count).

    python benchmarks/latency.py [--sizes 360x480,1024x2048] [--reps 5] [--min-seconds 1] [--threads 2]
        [--backends eager,channels_last,compile,onnxruntime,openvino,int8,int8_openvino] [--classes 19]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="360x480,1024x2048")
    parser.add_argument("--reps", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="timed work per arm and round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backends", default="eager,channels_last,compile,onnxruntime,openvino,int8,int8_openvino")
    parser.add_argument("--genotype", default="wacv/arch0")
    parser.add_argument("--classes", type=int, default=19)
    args = parser.parse_args()

    import torch

    import nasseg
    from nasseg.backends import LOW_PRECISION, BackendContext, backend
    from nasseg.benchmarking import compare_outputs
    from nasseg.config import parse_size
    from nasseg.export import deployable
    from nasseg.genotypes import load_genotype
    from nasseg.latency import check_eval_mode, measure
    from nasseg.runtime import describe_machine

    torch.set_num_threads(args.threads)
    print(f"# {describe_machine()}; "
          f"{args.threads} threads; {args.genotype}, {args.classes} classes, agg_size 64, repeats 2, batch 1")
    torch.manual_seed(0)
    net = nasseg.build_segmenter(load_genotype(args.genotype), args.classes, agg_size=64, repeats=2).eval()
    check_eval_mode(net)
    model, _ = deployable(net)
    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    gen = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        calibration = [torch.randn(1, 3, 256, 512, generator=gen) for _ in range(4)]
        ctx = BackendContext(threads=args.threads, workdir=Path(tmp), calibration=calibration, name="arch")
        for size in args.sizes.split(","):
            h, w = parse_size(size)
            x = torch.randn(1, 3, h, w, generator=gen)
            arms = {"baseline": net}
            with torch.inference_mode():
                ref = net(x)
                for name in names:
                    try:
                        predictor = backend(name)(model, x, ctx)
                        ok, _, rule = compare_outputs(predictor(x), ref, low_precision=name in LOW_PRECISION,
                                                      rtol=1e-3, int8_tolerance=0.3)
                    except Exception as exc:   # report and go on: the other arms still mean something
                        print(f"{size} {name}: failed: {type(exc).__name__}: {str(exc).splitlines()[0]}")
                        continue
                    if not ok:
                        print(f"{size} {name}: disagrees with the baseline ({rule}); not timed")
                        continue
                    arms[name] = predictor
                for predictor in arms.values():            # warm-up
                    predictor(x)
                times: dict[str, list[float]] = {name: [] for name in arms}
                for _ in range(args.reps):
                    for name, predictor in arms.items():
                        stats = measure(lambda p=predictor: p(x), warmup=0, min_seconds=args.min_seconds, repeats=1)
                        times[name].append(stats.median)
            base_med, base_min = statistics.median(times["baseline"]), min(times["baseline"])
            print(f"\n{size}: median / min ms over {args.reps} rounds, ratio to the baseline (median / min)")
            for name, t in times.items():
                med, low = statistics.median(t), min(t)
                print(f"  {name:14s} {1e3 * med:9.2f} {1e3 * low:9.2f}   {med / base_med:6.3f} {low / base_min:6.3f}")


if __name__ == "__main__":
    main()
