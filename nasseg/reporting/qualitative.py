"""Qualitative results: image, ground truth and prediction for a few images of a split.

What: :func:`qualitative_samples` loads a trained model file, predicts a few images of
a prepared dataset's split at full resolution (:func:`nasseg.prediction.predict_image`,
the numbers of the evaluate stage) and colours the ground truth and the prediction the
same way -- segmentation in the dataset's palette (ignored pixels black), depth with
one colour scale shared by truth and prediction (the range of the shown ground truth;
predictions outside it clipped; pixels without a measurement black), so that the two
can be compared by eye.

The images are spread evenly over the split (first, last and between), so the choice
is fixed for a dataset and does not favour any model.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Sample", "Samples", "spread_indices", "qualitative_samples", "depth_colours"]


@dataclass(frozen=True)
class Sample:
    """One image with its coloured ground truth and prediction (HxWx3 uint8 each)."""
    name: str
    image: np.ndarray
    truth: np.ndarray
    prediction: np.ndarray


@dataclass(frozen=True)
class Samples:
    """The samples of one model on one split, and the legend of the colours they use."""
    task: str
    split: str
    samples: tuple[Sample, ...]
    legend: tuple[tuple[str, tuple[int, int, int]], ...]   # segmentation: (class, colour) of the classes shown
    depth_range: tuple[float, float] | None = None          # depth: metres at the colour scale's ends


def spread_indices(n: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``range(n)`` (all of them when n <= count)."""
    if n <= count:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, count)})


def depth_colours(depth: np.ndarray, lo: float, hi: float, *, invalid_black: bool = True,
                  cmap: str = "plasma_r") -> np.ndarray:
    """HxWx3 uint8 colours of depth in metres on the fixed scale [lo, hi] (near: bright), values
    outside it clipped; with ``invalid_black`` (ground truth, where 0 marks a missing measurement)
    non-positive depth is black, else (a prediction) only non-finite values are."""
    from matplotlib import colormaps

    valid = np.isfinite(depth) & ((depth > 0) if invalid_black else True)
    out = np.zeros((*depth.shape, 3), dtype=np.uint8)
    scaled = np.clip((depth[valid] - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0)
    out[valid] = (colormaps[cmap](scaled)[:, :3] * 255).round().astype(np.uint8)
    return out


def qualitative_samples(checkpoint: str | Path, data: str | Path, split: str, count: int,
                        device: str = "cpu") -> Samples:
    """Predict ``count`` images of ``split`` of the prepared dataset ``data`` with the model file
    ``checkpoint`` (a train stage's best.pt)."""
    import torch

    from ..checkpoint import load_model
    from ..data import PreparedDataset
    from ..prediction import colorize, palette_for, predict_image

    model, card = load_model(checkpoint)
    model = model.to(device)
    dataset = PreparedDataset(data, split, task=card.task)
    picked = spread_indices(len(dataset), count)
    samples = []
    loaded = []
    with torch.inference_mode():
        for i in picked:
            image, target = dataset.load(i)
            loaded.append((dataset.ids[i], image, target, predict_image(model, card, image, device=device)))
    if card.task == "depth":
        valid = np.concatenate([t[t > 0] for _, _, t, _ in loaded]) if loaded else np.zeros(0)
        lo, hi = (float(valid.min()), float(valid.max())) if valid.size else (0.0, 1.0)
        for name, image, target, pred in loaded:
            assert pred.depth is not None
            samples.append(Sample(name, image, depth_colours(target, lo, hi),
                                  depth_colours(pred.depth, lo, hi, invalid_black=False)))
        return Samples("depth", split, tuple(samples), (), (lo, hi))
    palette = palette_for(card)
    shown: set[int] = set()
    for name, image, target, pred in loaded:
        assert pred.labels is not None
        shown |= {int(c) for c in np.unique(target) if c < card.num_classes}
        shown |= {int(c) for c in np.unique(pred.labels)}
        samples.append(Sample(name, image, colorize(target, palette), colorize(pred.labels, palette)))
    names: Sequence[str] = card.class_names if len(card.class_names) == card.num_classes else \
        [str(c) for c in range(card.num_classes)]
    legend = tuple((names[c], tuple(int(v) for v in palette[c])) for c in sorted(shown) if c < len(palette))
    return Samples("segmentation", split, tuple(samples), legend)   # type: ignore[arg-type]
