"""A trained model as one file: its description (the card) and its weights.

What: :class:`ModelCard` says everything needed to rebuild the network and to
read its output -- genotype, class count, decoder width, task, the dataset's
class names and palette -- and :func:`save_model` / :func:`load_model` write and
read ``{"format", "card", "state_dict"}`` as plain data (a dict, tensors, str,
numbers), so that :func:`nasseg.serialization.safe_load` reads it with
``weights_only=True`` like every other file. Training, evaluation, export,
prediction and the latency benchmark all take this file.

:func:`load_model` also takes the authors' released checkpoints (a bare state
dict in their key layout): then the card must be given (their files carry no
genotype), and the weights are loaded through
:func:`nasseg.models.weights.load_original_weights`.

Where we differ from the original: the authors saved bare state dicts (with a
numpy ``best_val`` beside them) and rebuilt the network from a genotype named
on the command line; a file of this pipeline carries its genotype, so a
checkpoint cannot be paired with the wrong network by mistake.
"""
from __future__ import annotations

import io
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from .io import atomic_write_bytes
from .serialization import CheckpointError, safe_load
from .spaces import space_of
from .spaces.base import Genotype, GenotypeError

__all__ = ["FORMAT", "ModelCard", "save_model", "load_model", "read_model_file"]

#: The ``format`` tag of a model file; bumped when its layout changes.
FORMAT = "nasseg-model/1"

Task = Literal["segmentation", "depth"]


@dataclass(frozen=True)
class ModelCard:
    """What a model file says about its network and its output.

    ``num_classes`` is 1 for depth (one output channel, metres). ``class_names``
    and ``palette`` come from the prepared dataset's ``meta.json`` and are used
    to colour predictions; ``ignore_index`` is the label value not scored.
    """
    genotype: Genotype
    num_classes: int
    agg_size: int = 64
    repeats: int = 2
    aux_cell: bool = False
    task: Task = "segmentation"
    dataset: str = ""
    class_names: tuple[str, ...] = ()
    palette: tuple[tuple[int, int, int], ...] = ()
    ignore_index: int = 255
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def space(self) -> str:
        return space_of(self.genotype).name

    def build(self) -> nn.Module:
        """The network this card describes, freshly initialised."""
        from .models.segmenter import build_segmenter
        return build_segmenter(self.genotype, self.num_classes, agg_size=self.agg_size,
                               repeats=self.repeats, aux_cell=self.aux_cell)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["genotype"] = self.genotype.to_dict()
        d["class_names"] = list(self.class_names)
        d["palette"] = [list(c) for c in self.palette]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelCard:
        from .genotypes import genotype_from_dict
        d = dict(d)
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown model card keys: {sorted(unknown)}")
        d["genotype"] = genotype_from_dict(d["genotype"])
        d["class_names"] = tuple(d.get("class_names", ()))
        d["palette"] = tuple(tuple(int(v) for v in c) for c in d.get("palette", ()))
        return cls(**d)


def save_model(path: str | os.PathLike, card: ModelCard, model: nn.Module,
               **extra: Any) -> None:
    """Write ``model``'s weights with its card to ``path`` atomically.

    ``extra`` holds further plain data (e.g. ``metrics``, ``epoch``) stored beside
    them. DistributedDataParallel / compiled wrappers are unwrapped.
    """
    model = getattr(model, "module", model)
    model = getattr(model, "_orig_mod", model)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "card": card.to_dict(), "state_dict": state, **extra}, buf)
    atomic_write_bytes(path, buf.getvalue())


def read_model_file(path: str | os.PathLike) -> dict[str, Any]:
    """The raw contents of a model file (safe load), its format checked."""
    data = safe_load(path, "model checkpoint")
    if not isinstance(data, Mapping) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
        raise CheckpointError(
            f"{path}: not a model file of this pipeline (format {found!r}, expected {FORMAT!r}). "
            "A checkpoint of the authors' is read with its card given: "
            "load_model(path, card=ModelCard(genotype, num_classes, ...)), or on the command "
            "line with --genotype and --num-classes")
    return dict(data)


def load_model(path: str | os.PathLike, card: ModelCard | None = None,
               *, expect_space: str | None = None,
               expect_classes: int | None = None) -> tuple[nn.Module, ModelCard]:
    """Rebuild and load the network stored at ``path``; returns ``(model, card)``.

    A file of this pipeline carries its own card (``card`` must then be None or
    equal to it). An authors' checkpoint needs ``card``. ``expect_space`` /
    ``expect_classes`` check the file against what the caller needs, with an
    error naming the file. The model is returned in eval mode on the CPU.
    """
    from .models.weights import WeightsError, load_original_weights

    path = Path(path)
    raw = safe_load(path, "model checkpoint")
    ours = isinstance(raw, Mapping) and raw.get("format") == FORMAT
    if ours:
        try:
            stored = ModelCard.from_dict(raw["card"])
        except (KeyError, TypeError, ValueError, GenotypeError) as exc:
            raise CheckpointError(f"{path}: its model card is unreadable ({exc})") from exc
        if card is not None and card != stored:
            raise CheckpointError(f"{path}: holds its own model card, which differs from the one given; "
                                  "leave out --genotype / --num-classes for a file of this pipeline")
        card = stored
    elif card is None:
        raise CheckpointError(
            f"{path}: not a model file of this pipeline (no {FORMAT!r} format tag); if it is one "
            "of the authors' checkpoints, give its genotype and class count (--genotype NAME "
            "--num-classes N, or card=ModelCard(...))")
    if expect_space is not None and card.space != expect_space:
        raise CheckpointError(f"{path}: holds a {card.space} model, expected one of the {expect_space} space")
    if expect_classes is not None and card.num_classes != expect_classes:
        raise CheckpointError(f"{path}: its model has {card.num_classes} output classes, the data has "
                              f"{expect_classes}; was it trained on another dataset?")
    model = card.build()
    try:
        if ours:
            from .models.weights import check_state_dict
            check_state_dict(model.state_dict(), raw["state_dict"],
                             "model file does not match its own card", name=str)
            model.load_state_dict(raw["state_dict"], strict=True)
        else:
            load_original_weights(model, raw)
    except WeightsError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    return model.eval(), card
