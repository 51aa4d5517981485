"""Time nasseg's Cython confusion matrix against the usual np.bincount recipe.

Both run on one thread, on a Cityscapes-sized random label map (19 classes,
about 5% of target pixels set to the ignore label 255), interleaved over the
repetitions so that frequency drift and cache state hit both equally.

    python benchmarks/confusion_matrix.py [--reps 15] [--height 1024] ...
"""
from __future__ import annotations

import os

# Thread pools are sized when numpy/torch load, so this must come first.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402

# Run from a checkout without installing: put the repository root on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nasseg.metrics import confusion_matrix  # noqa: E402

IGNORE = 255


def bincount_baseline(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    mask = target != IGNORE
    return np.bincount(
        num_classes * target[mask].astype(np.int64) + pred[mask],
        minlength=num_classes**2,
    ).reshape(num_classes, num_classes)


def _time(fn: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--height", type=int, default=1024)
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--classes", type=int, default=19)
    ap.add_argument("--ignore-frac", type=float, default=0.05,
                    help="fraction of target pixels set to 255 (default 0.05)")
    ap.add_argument("--reps", type=int, default=15, help="timed repetitions (default 15)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not 0 < args.classes < IGNORE:
        ap.error(f"--classes must be in [1, {IGNORE})")

    rng = np.random.default_rng(args.seed)
    shape = (args.height, args.width)
    pred = rng.integers(0, args.classes, shape, dtype=np.uint8)
    target = rng.integers(0, args.classes, shape, dtype=np.uint8)
    target[rng.random(shape) < args.ignore_frac] = IGNORE
    mpix = pred.size / 1e6

    contenders = {
        "nasseg confusion_matrix": lambda: confusion_matrix(pred, target, args.classes, IGNORE),
        "numpy bincount": lambda: bincount_baseline(pred, target, args.classes),
    }
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for fn in contenders.values():  # warm-up: page faults, lazy imports
        fn()
    for _ in range(args.reps):
        results = []
        for name, fn in contenders.items():
            dt, res = _time(fn)
            times[name].append(dt)
            results.append(res)
        if not np.array_equal(results[0], results[1]):
            raise SystemExit("MISMATCH: the two confusion matrices differ")

    print(f"{args.height}x{args.width} uint8 labels, {args.classes} classes, "
          f"{args.ignore_frac:.0%} ignored, {args.reps} reps, 1 thread; results agree")
    for name, ts in times.items():
        med, best = statistics.median(ts), min(ts)
        print(f"  {name:<24} median {med * 1e3:7.2f} ms  min {best * 1e3:7.2f} ms  "
              f"{mpix / med:7.0f} MP/s (median)  {mpix / best:7.0f} MP/s (best)")
    ours, base = times["nasseg confusion_matrix"], times["numpy bincount"]
    print(f"  speed-up: {statistics.median(base) / statistics.median(ours):.2f}x (median), "
          f"{min(base) / min(ours):.2f}x (best)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
