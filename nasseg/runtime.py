"""Process settings for training on the CPU, and what a measurement depends on.

:func:`machine` names the processor, its vector extensions (and any limit put on the
instruction sets the libraries use), torch and its threads:
the key of every measured choice (:mod:`nasseg.search.kernels`) and the header of
every benchmark figure.

What: :func:`tune_malloc` raises three glibc ``malloc`` thresholds (``mallopt``):
blocks up to 32 MiB come from the heap instead of a fresh ``mmap``, up to 1 GiB of
freed memory stays at the heap's top instead of going back to the kernel, and the
heap grows 512 MiB at a time.

Why: PyTorch on the CPU allocates every activation and gradient with ``malloc``
and frees it within the step. With glibc's defaults a block above the mmap
threshold (128 KiB at first, raised automatically to at most 32 MiB) is a fresh
``mmap`` each time, and freed heap memory is trimmed back to the kernel, so the
next step touches new pages again: the kernel zero-fills each one on a page fault.
Profiled (``torch.profiler`` and ``getrusage``) on the search's stage 1 (wacv arch0,
batch 16, 256x256, one thread): 3.4 million minor page faults in four epochs, and
3.5-3.7 s an epoch; with these settings 0.53 million and 2.7-2.8 s (AMD EPYC with
AVX2 and AVX-512, 2 cores). The three settings work together: setting the trim
threshold alone turns off glibc's automatic mmap threshold and made the same
epochs twice as slow (7 s).

The cost: up to 1 GiB of freed memory stays mapped to the process. Set
``NASSEG_MALLOC_TUNING=0`` to keep glibc's defaults. Elsewhere than glibc (macOS,
musl) nothing is changed. The authors' code ran with the defaults.
"""
from __future__ import annotations

import ctypes
import logging
import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["tune_malloc", "machine", "describe_machine"]

log = logging.getLogger(__name__)

# glibc's <malloc.h>
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_SETTINGS = ((_M_MMAP_THRESHOLD, 32 << 20), (_M_TRIM_THRESHOLD, 1 << 30), (_M_TOP_PAD, 512 << 20))
_tuned: bool | None = None
# Environment variables that hold a library to an older instruction set.
_ISA_LIMITS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def tune_malloc() -> bool:
    """Apply the settings above to this process once; True if they are in effect."""
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    if os.environ.get("NASSEG_MALLOC_TUNING", "1") == "0":
        log.info("NASSEG_MALLOC_TUNING=0: glibc's malloc defaults kept")
    elif platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        libc = ctypes.CDLL(None)
        _tuned = all(libc.mallopt(param, value) == 1 for param, value in _SETTINGS)
        if not _tuned:
            log.warning("mallopt refused the allocator settings; glibc's defaults are in effect")
    return _tuned


def machine() -> dict[str, Any]:
    """What a measurement depends on besides the network: processor and its vector
    extensions (from /proc/cpuinfo where there is one), torch and its threads."""
    import torch

    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    vector = sorted(f for f in flags if f.startswith(("avx2", "avx512f", "avx512_bf16", "amx")))
    info = {"cpu": model, "vector": vector, "torch": torch.__version__,
            "threads": torch.get_num_threads()}
    # What the libraries actually use can be less than what the CPU has: torch's own
    # kernels (ATEN_CPU_CAPABILITY), oneDNN's convolutions and MKL's GEMMs can each be
    # held to an older instruction set, e.g. to measure as on an AVX2-only CPU.
    limits = {name: os.environ[name] for name in _ISA_LIMITS if os.environ.get(name)}
    if limits:
        info["isa_limits"] = limits
    info["aten_capability"] = torch.backends.cpu.get_cpu_capability()
    return info


def describe_machine(info: dict[str, Any] | None = None) -> str:
    """One line for a benchmark's header: the processor, its vector extensions and
    what torch's kernels use, with any limit put on them."""
    info = info or machine()
    limits = "".join(f", {k}={v}" for k, v in info.get("isa_limits", {}).items())
    return (f"{info['cpu']} ({', '.join(info['vector']) or 'no AVX2'}; torch {info['torch']} kernels "
            f"{info['aten_capability']}{limits})")
