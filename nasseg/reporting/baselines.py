"""A floor for the trained scores: the best input-blind (constant) prediction.

What: :func:`constant_segmentation` scores predicting one class everywhere, for the
class that scores best, from an evaluation's confusion matrix (its row sums are the
ground truth's class counts, so no data is read); :func:`constant_depth` scores
predicting one depth everywhere -- the mean of the valid ground-truth depths, which
minimises the squared error -- on the evaluated split of a prepared depth dataset.

Why: the training stage records no score of the untrained network (its
``metrics.json`` holds the best and last validation only), and a tiny run on synthetic
data scores close to zero, where "better than nothing" needs a number. A network that
does not beat a constant chosen *with the labels of the very split it is scored on*
has learned nothing from its input. The same metric functions as the evaluation
(:mod:`nasseg.metrics`) compute them.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["ConstantBaseline", "constant_segmentation", "constant_depth"]


@dataclass(frozen=True)
class ConstantBaseline:
    """The scores of predicting ``value`` (a class name, or metres) everywhere."""
    value: str
    scores: dict[str, float | None]


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def constant_segmentation(confusion: Sequence[Sequence[int]], class_names: Sequence[str]) -> ConstantBaseline:
    """The best one-class prediction (by mIoU) for the ground truth counted in ``confusion``."""
    from ..metrics import segmentation_scores

    m = np.asarray(confusion, dtype=np.int64)
    truth = m.sum(axis=1)
    best: tuple[float, int, dict] | None = None
    for c in np.flatnonzero(truth):
        const = np.zeros_like(m)
        const[:, c] = truth
        scores = segmentation_scores(const)
        key = float(np.nan_to_num(scores["miou"], nan=-1.0))
        if best is None or key > best[0]:
            best = (key, int(c), scores)
    if best is None:
        raise ValueError("the confusion matrix counts no ground-truth pixel")
    _, c, scores = best
    name = class_names[c] if c < len(class_names) else str(c)
    return ConstantBaseline(f"class '{name}'", {k: _finite(scores[k]) for k in
                                                ("miou", "mean_acc", "fwiou", "pixel_acc")})


def constant_depth(data: str | Path, split: str) -> ConstantBaseline:
    """The mean valid depth of ``split`` predicted everywhere, scored as the evaluation scores depth."""
    from ..data import PreparedDataset
    from ..metrics.depth import DepthMeter

    dataset = PreparedDataset(data, split, task="depth")
    targets = [dataset.load(i)[1] for i in range(len(dataset))]
    total = sum(float(t[t > 0].sum()) for t in targets)
    count = sum(int((t > 0).sum()) for t in targets)
    if count == 0:
        raise ValueError(f"{data}: split {split} has no valid depth pixel")
    mean = total / count
    meter = DepthMeter()
    for t in targets:
        meter.update(np.full(t.shape, mean, dtype=np.float32), t)
    return ConstantBaseline(f"{mean:.3f} m", {k: _finite(v) for k, v in meter.compute().items()})
