"""The proxy training loss: cross-entropy, auxiliary heads, distillation.

As the original (``train_task0`` / ``train_segmenter`` in ``src/engine/trainer.py`` of
DrSleep/nas-segm-pytorch):

* cross-entropy (255 ignored) at the decoder's resolution: the caller passes labels
  nearest-downsampled to it (stage 1: to the first encoder output, stride 4; stage 2:
  to the logits' size), and the logits are bilinearly resized to the labels when the
  decoder's output stride differs;
* plus ``aux_weight`` times the cross-entropy of every auxiliary head (CVPR space),
  each bilinearly resized to the labels; ``aux_weight: 0`` switches them off;
* plus ``distillation_weight`` times the mean squared error between the student's
  logits and the teacher's (both at the teacher's resolution, a quarter of the input).

Where we differ: the original passes ``LogSoftmax`` outputs to ``NLLLoss2d``; here
``F.cross_entropy`` does both in one numerically equivalent step.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models import TrainOutput
from ..models.ops import resize_to

IGNORE_INDEX = 255


class SegmentationLoss:
    """``loss(out, target, teacher=None)``: the scalar training loss of one batch."""

    def __init__(self, aux_weight: float = 0.0, distillation_weight: float = 0.0):
        self.aux_weight = aux_weight
        self.distillation_weight = distillation_weight

    @property
    def uses_aux(self) -> bool:
        """Whether the auxiliary heads' outputs are read (if not, the model can skip them)."""
        return self.aux_weight > 0

    def __call__(self, out: TrainOutput, target: torch.Tensor,
                 teacher: torch.Tensor | None = None) -> torch.Tensor:
        size = target.shape[-2:]
        labels = target.long()
        loss = F.cross_entropy(resize_to(out.logits, size), labels, ignore_index=IGNORE_INDEX)
        if self.aux_weight > 0:
            for aux in out.aux_logits:
                loss = loss + self.aux_weight * F.cross_entropy(resize_to(aux, size), labels,
                                                                ignore_index=IGNORE_INDEX)
        if teacher is not None and self.distillation_weight > 0:
            loss = loss + self.distillation_weight * F.mse_loss(
                resize_to(out.logits, teacher.shape[-2:]).float(), teacher.float())
        return loss
