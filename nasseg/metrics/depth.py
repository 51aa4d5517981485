"""Depth-estimation metrics for NYUD (the usual Eigen et al. set).

Pixels count only where the ground truth is finite and > 0 (NYUD marks
missing depth with 0). Predictions are clamped from below to `MIN_DEPTH`
metres before logs and ratios, so a prediction <= 0 is scored as a very bad
positive depth instead of turning the log metrics into -inf/NaN. NaN
predictions are not clamped: they make the metrics NaN, so a broken model is
not hidden. With no valid pixel at all every metric is NaN, never 0.
"""
from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

__all__ = ["DEPTH_METRICS", "MIN_DEPTH", "DepthMeter", "depth_metrics"]

MIN_DEPTH = 1e-3  # metres; lower clamp applied to predictions
DEPTH_METRICS = (
    "rmse", "rmse_log", "abs_rel", "sq_rel", "log10", "delta1", "delta2", "delta3",
)
# Running sums kept by DepthMeter: each metric is a mean of a per-pixel term
# (followed by a sqrt for the two RMSEs), so sums give dataset-level values.
_SUMS = ("sq", "sq_log", "abs_rel", "sq_rel", "log10", "delta1", "delta2", "delta3")


def _to_float(x: Any) -> np.ndarray:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _pixel_sums(pred: Any, target: Any) -> tuple[int, dict[str, float]]:
    """Number of valid pixels and the sum of each per-pixel term over them."""
    p = _to_float(pred)
    t = _to_float(target)
    if p.shape != t.shape:
        raise ValueError(
            f"pred and target must have the same shape, got pred {p.shape} "
            f"and target {t.shape}"
        )
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(t) & (t > 0)
    t = t[valid]
    p = np.maximum(p[valid], MIN_DEPTH)  # NaN stays NaN
    diff = p - t
    log_diff = np.log(p) - np.log(t)
    ratio = np.maximum(p / t, t / p)
    sums = {
        "sq": float(np.sum(diff**2)),
        "sq_log": float(np.sum(log_diff**2)),
        "abs_rel": float(np.sum(np.abs(diff) / t)),
        "sq_rel": float(np.sum(diff**2 / t)),
        "log10": float(np.sum(np.abs(np.log10(p) - np.log10(t)))),
        # A NaN ratio compares False; keep the NaN visible via the other sums.
        "delta1": float(np.sum(ratio < 1.25)),
        "delta2": float(np.sum(ratio < 1.25**2)),
        "delta3": float(np.sum(ratio < 1.25**3)),
    }
    return int(t.size), sums


def _finish(n: int, sums: dict[str, float]) -> dict[str, float]:
    if n == 0:
        return {k: float("nan") for k in DEPTH_METRICS}
    mean = {k: v / n for k, v in sums.items()}
    return {
        "rmse": math.sqrt(mean["sq"]),
        "rmse_log": math.sqrt(mean["sq_log"]),
        "abs_rel": mean["abs_rel"],
        "sq_rel": mean["sq_rel"],
        "log10": mean["log10"],
        "delta1": mean["delta1"],
        "delta2": mean["delta2"],
        "delta3": mean["delta3"],
    }


def depth_metrics(pred: Any, target: Any) -> dict[str, float]:
    """Depth metrics of one prediction/ground-truth pair (same shape, metres).

    Keys: rmse, rmse_log, abs_rel, sq_rel, log10 and delta1..3, the fraction
    of valid pixels with max(pred/target, target/pred) < 1.25**k.
    """
    return _finish(*_pixel_sums(pred, target))


class DepthMeter:
    """Dataset-level depth metrics accumulated batch by batch.

    Keeps sums over pixels, so `compute()` equals `depth_metrics` on all
    batches concatenated (RMSE is the root of the mean over all valid pixels,
    not a mean of per-image RMSEs).
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.sums = dict.fromkeys(_SUMS, 0.0)

    def update(self, pred: Any, target: Any) -> DepthMeter:
        n, sums = _pixel_sums(pred, target)
        self.count += n
        for k, v in sums.items():
            self.sums[k] += v
        return self

    def compute(self) -> dict[str, float]:
        return _finish(self.count, self.sums)
