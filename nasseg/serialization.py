"""Loading torch files without running code from them: :func:`safe_load`.

What: every file this project reads with ``torch.load`` goes through
:func:`safe_load`, which unpickles with ``weights_only=True``: tensors, plain
containers and numbers, and nothing else. That covers the files that come from
elsewhere -- distillation teachers, the authors' released weights, encoder
weights, and the search checkpoint, which a DVC remote shares like any other
output -- and this project's own checkpoints, which hold plain data only (the
random streams' states as tuples of ints and byte tensors).

Why: a pickle names the functions that rebuild its objects, and unpickling
calls them; ``torch.load(..., weights_only=False)`` on a file someone else wrote
runs whatever its author chose (a class whose ``__reduce__`` returns
``os.system``, say). A file that needs anything beyond plain data is refused
with :class:`CheckpointError`, naming the file and the object it asked for,
before any of its code runs.

Allowed beyond torch's defaults: numpy scalars (``numpy.core.multiarray.scalar``,
also under numpy 2's ``numpy._core`` name) and numpy's numeric dtypes, which the
authors' training scripts pickle as ``best_val = np.mean(ious)`` (a numpy
float64) beside the state dict. Their released weights are plain state dicts
(``collections.OrderedDict`` of tensors, allowed by default); their search
checkpoints also pickle their ``RolloutStorage`` class and are refused (this
project never reads them). Where we differ from the original: it loads every
file with an unrestricted ``torch.load`` (torch < 2.6, before ``weights_only``
became the default).
"""
from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import InputError

__all__ = ["CheckpointError", "safe_load", "SAFE_GLOBALS"]


class CheckpointError(InputError, RuntimeError):
    """A torch file refused (it would run code) or unreadable; the message names it and says why."""


def _numpy_scalar_globals() -> list[Any]:
    try:   # numpy >= 2
        from numpy._core.multiarray import scalar
    except ImportError:   # numpy 1.x
        from numpy.core.multiarray import scalar
    dtypes = [type(np.dtype(code)) for code in "?bhilqBHILQefdgFDG"]
    return [scalar, (scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"),
            np.dtype, *dtypes]


#: What :func:`safe_load` accepts beyond ``torch.load(weights_only=True)``'s defaults.
SAFE_GLOBALS: list[Any] = _numpy_scalar_globals()

#: What torch's weights-only unpickler says of bytes that are no pickle opcode.
_GARBAGE = re.compile(r"Unsupported operand \d+")
_ASKED_FOR = (re.compile(r"GLOBAL (\S+?) was not an allowed global"), re.compile(r"but got (<class '[^']+'>)"))


def safe_load(path: str | os.PathLike, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` onto the CPU, numpy scalars allowed.

    ``what`` says what the file is for (``"teacher checkpoint"``), for messages.
    Raises :class:`FileNotFoundError` for a missing file and :class:`CheckpointError`
    for a file that asks for other Python objects (refused before any code runs)
    or that torch cannot read.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        asked = next((m.group(1) for p in _ASKED_FOR if (m := p.search(text))), None)
        garbage = _GARBAGE.search(text)
        if asked is None and garbage:   # not a pickle at all: a corrupt or unrelated file
            raise CheckpointError(f"{path}: cannot read this {what} as a torch file (not a torch "
                                  f"zip or pickle: {garbage.group(0).lower()}); is it complete and "
                                  "the file you meant?") from exc
        detail = f"it asks for {asked}" if asked else text.strip().splitlines()[-1]
        raise CheckpointError(
            f"{path}: refused to load this {what}: {detail}, which is not a tensor or plain data, "
            "and unpickling it could run code from the file. If you trust the file, load it once "
            "yourself and re-save its tensors alone (torch.save(state_dict)), then use that copy"
        ) from exc
    except (RuntimeError, EOFError, ValueError, OSError) as exc:   # OSError: a truncated zip
        raise CheckpointError(f"{path}: cannot read this {what} as a torch file ({exc}); "
                              "is it complete and the file you meant?") from exc
