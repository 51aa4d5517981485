"""A deployable copy of a trained model, and its export to ONNX.

What:

* :func:`fold_batchnorm` folds every eval-mode BatchNorm into the convolution
  right before it (``torch.nn.utils.fusion.fuse_conv_bn_eval``; the BatchNorm is
  replaced by an identity). A BatchNorm with no convolution right before it --
  in these networks only the one that opens the ``cat`` aggregation of the WACV
  templates (BN -> ReLU -> 1x1 conv on a concatenation) -- cannot be folded into
  a convolution; it becomes a :class:`ChannelAffine` (``x * scale + shift``, the
  same arithmetic), and the returned :class:`FoldReport` names it. No BatchNorm
  module is left either way. The latency benchmark reuses this function.
* :func:`remove_dead_branches` drops what an eval-mode forward never runs: the
  CVPR auxiliary heads (``aux_clfs``, used only by the training loss) and the 1x1
  ``adapt`` convolutions of encoder outputs that no decoder block reads.
* :func:`deployable` = both, on a copy in eval mode (the original is untouched).
* :func:`export_onnx` writes the deployable copy as ONNX with a dynamic batch,
  height and width, and the model card as metadata (``nasseg_card``);
  :func:`check_onnx` runs the file in ONNX Runtime at given input sizes and
  compares with the PyTorch model, raising :class:`ExportError` with the largest
  difference when it exceeds the tolerance.

The exporter: ``torch.onnx.export(..., dynamo=True)`` (torch.export, the default
and recommended exporter since torch 2.9; it needs the ``onnxscript`` package).
The TorchScript exporter (``dynamo=False``) is deprecated, and a trace bakes the
shape comparisons of the decoders (``match_sizes``, ``collected_parts``) into
the graph without checking them. Both exporters fix those branches at the sample
size; they do not depend on the input size for inputs of at least 32x32
(strided layers all round up), and :func:`check_onnx` at sizes other than the
sample size is the check.

The ONNX output is the model's: logits (or depth) at decoder resolution, stride 4
or 8 of the input; upsample them to the image size as
:func:`nasseg.evaluation.predict` does. The authors released no export code.
"""
from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .config import MIN_SIDE, parse_size
from .errors import InputError
from .io import atomic_write_bytes

if TYPE_CHECKING:
    from .checkpoint import ModelCard

__all__ = ["ExportError", "ChannelAffine", "FoldReport", "fold_batchnorm", "remove_dead_branches",
           "deployable", "export_onnx", "check_onnx", "export_summary", "parse_size", "DEFAULT_OPSET",
           "INPUT_NAME", "OUTPUT_NAME"]

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class ExportError(InputError, RuntimeError):
    """A model that cannot be folded or exported, or an ONNX file that disagrees with PyTorch."""


