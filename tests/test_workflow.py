"""Pipeline wiring: Snakemake and DVC both build the Cython extension.

Each test runs the real tools on a scratch copy of the checkout, so the
repository's own dvc.lock and build outputs are never touched.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def scratch_copy(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        src = ROOT / rel
        if src.is_file() and not rel.startswith(("tests/", "data/", "reports/")):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               DVC_NO_ANALYTICS="1")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


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
    run([str(Path(sys.executable).parent / "snakemake"), "--cores", "2", "build_ext"], root)
    check_built(root)
    assert "built nasseg.metrics._confusion" in (root / "logs" / "build_ext.log").read_text()


@pytest.mark.slow
def test_dvc_repro_builds_extension(tmp_path):
    root = scratch_copy(tmp_path)
    run([str(Path(sys.executable).parent / "dvc"), "repro", "build_ext"], root)
    check_built(root)
    assert "build_ext" in (root / "dvc.lock").read_text()


def test_snakemake_and_dvc_run_the_same_commands(tmp_path):
    """Every stage in dvc.yaml has a Snakemake rule with the very same command."""
    import re

    import yaml

    root = scratch_copy(tmp_path)
    proc = run([str(Path(sys.executable).parent / "snakemake"), "-n", "-p", "--forceall", "--cores", "1",
                "reproduce_wacv", "search_cvpr", "prepare_voc", "prepare_nyud"], root)
    printed = set()
    for line in (proc.stdout + proc.stderr).splitlines():
        line = line.strip().removeprefix("Shell command:").strip()
        if line.startswith("python -m stages."):
            printed.add(re.sub(r"\s*>\s*logs/\S+ 2>&1$", "", line))
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    commands = {name: " ".join(stage["cmd"].split()) for name, stage in stages.items()}
    missing = {name: cmd for name, cmd in commands.items() if cmd not in printed}
    assert not missing, f"dvc.yaml commands with no identical Snakemake rule: {missing}"
