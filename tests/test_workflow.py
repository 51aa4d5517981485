"""Pipeline wiring: Snakemake and DVC both build the Cython extension.

Each test runs the real tools on a scratch copy of the checkout, so the
repository's own dvc.lock and build outputs are never touched.
"""
import json
import sys
from pathlib import Path

import pytest

from conftest import BIN, scratch_copy
from conftest import run_cli as run


def check_built(root: Path) -> None:
    record = json.loads((root / "build" / "ext.json").read_text())
    (ext,) = record["extensions"]
    assert ext["module"] == "nasseg.metrics._confusion"
    # The extension was compiled inside this copy, and it works there.
    assert (root / ext["file"]).is_file() and not Path(ext["file"]).is_absolute()
    probe = ("import numpy as np; from nasseg.metrics import confusion_matrix as cm; "
             "print(cm(np.array([0, 1, 1]), np.array([0, 1, 0]), 2).tolist())")
    assert run([sys.executable, "-c", probe], root).stdout.strip() == "[[1, 1], [0, 1]]"


@pytest.mark.slow
def test_snakemake_builds_extension(tmp_path):
    root = scratch_copy(tmp_path)
    run([str(BIN / "snakemake"), "--cores", "2", "build_ext"], root)
    check_built(root)
    assert "built nasseg.metrics._confusion" in (root / "logs" / "build_ext.log").read_text()


@pytest.mark.slow
def test_dvc_repro_builds_extension(tmp_path):
    root = scratch_copy(tmp_path)
    run([str(BIN / "dvc"), "repro", "build_ext"], root)
    check_built(root)
    assert "build_ext" in (root / "dvc.lock").read_text()
