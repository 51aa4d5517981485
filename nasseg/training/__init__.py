"""Full training of a found architecture (the authors released none).

    config = TrainConfig(epochs=10, batch_size=8, crop_size=256, ...)
    summary = run_training(config, genotype, "data/prepared/cityscapes", "runs/train/wacv/cityscapes",
                           state_dir="runs/train/.state/...")

Modules, one concern each: :mod:`.config` (the settings), :mod:`.data` (seeded data
order and augmentation), :mod:`.losses`, :mod:`.optim` (optimisers, poly decay),
:mod:`.distributed` (torchrun, DDP, BatchNorm across processes), :mod:`.checkpoint`
(the resumable state), :mod:`.report` (scores, metrics.tsv, metrics.json) and
:mod:`.trainer` (the loop). Importing this package loads only the config (no torch);
the rest loads on first use (PEP 562).
"""
from __future__ import annotations

from typing import Any

from .config import TrainConfig

__all__ = ["TrainConfig", "Trainer", "run_training", "OUTPUTS"]


def __getattr__(name: str) -> Any:
    if name in ("Trainer", "run_training", "OUTPUTS"):
        from . import trainer
        return getattr(trainer, name)
    raise AttributeError(f"module 'nasseg.training' has no attribute {name!r}")
