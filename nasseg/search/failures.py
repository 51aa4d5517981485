"""Failures: which ones are an architecture's own, and which ones stop the search.

A search trains thousands of sampled networks; some of them cannot be trained as
asked, and that is a fact about the architecture, recorded with its :class:`Status`
and ``proxy.failure_reward`` while the search goes on. Anything else -- bad data, a
missing file, a wrong setting, a bug -- would fail every architecture alike and
teach the controller noise, so it stops the search at once, with its cause.

**The rule** (:func:`architecture_status`). An exception is the architecture's own
when it is

* out of memory (``torch.cuda.OutOfMemoryError``, a RuntimeError saying so, a
  ``MemoryError``), raised anywhere while that architecture is trained or scored:
  memory use is the network's (status ``oom``);
* :class:`NonFiniteLoss`: its training loss became NaN or infinite (``nan``);
* a RuntimeError or ValueError -- PyTorch's shape and type errors -- raised inside
  :func:`candidate`, the code that builds that network, counts its FLOPs, runs it
  forward and backward and steps its optimisers (``error``), except a CUDA error
  (a device-side assert leaves the device unusable; it comes from bad labels or a
  bug, not from the architecture) and a :class:`~nasseg.data.DataError`.

Everything else propagates and stops the search; history and checkpoint stay as
they were after the last recorded architecture, and the one in flight is re-run
when the search resumes. A search whose architectures keep failing, for any
reason, stops after ``max_consecutive_failures`` of them (:class:`SearchAborted`).

Where we differ from the original: its training, data-caching and validation
functions are wrapped in ``try_except`` (``src/helpers/utils.py`` of
DrSleep/nas-segm-pytorch), which turns any RuntimeError into a return value of 0 and
goes on: a network that ran out of memory in stage 1 is validated half-trained, a
failed validation gives the reward 0, and a bad file or a bug looks like a bad
architecture to the controller. Its validation also silently ignores label values
outside the classes; here they stop the search, naming the file.
"""
from __future__ import annotations

import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum

import torch

from ..data.errors import DataError
from ..errors import InputError


class Status(str, Enum):
    """How the training of one architecture ended, as written to the history."""
    OK = "ok"                         # trained and scored
    EARLY_STOPPED = "early_stopped"   # scored at the validation where early stopping stopped it
    OOM = "oom"                       # out of memory
    NAN = "nan"                       # the training loss became NaN or infinite
    ERROR = "error"                   # the network could not be built or run (e.g. a shape error)

    @property
    def scored(self) -> bool:
        """Whether the reward is a validation score (not ``proxy.failure_reward``)."""
        return self in (Status.OK, Status.EARLY_STOPPED)


class NonFiniteLoss(FloatingPointError):
    """The training loss became NaN or infinite."""


class ArchitectureFailure(Exception):
    """An architecture's own failure, with the status and reason to record."""

    def __init__(self, status: Status, reason: str):
        super().__init__(f"{status.value}: {reason}")
        self.status = status
        self.reason = reason


class SearchAborted(InputError, RuntimeError):
    """The search stopped on purpose; the message says why and what to do."""


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _is_cuda_error(exc: BaseException) -> bool:
    text = str(exc)
    return "CUDA error" in text or "device-side assert" in text


def architecture_status(exc: BaseException, *, in_candidate: bool) -> Status | None:
    """The status of ``exc`` if it is the architecture's own failure, else None (see the rule above).

    ``in_candidate``: whether it was raised inside :func:`candidate`.
    """
    if is_out_of_memory(exc):
        return Status.OOM
    if isinstance(exc, NonFiniteLoss):
        return Status.NAN
    if (in_candidate and isinstance(exc, (RuntimeError, ValueError))
            and not isinstance(exc, DataError) and not _is_cuda_error(exc)):
        return Status.ERROR
    return None


def describe(exc: BaseException) -> str:
    """``Type: message (at file.py:line)`` of the innermost frame, for the history's ``reason``."""
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    where = f" (at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}"[:500] + where


@contextmanager
def candidate() -> Iterator[None]:
    """Run code of the candidate network: its own failures become :class:`ArchitectureFailure`."""
    try:
        yield
    except ArchitectureFailure:
        raise
    except Exception as exc:
        status = architecture_status(exc, in_candidate=True)
        if status is None:
            raise
        raise ArchitectureFailure(status, describe(exc)) from exc
