"""Resumable state of long stages, kept apart from their declared outputs.

A long stage (the search; next, training) keeps what it needs to resume in
``<state root>/<fingerprint>/``, where the fingerprint hashes what defines the run:
its parameters (less budgets and devices, which may change on resume), the
fingerprint of its input data and the source of the code it runs. So

* the same command after an interruption (SIGKILL included) finds its state and resumes;
* changed parameters, data or code start a fresh run in a new folder, and the old
  state stays where it was; reverting finds the old state again;
* neither Snakemake nor DVC needs ``persist`` or a folder left behind on failure:
  the declared outputs are written, atomically, only when the stage completes.

The state root is locked (an OS lock, released when the process dies) while a run
uses it, so two runs never write the same outputs. By default the root of an output
folder ``runs/search/wacv`` is ``runs/search/.state/wacv``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from nasseg.io import atomic_write_json, exclusive_lock

from .imports import ROOT, closure_files

KEY_FILE = "key.json"
LOCK_FILE = "lock"


def default_state_root(out: Path) -> Path:
    """Where the state of runs writing to `out` lives: a `.state` folder beside it."""
    out = Path(out)
    return out.parent / ".state" / out.name


def code_digest(entries: Iterable[str], root: Path = ROOT) -> str:
    """SHA-256 over the source files that the modules `entries` import, transitively."""
    h = hashlib.sha256()
    for rel in closure_files(entries, root):
        h.update(f"{rel}\t{hashlib.sha256((root / rel).read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


def fingerprint(key: Mapping[str, Any]) -> str:
    """A short, stable hash of a JSON-serialisable key."""
    text = json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextlib.contextmanager
def locked_root(root: Path) -> Iterator[Path]:
    """Hold the lock of state root `root` for the block; refuse at once if another run does."""
    root = Path(root)
    with exclusive_lock(root / LOCK_FILE, f"the state folder {root}"):
        yield root


def state_folder(root: Path, key: Mapping[str, Any]) -> Path:
    """The state folder of `key` in `root` (created, with key.json); hold the root's lock."""
    folder = Path(root) / fingerprint(key)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / KEY_FILE).is_file():
        atomic_write_json(folder / KEY_FILE, dict(key))
    return folder
