"""Floors for the trained scores: the best constant prediction, and the untrained network.

What: :func:`constant_segmentation` scores predicting one class everywhere, for the
class that scores best, from an evaluation's confusion matrix (its row sums are the
ground truth's class counts, so no data is read); :func:`constant_depth` scores
predicting one depth everywhere -- the mean of the valid ground-truth depths, which
minimises the squared error -- on the evaluated split of a prepared depth dataset.
:func:`untrained_network` scores a network before any training: the architecture and
model card of a trained model file, freshly initialised (every weight, the encoder's
too: no pretrained weights) after ``torch.manual_seed(seed)`` -- the training seed, so
the same draw as the training's -- and scored as the evaluate stage scores (full
resolution, batch 1, :func:`nasseg.evaluation.evaluate`, the evaluation's flip and
scales), on at most ``max_images`` images of the split, spread evenly over it.

Why: the training stage records no score of the untrained network (its
``metrics.json`` holds the best and last validation only), and a tiny run on synthetic
data scores close to zero, where "better than nothing" needs a number. A network that
does not beat a constant chosen *with the labels of the very split it is scored on*
has learned nothing from its input; one that does not beat its own untrained self has
learned nothing from training. The same metric functions as the evaluation
(:mod:`nasseg.metrics`) compute them.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["ConstantBaseline", "UntrainedBaseline", "constant_segmentation", "constant_depth", "untrained_network"]


@dataclass(frozen=True)
class ConstantBaseline:
    """The scores of predicting ``value`` (a class name, or metres) everywhere."""
    value: str
    scores: dict[str, float | None]


@dataclass(frozen=True)
class UntrainedBaseline:
    """The scores of a trained slot's network as training starts: freshly initialised with ``seed``.

    ``num_images`` of the ``total_images`` of ``split`` were scored (all of them unless capped).
    """
    slot: str
    seed: int
    split: str
    num_images: int
    total_images: int
    scores: dict[str, float | None]

    @property
    def capped(self) -> bool:
        """Whether only part of the split was scored."""
        return self.num_images < self.total_images


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


def untrained_network(checkpoint: str | Path, data: str | Path, split: str, seed: int, *, slot: str = "",
                      flip: bool = False, scales: Sequence[float] = (1.0,), max_images: int | None = None,
                      device: str = "cpu") -> UntrainedBaseline:
    """The network of the model file ``checkpoint`` (its card only), freshly initialised after
    ``torch.manual_seed(seed)``, scored on ``split`` of the prepared dataset ``data`` as the evaluate
    stage scores: each image whole, batch 1, with ``flip`` and ``scales``; at most ``max_images``
    images (None: all), spread evenly over the split. The global random state is left as it was."""
    import torch
    from torch.utils.data import Subset

    from ..checkpoint import ModelCard, read_model_file
    from ..data import PreparedDataset, eval_transform
    from ..data.loaders import make_loader
    from ..evaluation import evaluate
    from ..serialization import CheckpointError
    from .qualitative import spread_indices

    raw = read_model_file(checkpoint)
    try:
        card = ModelCard.from_dict(raw["card"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{checkpoint}: its model card is unreadable ({exc})") from exc
    del raw
    dataset = PreparedDataset(data, split, eval_transform(), task=card.task)
    total = len(dataset)
    picked = spread_indices(total, total if max_images is None else max_images)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = card.build()
    loader = make_loader(Subset(dataset, picked), 1, train=False, workers=0, drop_last=False)
    scores = evaluate(model.to(device), loader, task=card.task, num_classes=card.num_classes,
                      ignore_index=dataset.ignore_index, device=device, flip=flip, scales=tuple(scales))
    return UntrainedBaseline(slot, seed, split, len(picked), total,
                             {k: _finite(float(v)) for k, v in scores.items()
                              if isinstance(v, (int, float)) and not isinstance(v, bool)})
