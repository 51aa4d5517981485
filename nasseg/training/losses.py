"""Training losses at the decoder's resolution, normalised over the global batch.

Segmentation: cross-entropy (the ignore index left out), plus ``aux_weight`` times
the cross-entropy of every auxiliary head (CVPR space). Depth (NYUD): the reverse
Huber ("berHu") loss of Laina et al. 2016 (arXiv:1606.00373) over valid pixels
(target > 0), with threshold ``c = 0.2 * max |error|`` over the batch -- the loss
the first author's DenseTorch library trains NYUD depth with (``InvHuberLoss`` in
``densetorch/engine/losses.py`` of DrSleep/DenseTorch, used by its NYUD depth
configurations); ``l1`` is the mean absolute error over valid pixels. The CVPR
paper's text on its depth loss could not be consulted here.

Resolution: as the authors' search (``src/engine/trainer.py`` of
DrSleep/nas-segm-pytorch) and Light-Weight RefineNet's training script
(``src/train.py`` of DrSleep/light-weight-refinenet), the loss is computed at the
decoder's output resolution (stride 4 or 8 of the input) against targets
nearest-downsampled to it, which keeps labels and invalid depth exact and costs
less than upsampling the logits; auxiliary logits are bilinearly resized to that
size. Validation scores full-resolution predictions (:mod:`nasseg.evaluation`).

Normalisation: the loss is the sum over the process's valid pixels divided by
``count / world``, where ``count`` is the number of valid pixels of the whole
global batch (summed across processes). DistributedDataParallel averages the
processes' gradients, so the update is that of the mean over the global batch,
exactly as one process computing it on the whole batch -- also when padding or
ignored pixels make the processes' counts differ. berHu's threshold is likewise the
maximum over the global batch (treated as a constant, as it is piecewise).

Where we differ: DenseTorch's ``InvHuberLoss`` clamps predictions at 0 (ReLU) and
averages over all pixels, invalid ones counting 0; here predictions are not clamped
(a ReLU would stop the gradient of a negative prediction) and the mean runs over
valid pixels only.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..models import TrainOutput
from ..models.ops import resize_to

__all__ = ["TrainLoss", "downsample_target"]

#: sum over the processes of a tensor (identity in one process), and the same for max
Reduce = Callable[[torch.Tensor], torch.Tensor]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def downsample_target(target: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Nearest-neighbour resize of an N x H x W target (labels or depth), dtype kept."""
    if tuple(target.shape[-2:]) == tuple(size):
        return target
    out = F.interpolate(target[:, None].float(), size=tuple(size), mode="nearest")[:, 0]
    return out.to(target.dtype)


class TrainLoss:
    """``loss(out, target)``: the scalar to back-propagate for one process's share of a batch.

    ``world`` processes; ``all_sum`` / ``all_max`` reduce a tensor over them (identity
    for one process).
    """

    def __init__(self, task: str, *, aux_weight: float = 0.0, ignore_index: int = 255,
                 depth_loss: str = "berhu", world: int = 1, all_sum: Reduce = _identity,
                 all_max: Reduce = _identity):
        if task not in ("segmentation", "depth"):
            raise ValueError(f"unknown task {task!r}: segmentation or depth")
        self.task, self.aux_weight, self.ignore_index = task, aux_weight, ignore_index
        self.depth_loss, self.world, self.all_sum, self.all_max = depth_loss, world, all_sum, all_max

    @property
    def uses_aux(self) -> bool:
        """Whether the auxiliary heads' outputs are read (if not, the model skips them)."""
        return self.aux_weight > 0

    def __call__(self, out: TrainOutput, target: torch.Tensor) -> torch.Tensor:
        target = downsample_target(target, out.logits.shape[-2:])
        heads = [(1.0, out.logits)] + ([(self.aux_weight, a) for a in out.aux_logits] if self.uses_aux else [])
        if self.task == "segmentation":
            valid = target != self.ignore_index
            labels = target.long()
            sums = [w * F.cross_entropy(resize_to(x, target.shape[-2:]).float(), labels,
                                        ignore_index=self.ignore_index, reduction="sum") for w, x in heads]
        else:
            valid = target > 0
            preds = [(w, resize_to(x, target.shape[-2:]).float()[:, 0][valid]) for w, x in heads]
            t = target.float()[valid]
            sums = [w * self._depth_sum(p, t) for w, p in preds]
        count = self.all_sum(valid.sum().to(torch.float32)).clamp_min(1.0)
        return torch.stack(sums).sum() * (self.world / count)

    def _depth_sum(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        err = (pred - target).abs()
        if self.depth_loss == "l1":
            return err.sum()
        local_max = err.detach().max() if err.numel() else err.new_zeros(())
        c = (0.2 * self.all_max(local_max)).clamp_min(1e-6)
        return torch.where(err <= c, err, (err * err + c * c) / (2 * c)).sum()
