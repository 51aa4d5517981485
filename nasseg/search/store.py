"""On-disk state of a search (history.jsonl, checkpoint.pt) and its published results.

A search keeps its resumable state in one folder (:class:`SearchStore`) and, when it
completes, publishes its results (:func:`publish`) -- possibly elsewhere: the pipeline
keeps the state of each parameter set in a folder of its own and publishes into the
stage's declared outputs.

* ``history.jsonl``: one JSON line per evaluated architecture, appended with a
  single ``write`` on an ``O_APPEND`` descriptor and fsync'd, so a line is
  either whole or absent; a torn tail (power loss) is cut off at load time,
  and earlier lines are never rewritten.
* ``checkpoint.pt``: the controller/strategy state, the early-stopping state,
  the proposals in flight and the ids already fed back to the strategy;
  replaced atomically (temp file + rename) after every proposal and update.
  Plain data only (tensors, numbers, strings, lists, tuples, dicts), read back with
  :func:`nasseg.serialization.safe_load`: a state folder shared through a DVC
  remote is as foreign as any download, and unpickling it must not run code.
"""
from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from ..io import atomic_write_bytes, atomic_write_json
from ..serialization import safe_load
from .failures import Status

log = logging.getLogger(__name__)

HISTORY = "history.jsonl"
CHECKPOINT = "checkpoint.pt"
SUMMARY = "summary.json"
METRICS = "metrics.json"
REWARDS = "rewards.csv"


class SearchStore:
    """Reads and writes one search's resumable state folder."""

    def __init__(self, folder: str | os.PathLike):
        self.out = Path(folder)
        self.out.mkdir(parents=True, exist_ok=True)
        self.history_path = self.out / HISTORY
        self.checkpoint_path = self.out / CHECKPOINT

    # -- history ---------------------------------------------------------------
    def read_history(self) -> list[dict[str, Any]]:
        """All complete records; a torn last line is removed from the file."""
        if not self.history_path.exists():
            return []
        data = self.history_path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            log.warning("%s: dropping an incomplete last line (%d bytes)", self.history_path, len(data) - keep)
            with open(self.history_path, "r+b") as fh:
                fh.truncate(keep)
            data = data[:keep]
        records = []
        for n, line in enumerate(data.decode("utf-8").splitlines(), start=1):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{self.history_path}:{n}: not valid JSON ({exc}); the history is "
                                 "corrupt: move it away to start a new search") from exc
        return records

    def append_record(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, sort_keys=False, allow_nan=True) + "\n").encode("utf-8")
        fd = os.open(self.history_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(f"{self.history_path}: short write ({written} of {len(line)} bytes)")
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- checkpoint --------------------------------------------------------------
    def load_checkpoint(self) -> dict[str, Any] | None:
        if not self.checkpoint_path.exists():
            return None
        return safe_load(self.checkpoint_path, "search checkpoint")

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.checkpoint_path, buf.getvalue())


def publish(history: list[dict[str, Any]], summary: dict[str, Any], metrics: dict[str, Any],
            out: str | os.PathLike, metrics_dir: str | os.PathLike) -> None:
    """Write a completed search's results, each file atomically.

    ``<out>/history.jsonl`` and ``<out>/summary.json``; ``<metrics_dir>/metrics.json``
    (scalars, for `dvc metrics`) and ``<metrics_dir>/rewards.csv`` (id, reward, best
    reward so far, status, for `dvc plots`).
    """
    out, metrics_dir = Path(out), Path(metrics_dir)
    lines = "".join(json.dumps(r, sort_keys=False, allow_nan=True) + "\n" for r in history)
    atomic_write_bytes(out / HISTORY, lines.encode("utf-8"))
    atomic_write_json(out / SUMMARY, summary)
    atomic_write_json(metrics_dir / METRICS, metrics)
    rows = ["id,reward,best_so_far,status"]
    best = float("-inf")
    for r in sorted(history, key=lambda r: r["id"]):
        if Status(r["status"]).scored:
            best = max(best, r["reward"])
        shown = "" if best == float("-inf") else f"{best:.6f}"
        rows.append(f"{r['id']},{r['reward']:.6f},{shown},{r['status']}")
    atomic_write_bytes(metrics_dir / REWARDS, ("\n".join(rows) + "\n").encode())
