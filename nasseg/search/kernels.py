"""Kernel options chosen by measuring on the machine at hand, and cached.

Whether NHWC (``channels_last``) or NCHW activations train faster depends on the
processor (which oneDNN kernels its vector extensions allow) and on the network:
on a 2-core AMD EPYC with AVX2 only, NCHW beat channels_last for the CVPR decoder
(81 s against 105 s per architecture), while on an earlier machine channels_last
was 1.7x faster than NCHW for the WACV one. A fixed default is therefore wrong
somewhere. With ``proxy.channels_last: auto`` (the default) :func:`choose` times a
training step of the space's first published network in each format, at the
proxy's own stage-1 and stage-2 crop sizes (two images a step), interleaved, and
keeps the fastest. The answer is cached per machine (processor model, vector
extensions and any limit on them, torch version, threads, device) and setting in
``$XDG_CACHE_HOME/nasseg/kernels.json`` (default ``~/.cache``), so the one-off cost
(seconds) is paid once; delete that file to measure again. ``true`` / ``false``
force a format, with the plain kernels, without measuring.

So is, for each depthwise convolution, which implementation runs it
(:class:`nasseg.models.ops.DepthwiseConv2d`): torch's own kernel (oneDNN), the same
sums as an undilated kernel on space-to-batch sub-grids (dilated ones), or this
project's loops over NHWC float32 maps (:mod:`nasseg.models.depthwise`). oneDNN's
dilated depthwise kernels are slow, most of all backward and in NHWC, and so are its
kernels on small maps; the sub-grids are slow on small maps too (a 5x5 kernel at
dilation 6 on 16x48x8x8 is 36 sub-grids of 2x2); and oneDNN is the fastest on others
(undilated 3x3 on 16x48x64x64). Which wins depends on the input's shape and the
processor, so :class:`DepthwiseChooser` times each candidate the first time it sees a
shape (in its memory format, with or without gradients) and caches the answer per
machine in ``depthwise.json`` beside ``kernels.json``. They compute the same sums.
"""
from __future__ import annotations

import json
import logging
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..io import atomic_write_json
from ..models import build_segmenter
from ..models.ops import DepthwiseConv2d, DepthwisePolicy, use_depthwise_kernel
from ..models.subgrids import memory_format_of
from ..runtime import machine, tune_malloc
from ..spaces import get_space
from .config import ProxyConfig

log = logging.getLogger(__name__)

FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
#: the name under which the format choice is cached (older entries named other options)
OPTIONS = "format; depthwise kernel per shape"
#: the version of the depthwise kernels (nasseg.models.subgrids, nasseg.models.depthwise)
#: the cached answers were timed on (raise it when one changes, and they are timed again)
DEPTHWISE_VERSION = 3
#: timed repetitions of each option (after one warm-up each), interleaved
REPEATS = 3
#: images per measured step (BatchNorm needs 2 in training mode)
MEASURE_BATCH = 2


@dataclass(frozen=True)
class KernelChoice:
    """How proxy training runs its tensors and kernels."""

    memory_format: torch.memory_format
    depthwise: str | DepthwisePolicy = "plain"


def cache_file() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "nasseg" / "kernels.json"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _time_steps(steps: dict[str, Callable[[], None]]) -> dict[str, float]:
    for step in steps.values():   # warm-up: oneDNN picks and caches its kernels here
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(REPEATS):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _format_name(x: torch.Tensor) -> str:
    return "nhwc" if memory_format_of(x) == torch.channels_last else "nchw"


def time_depthwise(conv: DepthwiseConv2d, x: torch.Tensor, grad: bool,
                   kernels: tuple[str, ...]) -> dict[str, float]:
    """Median seconds of ``conv`` on an input like ``x`` (forward, and backward if
    ``grad``) computed by each of ``kernels``. Its own tensors and random generator:
    neither the model's gradients nor the training's random stream are touched."""
    gen = torch.Generator(device=x.device).manual_seed(0)
    inp = (torch.randn(x.shape, generator=gen, device=x.device).to(x.dtype)
           .contiguous(memory_format=memory_format_of(x)))
    probe = torch.nn.utils.skip_init(   # no initialisation: the random stream stays as it is
        DepthwiseConv2d, conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
        padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
        device=x.device, dtype=x.dtype)
    with torch.no_grad():
        probe.weight.copy_(conv.weight)
        if conv.bias is not None:
            probe.bias.copy_(conv.bias)
    probe.weight.requires_grad_(grad)
    inp.requires_grad_(grad)
    out_grad = None

    def step(kernel: str) -> Callable[[], None]:
        def run() -> None:
            nonlocal out_grad
            probe.kernel = kernel
            with torch.set_grad_enabled(grad):
                out = probe(inp)
                if grad:
                    if out_grad is None:
                        out_grad = torch.randn(out.shape, generator=gen, device=out.device).to(out.dtype)
                    out.backward(out_grad)
                    inp.grad = probe.weight.grad = None
            if x.device.type == "cuda":
                torch.cuda.synchronize(x.device)
        return run
    return _time_steps({kernel: step(kernel) for kernel in kernels})