class ChannelAffine(nn.Module):
    """``x * scale + shift`` per channel (dim 1): an eval-mode BatchNorm that had no
    convolution before it to fold into."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.detach().clone())
        self.register_buffer("shift", shift.detach().clone())

    @classmethod
    def from_batchnorm(cls, bn: nn.modules.batchnorm._BatchNorm) -> ChannelAffine:
        _require_running_stats(bn, "")
        scale = torch.rsqrt(bn.running_var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight
        shift = -bn.running_mean * scale
        if bn.bias is not None:
            shift = shift + bn.bias
        return cls(scale, shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.scale.view(shape) + self.shift.view(shape)


@dataclass(frozen=True)
class FoldReport:
    """What :func:`fold_batchnorm` / :func:`deployable` did, by module name.

    ``folded``: BatchNorms folded into the convolution before them;
    ``affine``: BatchNorms with no convolution before them, now a :class:`ChannelAffine`;
    ``removed``: modules an eval-mode forward never runs, replaced by identities.
    """
    folded: tuple[str, ...] = ()
    affine: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    @property
    def all_folded(self) -> bool:
        """Whether every BatchNorm went into a convolution."""
        return not self.affine

    def summary(self) -> str:
        text = f"{len(self.folded)} BatchNorm layers folded into their convolutions"
        if self.affine:
            text += (f"; {len(self.affine)} with no convolution before them became per-channel "
                     f"scale/shift: {', '.join(self.affine)}")
        if self.removed:
            text += f"; removed {len(self.removed)} modules never run in eval mode"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"folded": len(self.folded), "affine": list(self.affine), "removed": list(self.removed),
                "all_folded": self.all_folded}


def _require_running_stats(bn: nn.Module, name: str) -> None:
    if getattr(bn, "running_mean", None) is None or getattr(bn, "running_var", None) is None:
        raise ExportError(f"BatchNorm {name or bn!r} keeps no running statistics "
                          "(track_running_stats=False); it cannot be folded")


def _set_child(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def fold_batchnorm(model: nn.Module, *, inplace: bool = False) -> tuple[nn.Module, FoldReport]:
    """Fold every BatchNorm of ``model`` (put in eval mode) into the convolution before it.

    "Before it" means the previous module of the same ``nn.Sequential``, a
    convolution with as many output channels; that is how every convolution of
    these networks is followed by its BatchNorm. Any other BatchNorm becomes a
    :class:`ChannelAffine`, named in the report's ``affine``. Returns the model
    (a copy unless ``inplace``) in eval mode, and the report; in eval mode its
    outputs equal the original's up to float rounding.
    """
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    folded: list[str] = []
    for seq_name, seq in list(model.named_modules()):
        if not isinstance(seq, nn.Sequential):
            continue
        keys = list(seq._modules)
        for prev_key, key in zip(keys, keys[1:]):
            conv, bn = seq._modules[prev_key], seq._modules[key]
            if (isinstance(bn, _BATCHNORMS) and isinstance(conv, nn.modules.conv._ConvNd)
                    and not isinstance(conv, nn.modules.conv._ConvTransposeNd)
                    and conv.out_channels == bn.num_features):
                name = f"{seq_name}.{key}" if seq_name else key
                _require_running_stats(bn, name)
                seq._modules[prev_key] = fuse_conv_bn_eval(conv, bn)
                seq._modules[key] = nn.Identity()
                folded.append(name)
    affine = []
    for name, module in list(model.named_modules()):
        if isinstance(module, _BATCHNORMS):
            _require_running_stats(module, name)
            _set_child(model, name, ChannelAffine.from_batchnorm(module))
            affine.append(name)
    if affine:
        log.info("BatchNorm with no convolution before it (per-channel scale/shift instead): %s",
                 ", ".join(affine))
    return model.eval(), FoldReport(tuple(folded), tuple(affine))


def remove_dead_branches(model: nn.Module) -> tuple[str, ...]:
    """Replace, in place, the modules an eval-mode forward of a segmenter never runs by
    identities; return their names.

    The CVPR decoder's auxiliary heads (``aux_clfs``: they feed the training loss
    only) and its ``adapt`` convolutions of encoder outputs that no block reads.
    The WACV decoder has neither.
    """
    decoder = getattr(model, "decoder", None)
    removed: list[str] = []
    if decoder is None:
        return ()
    heads = getattr(decoder, "aux_clfs", None)
    if isinstance(heads, nn.ModuleList):
        for i, head in enumerate(heads):
            if not isinstance(head, nn.Identity):
                heads[i] = nn.Identity()   # keeps the list's length: forward zips over it
                removed.append(f"decoder.aux_clfs.{i}")
    read = getattr(decoder, "read_inputs", None)
    if read is not None:
        k = 1
        while hasattr(decoder, f"adapt{k}"):
            if k - 1 not in read and not isinstance(getattr(decoder, f"adapt{k}"), nn.Identity):
                setattr(decoder, f"adapt{k}", nn.Identity())
                removed.append(f"decoder.adapt{k}")
            k += 1
    return tuple(removed)


def deployable(model: nn.Module) -> tuple[nn.Module, FoldReport]:
    """A copy of ``model`` for inference: eval mode, dead branches removed, BatchNorm folded."""
    model = copy.deepcopy(getattr(model, "_orig_mod", getattr(model, "module", model))).eval()
    removed = remove_dead_branches(model)
    model, report = fold_batchnorm(model, inplace=True)
    model.eval()   # the identities and affines put in place of BatchNorms were made in train mode
    for p in model.parameters():
        p.requires_grad_(False)
    return model, FoldReport(report.folded, report.affine, removed)


def export_onnx(model: nn.Module, path: str | os.PathLike, *, card: ModelCard | None = None,
                sample_size: tuple[int, int] = (256, 512), opset: int = DEFAULT_OPSET,
                ) -> FoldReport:
    """Write :func:`deployable` of ``model`` to ``path`` as ONNX (atomically).

    The input ``image`` (N x 3 x H x W, normalised as for evaluation) has a dynamic
    batch, height and width; the output ``logits`` is at decoder resolution.
    ``card`` is stored as JSON in the metadata under ``nasseg_card``.
    """
    import importlib.util

    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"ONNX export needs the {' and '.join(missing)} package(s), which the "
                          "exporter (torch.onnx.export with dynamo=True) imports; install the "
                          "project's dependencies (pip install -e .)")
    from torch.export import Dim

    deployed, report = deployable(model)
    h, w = sample_size
    x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(0))
    dims = {0: Dim("batch", min=1, max=1024), 2: Dim("height", min=MIN_SIDE, max=16384),
            3: Dim("width", min=MIN_SIDE, max=16384)}
    try:
        program = torch.onnx.export(deployed, (x,), dynamo=True, dynamic_shapes=({**dims},),
                                    input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                    opset_version=opset, verbose=False)
    except Exception as exc:   # the exporter raises many types; name the model and size
        raise ExportError(f"{path}: torch.onnx.export failed for the {sample_size[0]}x{sample_size[1]} "
                          f"sample input: {type(exc).__name__}: {str(exc).strip().splitlines()[0]}") from exc
    proto = program.model_proto
    meta = {"nasseg_fold": json.dumps(report.to_dict())}
    if card is not None:
        meta["nasseg_card"] = json.dumps(card.to_dict())
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    atomic_write_bytes(path, proto.SerializeToString())
    log.info("wrote %s (opset %d): %s", path, opset, report.summary())
    return report


def check_onnx(path: str | os.PathLike, model: nn.Module, sizes: Iterable[tuple[int, int]], *,
               batch: int = 1, atol: float = 1e-4, rtol: float = 1e-4, seed: int = 0,
               ) -> dict[str, float]:
    """Run the ONNX file in ONNX Runtime (CPU) on random inputs of each ``(height, width)``
    and compare with ``model`` (PyTorch, eval mode).

    Returns the largest absolute difference per size (``"HxW"``). Raises
    :class:`ExportError` naming the file, the size and the difference when the
    outputs' shapes differ or the difference exceeds ``atol + rtol * max|output|``.
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ONNX file not found")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(f"{path}: ONNX Runtime cannot load this file ({exc})") from exc
    input_name = session.get_inputs()[0].name
    model = model.eval()
    gen = torch.Generator().manual_seed(seed)
    diffs: dict[str, float] = {}
    for h, w in sizes:
        x = torch.randn(batch, 3, h, w, generator=gen)
        with torch.no_grad():
            ref = model(x)
        ref = (ref[0] if isinstance(ref, tuple) else ref).float()
        try:
            (out,) = session.run(None, {input_name: x.numpy()})
        except Exception as exc:
            raise ExportError(f"{path}: ONNX Runtime failed on a {batch}x3x{h}x{w} input ({exc})") from exc
        got = torch.from_numpy(out)
        if got.shape != ref.shape:
            raise ExportError(f"{path}: at input {h}x{w} ONNX Runtime gives shape {tuple(got.shape)}, "
                              f"PyTorch {tuple(ref.shape)}")
        diff = float((got - ref).abs().max())
        tol = atol + rtol * float(ref.abs().max())
        diffs[f"{h}x{w}"] = diff
        if not diff <= tol:   # also catches NaN
            raise ExportError(f"{path}: at input {h}x{w} ONNX Runtime differs from PyTorch by up to "
                              f"{diff:.3g} (max |difference|), above the tolerance {tol:.3g} "
                              f"(atol {atol:g} + rtol {rtol:g} x max|output| {float(ref.abs().max()):.3g})")
        log.info("ONNX check %dx%d: max |difference| %.3g (tolerance %.3g)", h, w, diff, tol)
    return diffs


def export_summary(report: FoldReport, diffs: dict[str, float], **info: Any) -> dict[str, Any]:
    """Plain data of an export (for the stage's JSON report)."""
    return {**info, "input": {"name": INPUT_NAME, "shape": ["batch", 3, "height", "width"]},
            "output": {"name": OUTPUT_NAME, "shape": ["batch", "classes", "height/stride", "width/stride"]},
            "batchnorm": report.to_dict(), "check_max_abs_diff": diffs}

