"""Weights: the authors' checkpoint layout, and ImageNet encoder initialisation.

The authors' released checkpoints hold ``encoder.*`` and ``decoder.*`` keys
(optionally under a ``module.`` prefix from DataParallel). This project's
modules share that layout except two list names, translated here:

    ours                                   authors'
    ....nodes.<k>...  (cell nodes)         ...._ops.<k>...
    decoder.layers.<l>.<k>... (WACV)       decoder._ops.<l>.<k>...
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from .encoder import MobileNetV2Encoder, imagenet_state_dict

_TO_ORIGINAL = [(re.compile(r"\.nodes\."), "._ops."), (re.compile(r"^decoder\.layers\."), "decoder._ops.")]
_FROM_ORIGINAL = [(re.compile(r"\._ops\.(?=.)"), ".nodes."), (re.compile(r"^decoder\.nodes\."), "decoder.layers.")]
_WRAPPER_KEYS = ("segmenter", "state_dict", "model", "net", "teacher")


class WeightsError(RuntimeError):
    """A checkpoint that does not match the model; the message lists the differences."""


class PretrainedWeightsUnavailable(RuntimeError):
    """Pretrained weights could not be found locally nor downloaded."""


def to_original_key(key: str) -> str:
    for pattern, repl in _TO_ORIGINAL:
        key = pattern.sub(repl, key)
    return key


def from_original_key(key: str) -> str:
    # `decoder._ops.` (WACV layers) first becomes `decoder.nodes.`, then `decoder.layers.`.
    for pattern, repl in _FROM_ORIGINAL:
        key = pattern.sub(repl, key)
    return key


def unwrap_state_dict(state: Mapping) -> Mapping[str, torch.Tensor]:
    """The state dict itself, or the one a checkpoint dict wraps (``segmenter``, ``state_dict``, ...)."""
    if any(isinstance(v, torch.Tensor) for v in state.values()):
        return state
    for key in _WRAPPER_KEYS:
        if isinstance(state.get(key), Mapping):
            return unwrap_state_dict(state[key])
    return state


def strip_module_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop DataParallel's ``module.`` prefix where present."""
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def _summary(keys: list[str], limit: int = 20) -> str:
    shown = "\n    ".join(keys[:limit])
    more = f"\n    ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"\n    {shown}{more}"


def check_state_dict(target: Mapping[str, torch.Tensor], source: Mapping[str, torch.Tensor], header: str,
                     *, name: Callable[[str], str] = lambda k: k,
                     optional: Callable[[str], bool] = lambda k: False) -> None:
    """Raise :class:`WeightsError` listing missing, unused and mis-shaped keys (shown via ``name``)."""
    missing = [name(k) for k in target if k not in source and not optional(k)]
    unexpected = [name(k) for k in source if k not in target]
    mismatched = [f"{name(k)}: checkpoint {tuple(v.shape)} vs model {tuple(target[k].shape)}"
                  for k, v in source.items() if k in target and tuple(v.shape) != tuple(target[k].shape)]
    if missing or unexpected or mismatched:
        parts = [header]
        if missing:
            parts.append(f"  missing from the checkpoint ({len(missing)}):{_summary(missing)}")
        if unexpected:
            parts.append(f"  not used by the model ({len(unexpected)}):{_summary(unexpected)}")
        if mismatched:
            parts.append(f"  shape mismatch ({len(mismatched)}):{_summary(mismatched)}")
        raise WeightsError("\n".join(parts))


def load_original_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load a state dict in the authors' key layout into ``model``, strictly.

    Accepts keys with or without a ``module.`` prefix, and a checkpoint dict
    wrapping the state dict under ``segmenter``, ``state_dict`` or ``model``.
    Every tensor must be used and every shape must match; otherwise a
    :class:`WeightsError` lists the missing, unexpected and mismatched keys
    (in the authors' naming).
    """
    source = strip_module_prefix(unwrap_state_dict(state_dict))
    mapped = {from_original_key(k): v for k, v in source.items()}
    check_state_dict(model.state_dict(), mapped,
                     "checkpoint does not match the model (was it built from the same genotype, "
                     "num_classes, agg_size, repeats and aux_cell?)", name=to_original_key)
    model.load_state_dict(mapped, strict=True)


def export_original_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict in the authors' key layout (inverse of loading)."""
    return {to_original_key(k): v.detach().clone() for k, v in model.state_dict().items()}


MOBILENET_V2_IMAGENET_FILE = "mobilenet_v2-b0353104.pth"


def load_imagenet_encoder(encoder: MobileNetV2Encoder, path: str | os.PathLike | None = None) -> None:
    """Initialise ``encoder`` from torchvision's ImageNet MobileNet-v2 weights.

    ``path`` is a local copy of torchvision's ``mobilenet_v2`` IMAGENET1K_V1
    file; without it the file is taken from torch's hub cache, or downloaded.
    Offline with no cached copy this raises :class:`PretrainedWeightsUnavailable`
    saying where to put the file.
    """
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise PretrainedWeightsUnavailable(f"{path}: ImageNet weights file not found")
        state = torch.load(path, map_location="cpu", weights_only=True)
    else:
        from torchvision.models import MobileNet_V2_Weights
        cache = Path(torch.hub.get_dir()) / "checkpoints" / MOBILENET_V2_IMAGENET_FILE
        try:
            state = MobileNet_V2_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
        except Exception as exc:  # URLError, HTTPError, SSL errors, timeouts...
            raise PretrainedWeightsUnavailable(
                f"could not download torchvision's ImageNet MobileNet-v2 weights ({exc}). "
                f"Copy {MOBILENET_V2_IMAGENET_FILE} to {cache} (or set TORCH_HOME), pass its path, "
                "or train from scratch (pretrained: false in params.yaml)") from exc
    mapped = imagenet_state_dict(state, encoder)
    encoder.load_state_dict(mapped, strict=True)
