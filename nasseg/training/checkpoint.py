"""The resumable state of a training run, as one plain-data file.

What: :class:`Progress` is where the run stands -- the epoch and the step within it
to run next, the loss summed so far in that epoch, the best validation so far, the
per-epoch metrics rows, the seconds spent -- and :func:`save_state` /
:func:`load_state` write and read it together with the model, both optimisers,
both learning-rate schedulers, the GradScaler and the Python, numpy and torch
random states, atomically (temporary file + rename), so a run killed at any moment
(SIGKILL included) finds the last complete state.

Everything is plain data -- tensors, numbers, strings, lists, tuples, dicts -- so
that :func:`nasseg.serialization.safe_load` (``weights_only=True``) reads it: numpy's
random state becomes a tuple holding a tensor. The data order needs no state of
its own: it is a function of (seed, epoch, step) (:mod:`.data`).
"""
from __future__ import annotations

import io
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import atomic_write_bytes
from ..serialization import CheckpointError, safe_load

__all__ = ["FORMAT", "Progress", "save_state", "load_state", "rng_state", "set_rng_state"]

#: The ``format`` tag of a training state file; bumped when its layout changes.
FORMAT = "nasseg-train-state/1"


@dataclass
class Progress:
    """Where a run stands (plain data)."""
    epoch: int = 0                 # the epoch to run (== epochs: training is complete)
    step: int = 0                  # the step of that epoch to run next
    loss_sum: float = 0.0          # the training loss summed over that epoch's steps so far
    epoch_seconds: float = 0.0     # seconds spent in that epoch so far
    best: dict[str, Any] | None = None   # {"epoch", "score", "scores"} of the best validation
    rows: list[dict[str, Any]] = field(default_factory=list)   # one per completed epoch

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rng_state() -> dict[str, Any]:
    """The Python, numpy, torch (and CUDA) random states, as plain data."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {"python": random.getstate(),
                             "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                                       float(gauss)),
                             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(path: str | os.PathLike, *, key: str, progress: Progress, model: dict[str, torch.Tensor],
               optimisers: dict[str, Any], schedulers: dict[str, Any], scaler: dict[str, Any]) -> None:
    """Write the training state to ``path`` atomically. ``key`` identifies the run's settings."""
    state = {"format": FORMAT, "key": key, "progress": progress.to_dict(),
             "model": {k: v.detach().cpu() for k, v in model.items()},
             "optimisers": optimisers, "schedulers": schedulers, "scaler": scaler, "rng": rng_state()}
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_state(path: str | os.PathLike, key: str) -> dict[str, Any] | None:
    """The state at ``path`` (None when there is none), its format and ``key`` checked;
    ``state["progress"]`` is a :class:`Progress`."""
    path = Path(path)
    if not path.exists():
        return None
    state = safe_load(path, "training state")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a training state of this version (expected format {FORMAT!r}); "
                              "move it away to start the training over")
    if state.get("key") != key:
        raise CheckpointError(f"{path}: the state of a training with other settings; move it away to "
                              "start over, or use another state folder")
    state["progress"] = Progress(**state["progress"])
    return state
