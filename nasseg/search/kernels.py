"""Kernel options chosen by measuring on the machine at hand, and cached.

Whether NHWC (``channels_last``) or NCHW activations train faster depends on the
processor (which oneDNN kernels its vector extensions allow) and on the network:
on a 2-core AMD EPYC with AVX2 only, NCHW beat channels_last for the CVPR decoder
(81 s against 105 s per architecture), while on an earlier machine channels_last
was 1.7x faster than NCHW for the WACV one. So is whether dilated depthwise
convolutions run faster as undilated ones on space-to-batch sub-grids
(:class:`nasseg.models.ops.DepthwiseConv2d`): oneDNN's dilated depthwise kernels are
slow, most of all backward and in NHWC, by how much depends on the CPU. A fixed
default is therefore wrong somewhere. With ``proxy.channels_last: auto`` (the
default) :func:`choose` times a training step of the space's first published network
with each option (both formats, each with and without sub-grids when that network
has dilated depthwise convolutions), at the proxy's own stage-1 and stage-2 crop
sizes (two images a step), interleaved, and keeps the fastest. The answer is cached
per machine (processor model, vector extensions and any limit on them, torch
version, threads, device) and setting in ``$XDG_CACHE_HOME/nasseg/kernels.json``
(default ``~/.cache``), so the one-off cost (seconds) is paid once; delete that file
to measure again. ``true`` / ``false`` force a format, with the plain kernels,
without measuring.
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
from ..models.ops import use_space_to_batch
from ..runtime import machine, tune_malloc
from ..spaces import get_space
from .config import ProxyConfig

log = logging.getLogger(__name__)

FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
#: the suffix of an option that computes dilated depthwise convolutions on sub-grids
SUBGRIDS = "+space_to_batch"


@dataclass(frozen=True)
class KernelChoice:
    """How proxy training runs its tensors and kernels."""

    memory_format: torch.memory_format
    space_to_batch: bool = False

    @classmethod
    def named(cls, name: str) -> KernelChoice:
        return cls(FORMATS[name.removesuffix(SUBGRIDS)], name.endswith(SUBGRIDS))
#: timed repetitions of each format (after one warm-up step each), interleaved
REPEATS = 3
#: images per measured step (BatchNorm needs 2 in training mode)
MEASURE_BATCH = 2


def cache_file() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "nasseg" / "kernels.json"


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


def measure(space: str, config: ProxyConfig, device: torch.device, num_classes: int,
            ) -> dict[str, float]:
    """Median seconds of one stage-1 plus one stage-2 training step with each option:
    both formats, each also with sub-grids if the network has dilated depthwise convs."""
    genotype = next(iter(get_space(space).published.values()))
    model = build_segmenter(genotype, num_classes, agg_size=config.agg_size, repeats=config.repeats,
                            aux_cell=config.aux_cell and get_space(space).has_aux_cell).to(device)
    s1, s2 = config.stage1, config.stage2
    gen = torch.Generator().manual_seed(0)
    # At most MEASURE_BATCH images a step: which format is faster is a property of the
    # kernels at these sizes, and a full batch at the papers' crops costs many seconds.
    images1 = torch.randn(min(s1.batch_size, MEASURE_BATCH), 3, s1.crop_size, s1.crop_size,
                          generator=gen).to(device)
    images2 = torch.randn(min(s2.batch_size, MEASURE_BATCH), 3, s2.crop_size, s2.crop_size,
                          generator=gen).to(device)
    aux = config.aux_weight > 0

    subgrids = use_space_to_batch(model, False) > 0

    def step(choice: KernelChoice) -> Callable[[], None]:
        fmt = choice.memory_format

        def run() -> None:
            use_space_to_batch(model, choice.space_to_batch)
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

    names = [n + suffix for n in FORMATS for suffix in (("", SUBGRIDS) if subgrids else ("",))]
    return _time_steps({name: step(KernelChoice.named(name)) for name in names})


def choose(space: str, config: ProxyConfig, device: str | torch.device, num_classes: int) -> KernelChoice:
    """The memory format and depthwise kernels for proxy training (see the module docstring)."""
    if config.channels_last != "auto":
        return KernelChoice(torch.channels_last if config.channels_last else torch.contiguous_format)
    device = torch.device(device)
    key = json.dumps({**machine(), "device": device.type, "malloc_tuned": tune_malloc(),
                      "space": space, "agg_size": config.agg_size, "options": "format+subgrids",
                      "repeats": config.repeats, "aux_cell": config.aux_cell,
                      "stage1": [config.stage1.batch_size, config.stage1.crop_size],
                      "stage2": [config.stage2.batch_size, config.stage2.crop_size]}, sort_keys=True)
    path = cache_file()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if key not in cache:
        seconds = measure(space, config, device, num_classes)
        cache[key] = {"choice": min(seconds, key=seconds.get), "seconds": seconds}
        try:
            atomic_write_json(path, cache)
        except OSError as exc:   # a read-only home: the choice holds for this run only
            log.warning("could not cache the kernel choice in %s (%s)", path, exc)
        log.info("kernels for %s: %s (one training step: %s); cached in %s", space,
                 cache[key]["choice"], ", ".join(f"{k} {v:.3f} s" for k, v in seconds.items()), path)
    return KernelChoice.named(cache[key]["choice"])
