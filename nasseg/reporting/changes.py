"""What changed since the last committed run: metrics and parameters, HEAD against the workspace.

What: :func:`compare_with_head` reads each metrics file and the parameters file as git's
HEAD has them (``git show HEAD:<path>``), flattens both versions into dotted keys and
lists what differs -- the equivalent of ``dvc metrics diff`` (numbers only: a metric
that changed, appeared or disappeared) and ``dvc params diff`` (any value, lists
compared whole) between HEAD and the workspace.

Why not DVC itself: the report runs inside ``dvc repro``, which holds the repository
lock that ``dvc metrics diff`` would wait for. The committed files are read with git
alone; the pipeline commits its metrics to git (``cache: false``), which is what makes
this possible. Without a baseline (not a git repository, no commit, or files absent at
HEAD) :class:`Changes` says why instead.
"""
from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .provenance import GitState, git_state

__all__ = ["Change", "Changes", "flatten_metrics", "flatten_params", "diff_metrics", "diff_params",
           "compare_with_head"]


@dataclass(frozen=True)
class Change:
    """One key that differs: ``old`` None when new since HEAD, ``new`` None when gone."""
    file: str
    key: str
    old: Any
    new: Any

    @property
    def delta(self) -> float | None:
        """new - old for two numbers."""
        if _is_number(self.old) and _is_number(self.new):
            return float(self.new) - float(self.old)
        return None


@dataclass(frozen=True)
class Changes:
    """The differences from HEAD; ``baseline`` None (with ``reason``) when there is none."""
    baseline: GitState | None
    reason: str | None
    metrics: tuple[Change, ...]
    params: tuple[Change, ...]
    files_compared: tuple[str, ...]
    files_new: tuple[str, ...]          # in the workspace, absent at HEAD


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _item_key(item: Any, index: int) -> str:
    """How a list element is named in a flattened key: its label or name when it has one."""
    if isinstance(item, Mapping):
        for key in ("label", "name", "id"):
            if isinstance(item.get(key), (str, int)) and not isinstance(item.get(key), bool):
                return str(item[key])
        if isinstance(item.get("size"), str) and isinstance(item.get("backend"), str):
            return f"{item['size']}/{item['backend']}"
    return str(index)


def flatten_metrics(obj: Any, prefix: str = "") -> dict[str, float]:
    """The numbers of a metrics file under dotted keys.

    Mappings nest with ``.``; a list of mappings gives ``key[label]`` (or ``key[i]``);
    lists of numbers (vectors, confusion matrices) are left out, as ``dvc metrics diff``
    leaves them. NaN and infinities are left out too.
    """
    out: dict[str, float] = {}
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            out.update(flatten_metrics(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, list):
        if all(isinstance(v, Mapping) for v in obj):
            for i, v in enumerate(obj):
                out.update(flatten_metrics(v, f"{prefix}[{_item_key(v, i)}]"))
    elif _is_number(obj) and math.isfinite(float(obj)):
        out[prefix] = float(obj) if isinstance(obj, float) else obj
    return out


def flatten_params(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf of a parameters mapping under dotted keys; lists are leaves (as DVC shows them)."""
    out: dict[str, Any] = {}
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            out.update(flatten_params(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = obj
    return out


def _diff(file: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    out = []
    for key in [*old, *(k for k in new if k not in old)]:
        a, b = old.get(key), new.get(key)
        if key in old and key in new and (a == b or (_is_number(a) and _is_number(b) and float(a) == float(b))):
            continue
        out.append(Change(file, key, a, b))
    return out


def diff_metrics(file: str, old: Any, new: Any) -> list[Change]:
    """The numbers that differ between two versions of one metrics file (old None: new file)."""
    return _diff(file, flatten_metrics(old) if old is not None else {}, flatten_metrics(new))


def diff_params(file: str, old: Any, new: Any) -> list[Change]:
    """The parameters that differ between two versions (mappings) of a parameters file."""
    return _diff(file, flatten_params(old) if old is not None else {}, flatten_params(new))


def _show_head(root: Path, rel: str) -> str | None:
    """The file ``rel`` (relative to the repository root) as HEAD has it; None if absent."""
    proc = subprocess.run(["git", "-C", str(root), "show", f"HEAD:{rel}"], capture_output=True, timeout=60)
    return proc.stdout.decode("utf-8", "replace") if proc.returncode == 0 else None


def _relative(path: Path, root: Path) -> str | None:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


def compare_with_head(repo: str | Path, metrics_files: Sequence[str | Path], params_file: str | Path,
                      select_params: Callable[[Mapping[str, Any]], Mapping[str, Any]] = lambda p: p,
                      ) -> Changes:
    """Metrics and parameters of the workspace against git's HEAD in ``repo``.

    ``metrics_files`` are JSON files; ``params_file`` a YAML file, of which
    ``select_params`` keeps the part to compare (an experiment's sections, say).
    """
    state = git_state(repo)
    if state.revision is None or state.root is None:
        return Changes(None, f"no baseline: {state.error}", (), (), (), ())
    root = state.root
    metrics: list[Change] = []
    compared, new_files = [], []
    for file in metrics_files:
        path = Path(file)
        rel = _relative(path, root)
        if rel is None or not path.is_file():
            continue
        current = json.loads(path.read_text())
        committed = _show_head(root, rel)
        if committed is None:
            new_files.append(rel)
            continue
        try:
            old = json.loads(committed)
        except json.JSONDecodeError:
            old = None
        compared.append(rel)
        metrics += diff_metrics(rel, old, current)
    params: list[Change] = []
    rel = _relative(Path(params_file), root)
    committed_params = _show_head(root, rel) if rel is not None else None
    if rel is not None and committed_params is not None:
        old_params = yaml.safe_load(committed_params) or {}
        new_params = yaml.safe_load(Path(params_file).read_text()) or {}
        params = diff_params(rel, select_params(old_params), select_params(new_params))
    if not compared and committed_params is None:
        return Changes(state, f"no baseline: none of the {len(metrics_files)} metrics files nor "
                              f"{params_file} is committed at HEAD ({state.short})", (), (), (), tuple(new_files))
    return Changes(state, None, tuple(metrics), tuple(params), tuple(compared), tuple(new_files))
