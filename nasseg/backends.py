"""Inference backends of the latency benchmark: one signature, looked up by name.

What: every backend is a function ``prepare(model, example, ctx) -> Predictor``.
``model`` is a *deployable* network (:func:`nasseg.export.deployable`: eval mode,
BatchNorm folded into the convolutions, the auxiliary heads and the decoder's
unread ``adapt`` convolutions removed); ``example`` an input batch of the size
that will be timed; the returned predictor maps an NCHW float32 batch to the
network's output (logits or depth at decoder resolution), as a torch tensor.
:data:`BACKENDS` names them:

========================  =================================================================
``eager``                 PyTorch eager, NCHW (the deployable network as it is)
``channels_last``         PyTorch eager with weights and input in channels-last (NHWC) memory
``compile``               ``torch.compile`` (Inductor) with freezing: weights become constants,
                          so convolutions are pre-packed and fused with their activations
``onnxruntime``           the ONNX export of :mod:`nasseg.export` in ONNX Runtime, every graph
                          optimisation on (on CPUs: the blocked NCHWc layout)
``openvino``              the same ONNX export compiled by OpenVINO for the input size, float32
                          arithmetic kept (``INFERENCE_PRECISION_HINT: f32``: on CPUs with bf16
                          units OpenVINO would otherwise compute in bf16)
``int8``                  ONNX Runtime static quantisation of that export (QDQ, int8 weights per
                          output channel, uint8 activations), calibrated on real images, run in
                          ONNX Runtime
``int8_openvino``         the same quantised file run by OpenVINO (its int8 kernels)
========================  =================================================================

Why a registry: the benchmark (:mod:`nasseg.benchmarking`) checks each backend's
outputs against ``eager`` before timing it and records a backend that fails with
its reason, without knowing any backend's details. Which one is fastest depends on
the processor (on one AVX2 machine channels-last was slower than NCHW for the CVPR
decoder, on another faster), so none is chosen here: they are all measured.

The ONNX files (one export per network, shared by ``onnxruntime`` and ``int8``)
are written into :attr:`BackendContext.workdir`. The authors released no
inference backends; their latency figures are PyTorch eager on a GTX 1080Ti.
"""
from __future__ import annotations

import contextlib
import copy
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["Predictor", "BackendContext", "BackendUnavailable", "BACKENDS", "backend", "onnx_session"]

#: Maps an NCHW float32 batch to the network's output.
Predictor = Callable[[torch.Tensor], torch.Tensor]


class BackendUnavailable(RuntimeError):
    """The backend cannot run here (a missing package, provider or compiler); the message says which."""


@dataclass
class BackendContext:
    """What the backends share for one network.

    ``threads``: intra-op threads (PyTorch's are set by the caller; ONNX Runtime's
    here); ``workdir``: where the ONNX files go; ``calibration``: input batches for
    int8 calibration (real images: random ones calibrate the activation ranges to
    noise); ``device``: ``cpu`` or ``cuda[:n]``; ``name``: a file-name-safe label
    of the network (its ONNX files are named after it).
    """
    threads: int
    workdir: Path
    calibration: Sequence[torch.Tensor] = ()
    device: str = "cpu"
    name: str = "model"
    _files: dict[str, Path] = field(default_factory=dict, repr=False)

    def onnx_file(self, model: nn.Module) -> Path:
        """The network's ONNX export (written once)."""
        if "fp32" not in self._files:
            from .export import export_onnx

            path = self.workdir / f"{self.name}.onnx"
            export_onnx(model, path)
            self._files["fp32"] = path
        return self._files["fp32"]

    def int8_file(self, model: nn.Module) -> Path:
        """The statically quantised ONNX network (calibrated once, on :attr:`calibration`)."""
        if "int8" not in self._files:
            self._files["int8"] = _quantize(self.onnx_file(model), self.workdir / f"{self.name}.int8.onnx",
                                            self.calibration)
        return self._files["int8"]


def _eager(model: nn.Module, example: torch.Tensor, ctx: BackendContext) -> Predictor:
    return model


def _channels_last(model: nn.Module, example: torch.Tensor, ctx: BackendContext) -> Predictor:
    model = copy.deepcopy(model).to(memory_format=torch.channels_last)   # .to() converts in place

    def run(x: torch.Tensor) -> torch.Tensor:
        return model(x.contiguous(memory_format=torch.channels_last))
    return run


def _compile(model: nn.Module, example: torch.Tensor, ctx: BackendContext) -> Predictor:
    import torch._inductor.config as inductor_config

    compiled = torch.compile(model, dynamic=False)
    # Freezing applies when the graph is compiled, i.e. at the first call: make it here.
    try:
        with inductor_config.patch(freezing=True), torch.inference_mode():
            compiled(example)
    except Exception as exc:   # a missing C++ compiler, an unsupported op: the message says which
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise BackendUnavailable(f"torch.compile failed: {type(exc).__name__}: {first}") from exc
    return compiled


