"""Polyak averaging of the weights trained in one proxy stage.

As the original (``init_polyak`` / ``apply_polyak`` in ``src/helpers/utils.py`` and
the update at the end of every step of ``train_task0`` / ``train_segmenter`` in
``src/engine/trainer.py`` of DrSleep/nas-segm-pytorch): the average starts from the
weights at the start of the stage, is updated after every optimiser step
(``avg = decay * avg + (1 - decay) * w``) and is written back into the network after
every epoch, so that the next epoch trains on from the average. Stage 1 averages the
decoder, stage 2 the whole network.

Where we differ: only trainable parameters are averaged (in the original every
parameter is, and all of them train), with fused ``torch._foreach`` operations
instead of a Python loop over tensors.
"""
from __future__ import annotations

import torch
from torch import nn


class Polyak:
    """Exponential moving average of a module's trainable parameters, copied back on demand."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.average = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        """Fold the current weights into the average (after an optimiser step)."""
        torch._foreach_mul_(self.average, self.decay)
        torch._foreach_add_(self.average, [p.detach() for p in self.params], alpha=1.0 - self.decay)

    @torch.no_grad()
    def write_back(self) -> None:
        """Replace the module's weights by the average (after an epoch)."""
        torch._foreach_copy_(self.params, self.average)
