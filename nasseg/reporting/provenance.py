"""Where a report's numbers come from: code revision, parameters, machine, libraries, time.

What: :func:`collect_provenance` records the git revision of the checkout (and whether
tracked files differ from it), the parameter sections of one experiment with a hash
of them, the machine (:func:`nasseg.runtime.machine`: processor, vector extensions,
torch threads), the versions of the libraries the numbers depend on, and the time.
:func:`experiment_params` picks an experiment's sections out of params.yaml.

Why: a report is only worth keeping if it says which code, settings and machine
produced it. Git is asked directly (``git rev-parse``, ``git status``); no DVC command
is run, since the report runs inside ``dvc repro``, which holds DVC's repository lock.
"""
from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["GitState", "Provenance", "LIBRARIES", "git_state", "experiment_params", "resolve_preset",
           "params_hash", "library_versions", "collect_provenance"]

#: The distributions whose versions the report lists (the numbers depend on them).
LIBRARIES = ("torch", "torchvision", "numpy", "onnx", "onnxruntime", "pillow", "opencv-python-headless",
             "matplotlib", "pydantic", "dvc", "snakemake")


@dataclass(frozen=True)
class GitState:
    """The checkout's revision; ``error`` says why there is none (no git, no commit)."""
    revision: str | None
    short: str | None
    dirty: bool | None
    subject: str | None
    date: str | None
    root: Path | None
    error: str | None = None


@dataclass(frozen=True)
class Provenance:
    """Everything the provenance section shows."""
    git: GitState
    params_file: Path
    params_sha256: str
    preset: str | None
    sections: Mapping[str, Any]      # the experiment's sections at the active preset
    sections_hash: str
    machine: Mapping[str, Any]
    python: str
    platform: str
    versions: Mapping[str, str]
    generated: str                   # UTC, ISO 8601


def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip() or f"git {' '.join(args)} failed")
    return proc.stdout.strip()


def git_state(repo: str | Path) -> GitState:
    """The revision of ``repo``'s HEAD and whether tracked files differ from it (untracked
    files do not count: run outputs are not tracked by git)."""
    repo = Path(repo)
    try:
        root = Path(_git(repo, "rev-parse", "--show-toplevel"))
    except FileNotFoundError:
        return GitState(None, None, None, None, None, None, "git is not installed")
    except (RuntimeError, subprocess.SubprocessError) as exc:
        return GitState(None, None, None, None, None, None, f"{repo} is not in a git repository ({exc})")
    try:
        revision = _git(repo, "rev-parse", "--verify", "HEAD")
    except (RuntimeError, subprocess.SubprocessError):
        return GitState(None, None, None, None, None, root, "the repository has no commit yet")
    subject, _, date = _git(repo, "log", "-1", "--format=%s%x00%cI", "HEAD").partition("\0")
    dirty = bool(_git(repo, "status", "--porcelain", "--untracked-files=no"))
    return GitState(revision, revision[:10], dirty, subject, date, root)


def resolve_preset(tree: Any, preset: str | None) -> Any:
    """``tree`` with every mapping that has a key ``preset`` replaced by that key's value."""
    if not isinstance(tree, Mapping):
        return tree
    if preset is not None and preset in tree:
        return resolve_preset(tree[preset], preset)
    return {k: resolve_preset(v, preset) for k, v in tree.items()}


def experiment_params(params: Mapping[str, Any], experiment: str, experiments: Sequence[str]) -> dict[str, Any]:
    """The sections of params.yaml that concern ``experiment``.

    A top-level section keyed by experiment (``search: {wacv: ..., cvpr: ...}``) gives
    only ``experiment``'s part; a section keyed by none of ``experiments`` (``preset``,
    ``data``, ``prepare``, ...) is shared and kept whole.
    """
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping) and any(e in value for e in experiments):
            if experiment in value:
                out[key] = {experiment: value[experiment]}
        else:
            out[key] = value
    return out


def params_hash(sections: Mapping[str, Any]) -> str:
    """A short hash of ``sections`` (canonical JSON: sorted keys)."""
    text = json.dumps(sections, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def library_versions(names: Sequence[str] = LIBRARIES) -> dict[str, str]:
    """Installed versions of ``names`` ("not installed" for a missing one), without importing them."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def collect_provenance(repo: str | Path, params_file: str | Path, params: Mapping[str, Any], experiment: str,
                       experiments: Sequence[str]) -> Provenance:
    """The provenance of a report of ``experiment`` made in ``repo`` with ``params`` (read from
    ``params_file``)."""
    from ..runtime import machine

    params_file = Path(params_file)
    preset = params.get("preset")
    sections = resolve_preset(experiment_params(params, experiment, experiments), preset)
    return Provenance(
        git=git_state(repo), params_file=params_file,
        params_sha256=hashlib.sha256(params_file.read_bytes()).hexdigest(),
        preset=str(preset) if preset is not None else None, sections=sections,
        sections_hash=params_hash(sections), machine=machine(), python=platform.python_version(),
        platform=platform.platform(), versions=library_versions(),
        generated=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