class DepthwiseChooser:
    """A :data:`~nasseg.models.ops.DepthwisePolicy` that measures: for each input it has
    not seen (shape, memory format, dtype, kernel, stride, dilation, with or without
    gradients) it times the kernels that can compute it (:func:`time_depthwise`) and
    keeps the fastest, cached per machine in ``depthwise.json`` beside :func:`cache_file`
    (see the module docstring)."""

    def __init__(self, device: str | torch.device):
        self.path = cache_file().with_name("depthwise.json")
        self.machine = json.dumps({**machine(), "device": torch.device(device).type,
                                   "malloc_tuned": tune_malloc(), "depthwise": DEPTHWISE_VERSION}, sort_keys=True)
        self.table: dict[str, dict] = dict(_read_json(self.path).get(self.machine, {}))

    @staticmethod
    def key(conv: DepthwiseConv2d, x: torch.Tensor, grad: bool) -> str:
        shape = "x".join(map(str, x.shape))
        return (f"{_format_name(x)} {shape} {str(x.dtype).removeprefix('torch.')} k{conv.kernel_size[0]} "
                f"s{conv.stride[0]} d{conv.dilation[0]} {'train' if grad else 'inference'}")

    def __call__(self, conv: DepthwiseConv2d, x: torch.Tensor) -> str:
        if x.device.type == "meta":   # shapes only (FLOP counting): nothing to time
            return "plain"
        kernels = conv.kernels_for(x)
        if len(kernels) == 1:
            return kernels[0]
        grad = torch.is_grad_enabled() and (x.requires_grad or conv.weight.requires_grad)
        key = self.key(conv, x, grad)
        if key not in self.table:
            seconds = time_depthwise(conv, x, grad, kernels)
            self.table[key] = {"kernel": min(seconds, key=seconds.get), "seconds": seconds}
            log.debug("depthwise kernel for %s: %s (%s)", key, self.table[key]["kernel"], seconds)
            self._save()
        return self.table[key]["kernel"]

    def _save(self) -> None:
        cache = _read_json(self.path)   # merge: other workers may have added shapes
        cache[self.machine] = {**cache.get(self.machine, {}), **self.table}
        try:
            atomic_write_json(self.path, cache)
        except OSError as exc:   # a read-only home: the answers hold for this run only
            log.warning("could not cache the depthwise kernel choices in %s (%s)", self.path, exc)


def measure(space: str, config: ProxyConfig, device: torch.device, num_classes: int,
            depthwise: str | DepthwisePolicy = "plain") -> dict[str, float]:
    """Median seconds of one stage-1 plus one stage-2 training step in each memory
    format, depthwise convolutions computed as ``depthwise`` says."""
    genotype = next(iter(get_space(space).published.values()))
    model = build_segmenter(genotype, num_classes, agg_size=config.agg_size, repeats=config.repeats,
                            aux_cell=config.aux_cell and get_space(space).has_aux_cell).to(device)
    use_depthwise_kernel(model, depthwise)
    s1, s2 = config.stage1, config.stage2
    gen = torch.Generator().manual_seed(0)
    # At most MEASURE_BATCH images a step: which format is faster is a property of the
    # kernels at these sizes, and a full batch at the papers' crops costs many seconds.
    images1 = torch.randn(min(s1.batch_size, MEASURE_BATCH), 3, s1.crop_size, s1.crop_size,
                          generator=gen).to(device)
    images2 = torch.randn(min(s2.batch_size, MEASURE_BATCH), 3, s2.crop_size, s2.crop_size,
                          generator=gen).to(device)
    aux = config.aux_weight > 0

    def step(fmt: torch.memory_format) -> Callable[[], None]:
        def run() -> None:
            model.to(memory_format=fmt).train()
            with torch.no_grad():
                feats = [f.contiguous(memory_format=fmt)
                         for f in model.encoder(images1.contiguous(memory_format=fmt))]
            out = model.decode(feats, aux)
            (out.logits.mean() + sum(a.mean() for a in out.aux_logits)).backward()
            out = model(images2.contiguous(memory_format=fmt), aux)
            (out.logits.mean() + sum(a.mean() for a in out.aux_logits)).backward()
            model.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        return run

    return _time_steps({name: step(fmt) for name, fmt in FORMATS.items()})


def choose(space: str, config: ProxyConfig, device: str | torch.device, num_classes: int) -> KernelChoice:
    """The memory format and depthwise kernels for proxy training (see the module docstring)."""
    if config.channels_last != "auto":
        return KernelChoice(torch.channels_last if config.channels_last else torch.contiguous_format)
    device = torch.device(device)
    depthwise = DepthwiseChooser(device)
    key = json.dumps({**machine(), "device": device.type, "malloc_tuned": tune_malloc(),
                      "space": space, "agg_size": config.agg_size, "options": OPTIONS,
                      "repeats": config.repeats, "aux_cell": config.aux_cell,
                      "stage1": [config.stage1.batch_size, config.stage1.crop_size],
                      "stage2": [config.stage2.batch_size, config.stage2.crop_size]}, sort_keys=True)
    path = cache_file()
    cache = _read_json(path)
    if key not in cache:
        seconds = measure(space, config, device, num_classes, depthwise)
        cache[key] = {"choice": min(seconds, key=seconds.get), "seconds": seconds}
        try:
            atomic_write_json(path, cache)
        except OSError as exc:   # a read-only home: the choice holds for this run only
            log.warning("could not cache the kernel choice in %s (%s)", path, exc)
        log.info("kernels for %s: %s (one training step: %s); cached in %s", space,
                 cache[key]["choice"], ", ".join(f"{k} {v:.3f} s" for k, v in seconds.items()), path)
    return KernelChoice(FORMATS[cache[key]["choice"]], depthwise)
