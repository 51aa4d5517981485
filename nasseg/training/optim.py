"""The encoder's and the decoder's optimisers, and their poly learning-rate decay.

As the authors' search (``src/utils/solvers.py`` / ``default_args.py`` of
DrSleep/nas-segm-pytorch) and Light-Weight RefineNet: two optimisers, one over the
encoder's parameters and one over the decoder's, each SGD (with momentum) or Adam
(``momentum`` is its beta1), with their own learning rate and weight decay (L2,
added to the gradient, as torch's SGD and Adam do). Both decay with the "poly"
schedule ``lr * (1 - step / steps) ** power`` over all ``steps`` of the run (power
0.9 by default), stepped once per training step.

Where we differ: the authors' search keeps each rate constant within its short
training; the poly schedule is the usual one of their full trainings' lineage
(DeepLab, Light-Weight RefineNet's later ``src_v2``). The optimisers use torch's
fused kernels where the device has them (CPU and CUDA in torch 2.14), else foreach.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from .config import TrainConfig

__all__ = ["make_optimiser", "make_optimisers", "poly_schedule"]


def make_optimiser(params: Iterable[nn.Parameter], kind: str, lr: float, momentum: float,
                   weight_decay: float) -> torch.optim.Optimizer:
    """SGD (momentum) or Adam (beta1 = momentum), fused when supported."""
    params = list(params)
    for impl in ({"fused": True}, {"foreach": True}):
        try:
            if kind == "sgd":
                return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, **impl)
            if kind == "adam":
                return torch.optim.Adam(params, lr=lr, betas=(momentum, 0.999), weight_decay=weight_decay,
                                        **impl)
        except RuntimeError:   # no fused kernel for these parameters' device / dtype
            continue
    raise ValueError(f"unknown optimiser {kind!r}: sgd or adam")


def _trained(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def make_optimisers(model: nn.Module, config: TrainConfig) -> dict[str, torch.optim.Optimizer]:
    """``{"encoder": ..., "decoder": ...}`` over ``model.encoder`` / ``model.decoder``'s
    trainable parameters."""
    return {
        "encoder": make_optimiser(_trained(model.encoder), config.enc_optim, config.enc_lr,
                                  config.enc_momentum, config.enc_weight_decay),
        "decoder": make_optimiser(_trained(model.decoder), config.dec_optim, config.dec_lr,
                                  config.dec_momentum, config.dec_weight_decay),
    }


class Poly:
    """The poly factor ``(1 - step / steps) ** power`` (a class, so LambdaLR saves it as data)."""

    def __init__(self, steps: int, power: float):
        self.steps, self.power = steps, power

    def __call__(self, step: int) -> float:
        return max(0.0, 1.0 - step / self.steps) ** self.power


def poly_schedule(optimiser: torch.optim.Optimizer, steps: int, power: float) -> LambdaLR:
    """Poly decay of ``optimiser``'s learning rates over ``steps`` steps."""
    return LambdaLR(optimiser, Poly(max(1, steps), power))
