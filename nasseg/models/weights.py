"""Weights: the authors' checkpoint layout, and the encoder's initial weights.

The authors' released checkpoints hold ``encoder.*`` and ``decoder.*`` keys
(optionally under a ``module.`` prefix from DataParallel). This project's
modules share that layout except two list names, translated here:

    ours                                   authors'
    ....nodes.<k>...  (cell nodes)         ...._ops.<k>...
    decoder.layers.<l>.<k>... (WACV)       decoder._ops.<l>.<k>...

Encoder initialisation (``proxy.encoder_weights``): torchvision's ImageNet
MobileNet-v2 (:func:`load_imagenet_encoder`), or a file (:func:`load_encoder_file`):
the authors' search encoder ``mbv2_voc_rflw.ckpt`` (a Light-Weight RefineNet
MobileNet-v2 trained on VOC), this encoder's own state dict, or torchvision's
layout. The authors' ``src/nn/encoders.py`` loads ``mbv2_voc_rflw.ckpt`` with
``strict=False`` into a MobileNet-v2 whose modules are ``layer1`` (the stem:
3x3 conv, BN, ReLU6) and ``layer2`` .. ``layer8`` (the seven inverted-residual
stages, blocks ``<k>.conv.{0,1,3,4,6,7}``: expand conv and BN, depthwise conv and
BN, project conv and BN), truncated after the last stage the space reads; keys
are matched by name, and the RefineNet decoder's (``conv3`` .. ``conv8``,
``crp1`` .. ``crp4``, ``conv_adapt2`` .. ``conv_adapt4``, ``segm``) and the
deeper stages' are ignored. :class:`~nasseg.models.encoder.MobileNetV2Encoder`
keeps those module names, so the mapping is the identity on the encoder's own
keys; unlike the original, every one of them must be in the file with its shape.
Every file is read with :func:`nasseg.serialization.safe_load`.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from ..errors import InputError
from ..serialization import safe_load
from .encoder import MOBILENET_V2_STAGES, MobileNetV2Encoder, imagenet_state_dict

_TO_ORIGINAL = [(re.compile(r"\.nodes\."), "._ops."), (re.compile(r"^decoder\.layers\."), "decoder._ops.")]
_FROM_ORIGINAL = [(re.compile(r"\._ops\.(?=.)"), ".nodes."), (re.compile(r"^decoder\.nodes\."), "decoder.layers.")]
_WRAPPER_KEYS = ("segmenter", "state_dict", "model", "net", "teacher")


class WeightsError(InputError, RuntimeError):
    """A checkpoint that does not match the model; the message lists the differences."""


class PretrainedWeightsUnavailable(InputError, RuntimeError):
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


def load_original_weights(model: nn.Module,
                          state_dict: Mapping[str, torch.Tensor] | str | os.PathLike) -> None:
    """Load a state dict in the authors' key layout into ``model``, strictly.

    ``state_dict`` is the dict or a file holding it (read with
    :func:`~nasseg.serialization.safe_load`). Accepts keys with or without a
    ``module.`` prefix, and a checkpoint dict wrapping the state dict under
    ``segmenter``, ``state_dict`` or ``model``. Every tensor must be used and
    every shape must match; otherwise a :class:`WeightsError` lists the missing,
    unexpected and mismatched keys (in the authors' naming).
    """
    if not isinstance(state_dict, Mapping):
        state_dict = safe_load(state_dict, "checkpoint")
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
        state = safe_load(path, "ImageNet MobileNet-v2 weights")
    else:
        from torchvision.models import MobileNet_V2_Weights
        cache = Path(torch.hub.get_dir()) / "checkpoints" / MOBILENET_V2_IMAGENET_FILE
        try:
            # torch.hub's loader defaults to weights_only=False: ask for the safe unpickler.
            state = MobileNet_V2_Weights.IMAGENET1K_V1.get_state_dict(progress=False, weights_only=True)
        except Exception as exc:  # URLError, HTTPError, SSL errors, timeouts...
            raise PretrainedWeightsUnavailable(
                f"could not download torchvision's ImageNet MobileNet-v2 weights ({exc}). "
                f"Copy {MOBILENET_V2_IMAGENET_FILE} to {cache} (or set TORCH_HOME), pass its path, "
                "or train from scratch (pretrained: false in params.yaml)") from exc
    mapped = imagenet_state_dict(state, encoder)
    encoder.load_state_dict(mapped, strict=True)


#: Top-level modules of the Light-Weight RefineNet decoder in ``mbv2_voc_rflw.ckpt``.
RFLW_DECODER_MODULES = ("conv3", "conv4", "conv5", "conv6", "conv7", "conv8", "crp1", "crp2", "crp3",
                        "crp4", "conv_adapt2", "conv_adapt3", "conv_adapt4", "segm")
_RFLW_ENCODER_MODULES = tuple(f"layer{k}" for k in range(1, len(MOBILENET_V2_STAGES) + 2))
RFLW_HINT = ("the authors' search encoder is data/weights/mbv2_voc_rflw.ckpt of DrSleep/nas-segm-pytorch "
             "(a Light-Weight RefineNet MobileNet-v2 trained on PASCAL VOC; see the README, "
             "'Encoder weights')")


def rflw_encoder_state(source: Mapping[str, torch.Tensor], encoder: MobileNetV2Encoder,
                       where: str) -> dict[str, torch.Tensor]:
    """The tensors of ``encoder`` from a state dict in the authors' ``mbv2_voc_rflw`` layout.

    Keys are the encoder's own (see the module docstring); the RefineNet decoder's
    and those of stages deeper than ``encoder`` keeps are ignored. Every encoder
    key must be present with its shape (``num_batches_tracked`` may be absent, as
    in files from torch 0.4.0); otherwise :class:`WeightsError` names ``where``
    and lists the missing, unknown and mis-shaped keys.
    """
    target = encoder.state_dict()
    used = {k: v for k, v in source.items()
            if k in target or k.split(".", 1)[0] not in _RFLW_ENCODER_MODULES + RFLW_DECODER_MODULES}
    header = (f"{where} does not hold a MobileNet-v2 encoder in the authors' layout "
              f"(layer1.*, layer2.0.conv.0.weight, ...); {RFLW_HINT}")
    if any(".output." in k for k in source):
        header += ("\n  its blocks are named <k>.output.<i>.<j> (Light-Weight RefineNet's MBv2), not "
                   "<k>.conv.<i> as the authors' search encoder reads them")
    check_state_dict(target, used, header, optional=lambda k: k.endswith("num_batches_tracked"))
    return {k: used.get(k, target[k]) for k in target}


def load_encoder_file(encoder: MobileNetV2Encoder, path: str | os.PathLike) -> None:
    """Initialise ``encoder`` from a file, strictly (``proxy.encoder_weights: FILE``).

    The file (read with :func:`~nasseg.serialization.safe_load`; a state dict,
    possibly wrapped and ``module.``-prefixed) is either in torchvision's
    MobileNet-v2 layout (``features.*``, mapped by :func:`imagenet_state_dict`)
    or in the authors' ``mbv2_voc_rflw`` layout, which is also this encoder's own
    state dict (:func:`rflw_encoder_state`).
    """
    path = Path(path)
    if not path.is_file():
        raise PretrainedWeightsUnavailable(f"{path}: encoder weights file not found; {RFLW_HINT}, "
                                           "or set proxy.encoder_weights: imagenet or none")
    source = strip_module_prefix(unwrap_state_dict(safe_load(path, "encoder weights file")))
    if any(k.startswith("features.") for k in source):
        mapped = imagenet_state_dict(dict(source), encoder)
        check_state_dict(encoder.state_dict(), mapped,
                         f"{path} does not match torchvision's MobileNet-v2 layout (features.*)")
    else:
        mapped = rflw_encoder_state(source, encoder, str(path))
    encoder.load_state_dict(mapped, strict=True)
