"""Fixtures and helpers shared by the test modules.

* ``one_torch_thread``: run a module's tests on one torch thread (steady timing on a
  shared 2-core machine), restoring the setting afterwards. No test module changes
  global torch settings at import time; they use this fixture instead.
* :func:`scratch_copy`: a copy of the checkout (the files git tracks or would track)
  in a fresh git repository, so pipeline tests never touch the repository's own
  outputs, locks or caches.
* :func:`run_cli`: run a command with this interpreter's tools (snakemake, dvc) first on
  the PATH; fail with its output when it fails.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
#: The folder holding this interpreter, so its snakemake and dvc are the ones run.
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tests on one torch thread, restoring the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def scratch_copy(dest: Path, exclude: Sequence[str] = ("tests/", "data/", "reports/", "benchmarks/"),
                 ) -> Path:
    """Copy the checkout's tracked and untracked-but-not-ignored files to `dest`; `git init` it."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file() and not rel.startswith(tuple(exclude)):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    for key, value in (("user.name", "nasseg tests"), ("user.email", "tests@nasseg.invalid")):
        subprocess.run(["git", "config", key, value], cwd=dest, check=True)
    return dest


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a tool run from a test: this interpreter's bin first on PATH."""
    return dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", DVC_NO_ANALYTICS="1",
                **extra)


def run_cli(cmd: Sequence[str], cwd: Path, ok: bool = True, timeout: float = 600,
            **env: str) -> subprocess.CompletedProcess:
    """Run `cmd` in `cwd`; with `ok`, assert that it succeeded and show its output if not."""
    proc = subprocess.run(list(cmd), cwd=cwd, env=cli_env(**env), capture_output=True, text=True,
                          timeout=timeout)
    if ok:
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc
