"""Timing a network's inference the way a latency figure should be timed.

What: :func:`measure` times a callable that runs one inference (batch 1, say):
warm-up runs first, then the number of runs per repeat is calibrated so that each
repeat rests on at least ``min_seconds`` of timed work, as FasterSeg's and timm's
harnesses do, and several repeats give the median, mean, standard deviation,
90th percentile and minimum of the time per run. On CUDA the timed work is
bracketed by CUDA events and synchronised, so asynchronous kernel launches are
not mistaken for finished work. :func:`check_eval_mode` refuses a network with any
module in training mode: the authors' WACV paper timed their models in training
mode once (their README corrects arch0 at 2048x1024 from 95.7 ms to 52.25 ms).
:func:`environment` records what a figure depends on.

The authors' repository has no latency benchmark; their published figures came
from a GPU (their README lists them).
"""
from __future__ import annotations

import math
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from .runtime import machine

__all__ = ["LatencyStats", "check_eval_mode", "measure", "environment"]


@dataclass(frozen=True)
class LatencyStats:
    """Seconds per run over the repeats (each repeat: ``runs`` runs, timed together)."""
    median: float
    mean: float
    std: float
    p90: float
    min: float
    runs: int
    repeats: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_eval_mode(model: nn.Module) -> None:
    """Raise ValueError naming the modules in training mode (BatchNorm would update its
    statistics and the CVPR decoder would compute its auxiliary heads)."""
    training = [name or type(model).__name__ for name, m in model.named_modules() if m.training]
    if training:
        shown = ", ".join(training[:5]) + (f" and {len(training) - 5} more" if len(training) > 5 else "")
        raise ValueError(f"refusing to time a network in training mode ({shown}); call model.eval() first")


def _timer(device: torch.device) -> Callable[[Callable[[], object], int], float]:
    """A function timing ``n`` calls of ``fn`` on ``device``, in seconds."""
    if device.type == "cuda":
        def timed(fn: Callable[[], object], n: int) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            for _ in range(n):
                fn()
            end.record()
            torch.cuda.synchronize(device)
            return start.elapsed_time(end) / 1000.0
        return timed

    def timed_cpu(fn: Callable[[], object], n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        return time.perf_counter() - start
    return timed_cpu


def measure(fn: Callable[[], object], *, device: str | torch.device = "cpu", warmup: int = 3,
            min_seconds: float = 1.0, repeats: int = 5, max_runs: int = 100_000) -> LatencyStats:
    """Time ``fn`` (one inference); see the module docstring.

    ``warmup`` untimed runs; then runs are doubled until one batch of them takes at
    least ``min_seconds`` (capped at ``max_runs``), and ``repeats`` batches of that many
    runs are timed. Call it under ``torch.inference_mode()`` (or ``no_grad``) yourself.
    """
    if warmup < 0 or repeats < 1 or min_seconds < 0 or max_runs < 1:
        raise ValueError("need warmup >= 0, repeats >= 1, min_seconds >= 0, max_runs >= 1")
    timed = _timer(torch.device(device))
    for _ in range(warmup):
        fn()
    runs = 1
    while True:
        seconds = timed(fn, runs)
        if seconds >= min_seconds or runs >= max_runs:
            break
        # aim straight at min_seconds (with a margin), at least doubling
        runs = min(max_runs, max(2 * runs, math.ceil(1.2 * runs * min_seconds / max(seconds, 1e-9))))
    per_run = sorted(timed(fn, runs) / runs for _ in range(repeats))
    p90 = per_run[min(len(per_run) - 1, math.ceil(0.9 * len(per_run)) - 1)]
    return LatencyStats(median=statistics.median(per_run), mean=statistics.fmean(per_run),
                        std=statistics.pstdev(per_run), p90=p90, min=per_run[0], runs=runs,
                        repeats=repeats)


def environment(device: str | torch.device = "cpu") -> dict[str, Any]:
    """What a latency figure depends on: device, processor and its vector extensions,
    threads, library versions."""
    info: dict[str, Any] = {**machine(), "python": platform.python_version(), "device": str(device)}
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    return info
