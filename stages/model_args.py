"""Command-line arguments that name a trained model, shared by evaluate, export and predict.

Kept out of stages/params.py, which every stage imports: the card of an authors'
checkpoint needs nasseg.prediction, and only the stages that load a model should
depend on it (the pipeline computes each stage's code dependencies from its imports).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .params import ParamsError

if TYPE_CHECKING:
    from nasseg.checkpoint import ModelCard


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Add `--checkpoint FILE` and, for an authors' checkpoint (weights only), `--genotype` and
    `--num-classes` (read with :func:`authors_card_of`)."""
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="model file of the train stage, or an authors' checkpoint with "
                             "--genotype and --num-classes")
    parser.add_argument("--genotype", default=None,
                        help="for an authors' checkpoint: a published name (wacv/arch0) or genotype JSON")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="for an authors' checkpoint: its output classes (1: NYUD depth)")


def authors_card_of(args: argparse.Namespace, **data: Any) -> ModelCard | None:
    """The model card that `--genotype` and `--num-classes` give (None without them); `data`:
    `meta=` or `dataset=` for class names and palette (nasseg.prediction.authors_card)."""
    if (args.genotype is None) != (args.num_classes is None):
        raise ParamsError("--genotype and --num-classes go together (for an authors' checkpoint)")
    if args.genotype is None:
        return None
    from nasseg.prediction import authors_card

    return authors_card(args.genotype, args.num_classes, **data)
