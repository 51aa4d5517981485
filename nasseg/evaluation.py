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
The papers report single-scale scores without flipping, which is what
:class:`EvaluateParams` defaults to.

:func:`evaluate_checkpoint` is what the evaluate stage runs: a model file (or an
authors' checkpoint with its card) scored on one split of a prepared dataset,
image by image at full resolution (batch size 1: the images differ in size).
The authors released no script that scores a trained model (their repository
holds the search, whose ``validate`` upsamples the logits to the label size and
takes the arg-max as :func:`predict` does, and inference notebooks); the evaluate
stage is ours.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from .evaluation_config import EvaluateParams
from .metrics.depth import DepthMeter
from .metrics.segmentation import ConfusionMatrix

if TYPE_CHECKING:
    from .checkpoint import ModelCard

__all__ = ["EvaluateParams", "predict", "evaluate", "evaluate_checkpoint"]

log = logging.getLogger(__name__)


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
            out = model(x.flip(-1) if mirrored else x)   # eval mode: the logits alone
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


def evaluate_checkpoint(checkpoint: str | os.PathLike, data: str | os.PathLike, split: str,
                        params: EvaluateParams | None = None, *, card: ModelCard | None = None,
                        expect_space: str | None = None, device: str | torch.device = "cpu",
                        progress: bool = True) -> tuple[dict[str, Any], ModelCard]:
    """Score the model stored at ``checkpoint`` on ``split`` of the prepared dataset ``data``.

    ``card`` is needed for an authors' checkpoint only (see
    :func:`nasseg.checkpoint.load_model`). The split is read with the model's task
    (NYUD holds depth and, with its class mapping, 40-class labels). Returns
    ``(scores, card)``: :func:`evaluate`'s scores plus ``num_images``. Raises
    :class:`nasseg.serialization.CheckpointError` naming the file when it is missing,
    unreadable, of another space than ``expect_space`` or of another class count
    than the data, and :class:`nasseg.data.DataError` for the data.
    """
    from tqdm.auto import tqdm

    from .checkpoint import load_model
    from .data import PreparedDataset, eval_transform, read_meta
    from .data.loaders import make_loader
    from .serialization import CheckpointError

    params = params or EvaluateParams()
    meta = read_meta(data)   # a missing or stale dataset fails before the model is loaded
    # class count per task the data offers (NYUD: depth, and 40 classes with its mapping)
    tasks = {meta["task"]: meta["num_classes"],
             **{t: meta[t]["num_classes"] for t in ("segmentation", "depth")
                if t != meta["task"] and isinstance(meta.get(t), dict) and "num_classes" in meta[t]}}
    model, card = load_model(checkpoint, card, expect_space=expect_space,
                             expect_classes=meta["num_classes"] if len(tasks) == 1 else None)
    if card.task not in tasks:
        raise CheckpointError(f"{checkpoint}: a {card.task} model, but the {meta['dataset']} data "
                              f"{data} has no {card.task} targets (its task is {meta['task']!r})")
    if card.num_classes != tasks[card.task]:
        raise CheckpointError(f"{checkpoint}: its model has {card.num_classes} output classes, the "
                              f"data has {tasks[card.task]}; was it trained on another dataset?")
    dataset = PreparedDataset(data, split, eval_transform(), task=card.task)
    log.info("evaluating %s (%s, %s space, %d classes) on %s/%s: %d images, flip %s, scales %s",
             checkpoint, card.task, card.space, card.num_classes, data, split, len(dataset),
             params.flip, list(params.scales))
    loader = make_loader(dataset, 1, train=False, workers=params.workers, drop_last=False)
    batches = tqdm(loader, desc=f"evaluate {split}", unit="img", disable=not progress)
    scores = evaluate(model.to(device), batches, task=card.task, num_classes=card.num_classes,
                      ignore_index=dataset.ignore_index, device=device, flip=params.flip,
                      scales=params.scales)
    scores["num_images"] = len(dataset)
    return scores, card
