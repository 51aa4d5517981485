"""Scoring a trained network on a prepared split, at full resolution.

What: :func:`predict` turns one normalised image batch into full-resolution
outputs (logits for segmentation, metres for depth), optionally averaged over
horizontal flips and input scales; :func:`evaluate` runs it over a loader and
accumulates :class:`nasseg.metrics.ConfusionMatrix` or
:class:`nasseg.metrics.DepthMeter`. Training's per-epoch validation and the
evaluate stage both call :func:`evaluate`, so the two report the same numbers.

As the papers score: the decoder's logits (stride 4 or 8 of the input) are
upsampled bilinearly to the label's size before the arg-max; for multi-scale
testing each scale's logits are upsampled to the label size and summed (the
usual RefineNet / DeepLab practice; the authors released no multi-scale code).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .metrics.depth import DepthMeter
from .metrics.segmentation import ConfusionMatrix

__all__ = ["predict", "evaluate"]


def _forward(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    out = model(images)
    return out[0] if isinstance(out, tuple) else out   # a TrainOutput if left in train mode


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, size: tuple[int, int], *,
            flip: bool = False, scales: Sequence[float] = (1.0,)) -> torch.Tensor:
    """Model outputs for a batch of normalised images, upsampled to ``size`` (H, W).

    The sum over ``scales`` (each resized with bilinear interpolation) and, with
    ``flip``, over the mirrored image too; divided by the number of passes, so a
    depth model returns metres. ``model`` must be in eval mode.
    """
    if model.training:
        raise ValueError("predict() needs the model in eval mode (model.eval()): train mode "
                         "updates BatchNorm statistics and returns the auxiliary outputs")
    total: torch.Tensor | None = None
    passes = 0
    h, w = images.shape[-2:]
    for scale in scales:
        x = images if scale == 1.0 else F.interpolate(
            images, size=(max(1, round(h * scale)), max(1, round(w * scale))),
            mode="bilinear", align_corners=False)
        for mirrored in ((False, True) if flip else (False,)):
            out = _forward(model, x.flip(-1) if mirrored else x)
            out = F.interpolate(out.float(), size=size, mode="bilinear", align_corners=False)
            out = out.flip(-1) if mirrored else out
            total = out if total is None else total + out
            passes += 1
    assert total is not None, "scales must not be empty"
    return total / passes


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
             task: str, num_classes: int, ignore_index: int = 255, device: str | torch.device = "cpu",
             flip: bool = False, scales: Sequence[float] = (1.0,),
             omit_classes: Iterable[int] = ()) -> dict[str, Any]:
    """Scores of ``model`` over ``batches`` of (normalised images, full-size targets).

    Segmentation: :func:`nasseg.metrics.segmentation_scores` of the confusion
    matrix (``miou``, ``per_class_iou``, ``mean_acc``, ``fwiou``, ...) plus the
    matrix itself under ``confusion_matrix``. Depth: the depth metrics
    (``rmse``, ``abs_rel``, ``delta1`` ...) over valid pixels (target > 0).
    The model is put in eval mode and left there.
    """
    model.eval()
    if task == "segmentation":
        meter: ConfusionMatrix | DepthMeter = ConfusionMatrix(num_classes, ignore_index)
    elif task == "depth":
        meter = DepthMeter()
    else:
        raise ValueError(f"unknown task {task!r}: segmentation or depth")
    for images, targets in batches:
        out = predict(model, images.to(device), tuple(targets.shape[-2:]), flip=flip, scales=scales)
        if task == "segmentation":
            meter.update(out.argmax(1).cpu(), targets)
        else:
            meter.update(out[:, 0].cpu(), targets)
    if isinstance(meter, ConfusionMatrix):
        scores = meter.scores(omit_classes)
        scores["confusion_matrix"] = meter.matrix.tolist()
        return scores
    return meter.compute()
