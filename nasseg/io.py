"""Atomic file output, and an exclusive lock on a folder in use.

Atomic output: write to a temporary name beside the target, then rename. An
interrupted run therefore never leaves a half-written file or folder under the
final name, and re-running a stage is always safe.

Locks are operating-system locks (``flock``) on a file: the kernel releases them
when the process ends, however it ends (SIGKILL included), so a stale lock never
has to be removed by hand. The lock file records who holds it (host, PID, start
time) so that a refused run can say so.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import InputError


def _default_mode(folder: bool) -> int:
    """The mode a plain open()/mkdir() would give under the current umask.

    mkstemp/mkdtemp create 0600/0700 entries; renamed into place they would
    stay private, unlike every other output.
    """
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if folder else 0o666) & ~umask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (fsync'd temp file + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _default_mode(folder=False))
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON to `path` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder that replaces `path` only if the block succeeds.

    On an exception the temporary folder is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, _default_mode(folder=True))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class LockHeldError(InputError, RuntimeError):
    """Another process holds the lock; the message names it."""


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on file `path` (created if needed) for the block.

    Refuses at once, with :class:`LockHeldError` naming the holder's host, PID and
    start time, when another process holds it. `what` says what the lock guards,
    for that message.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
            try:
                info = json.loads(holder)
                who = f"PID {info['pid']} on host {info['host']}, started {info['started']}"
            except (ValueError, KeyError, TypeError):
                who = "another process"
            raise LockHeldError(f"{what} is in use by {who} (lock file {path}); wait for that run "
                                "to finish or stop it, then run again") from None
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        os.ftruncate(fd, 0)
        os.pwrite(fd, (record + "\n").encode(), 0)
        yield
    finally:
        os.close(fd)   # closing the descriptor releases the lock