def onnx_session(path: Path, ctx: BackendContext) -> Any:
    """An ONNX Runtime session of ``path`` with every graph optimisation, ``ctx.threads``
    intra-op threads, on ``ctx.device`` (CUDA needs the onnxruntime-gpu package)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = ctx.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    if torch.device(ctx.device).type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BackendUnavailable("ONNX Runtime here has no CUDAExecutionProvider (install onnxruntime-gpu "
                                     "in place of onnxruntime to time ONNX Runtime on a GPU)")
        index = torch.device(ctx.device).index or 0
        providers: list[Any] = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    else:
        providers = ["CPUExecutionProvider"]
    return ort.InferenceSession(str(path), options, providers=providers)


def _session_predictor(path: Path, ctx: BackendContext) -> Predictor:
    session = onnx_session(path, ctx)
    name = session.get_inputs()[0].name
    on_cuda = torch.device(ctx.device).type == "cuda"

    def run(x: torch.Tensor) -> torch.Tensor:
        # CUDA: the copies in and out are part of the latency, as for a caller holding CPU arrays
        (out,) = session.run(None, {name: x.detach().cpu().numpy()})
        result = torch.from_numpy(out)
        return result.to(ctx.device) if on_cuda else result
    return run


def _onnxruntime(model: nn.Module, example: torch.Tensor, ctx: BackendContext) -> Predictor:
    return _session_predictor(ctx.onnx_file(model), ctx)


def _openvino_predictor(path: Path, example: torch.Tensor, ctx: BackendContext) -> Predictor:
    """The ONNX file ``path`` compiled by OpenVINO for the CPU at ``example``'s shape, float32
    kept where the file computes in float32 (a QDQ file's int8 parts run in int8)."""
    if torch.device(ctx.device).type == "cuda":
        raise BackendUnavailable("the OpenVINO backends are timed on the CPU only (OpenVINO has no CUDA device)")
    try:
        import openvino as ov
    except ImportError as exc:
        raise BackendUnavailable("the openvino package is not installed (pip install openvino)") from exc
    core = ov.Core()
    network = core.read_model(str(path))
    network.reshape([int(d) for d in example.shape])      # compiled for the timed size
    compiled = core.compile_model(network, "CPU", {"INFERENCE_NUM_THREADS": ctx.threads,
                                                   "PERFORMANCE_HINT": "LATENCY",
                                                   "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()

    def run(x: torch.Tensor) -> torch.Tensor:
        out = request.infer({0: x.detach().cpu().numpy()})[0]
        return torch.from_numpy(out.copy())       # the request reuses its output buffer
    return run


def _openvino(model: nn.Module, example: torch.Tensor, ctx: BackendContext) -> Predictor:
    return _openvino_predictor(ctx.onnx_file(model), example, ctx)


def _int8_openvino(model: nn.Module, example: torch.Tensor, ctx: BackendContext) -> Predictor:
    return _openvino_predictor(ctx.int8_file(model), example, ctx)


def _int8(model: nn.Module, example: torch.Tensor, ctx: BackendContext) -> Predictor:
    if torch.device(ctx.device).type == "cuda":
        raise BackendUnavailable("int8 is timed on the CPU only (ONNX Runtime's CUDA provider runs "
                                 "QDQ graphs through TensorRT, which is not set up here)")
    return _session_predictor(ctx.int8_file(model), ctx)


def _quantize(source: Path, target: Path, calibration: Sequence[torch.Tensor]) -> Path:
    """Static int8 quantisation of the ONNX file ``source`` into ``target`` (atomically)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    if not calibration:
        raise BackendUnavailable("int8 needs calibration images (real ones: the activation ranges are "
                                 "measured on them); give the benchmark a prepared dataset")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches: Iterator[torch.Tensor] = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {"image": batch.detach().cpu().numpy().astype(np.float32)}

    source, target = Path(source).resolve(), Path(target).resolve()
    partial = target.with_name(target.name + ".partial")
    # quantize_static writes its shape-inference scratch files into the working directory:
    # run it in a temporary one, so that nothing lands beside the user's files
    with tempfile.TemporaryDirectory(prefix="nasseg-quant-") as scratch, _working_directory(scratch):
        quantize_static(str(source), str(partial), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    partial.replace(target)
    return target


@contextlib.contextmanager
def _working_directory(path: str | Path) -> Iterator[None]:
    """The process's working directory set to ``path`` for the duration (contextlib.chdir, 3.11+)."""
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


#: name -> prepare(model, example, ctx) -> Predictor; the benchmark's ``backends`` choose from these.
BACKENDS: dict[str, Callable[[nn.Module, torch.Tensor, BackendContext], Predictor]] = {
    "eager": _eager,
    "channels_last": _channels_last,
    "compile": _compile,
    "onnxruntime": _onnxruntime,
    "openvino": _openvino,
    "int8": _int8,
    "int8_openvino": _int8_openvino,
}

#: The int8 backends, each with the float32 backend running the same runtime (int8's accuracy
#: change is measured against it); their arithmetic is not float32's, so they are checked
#: against eager with the int8 tolerance.
INT8_BASELINE = {"int8": "onnxruntime", "int8_openvino": "openvino"}
LOW_PRECISION = frozenset(INT8_BASELINE)


def backend(name: str) -> Callable[[nn.Module, torch.Tensor, BackendContext], Predictor]:
    """The backend called ``name``; a ValueError lists the known ones."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}") from None


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """PyTorch's intra-op threads set to ``n`` for the duration."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
