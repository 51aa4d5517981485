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
    modules = {ext["module"]: ext["file"] for ext in record["extensions"]}
    assert set(modules) == {"nasseg.metrics._confusion", "nasseg.search._lstm", "nasseg.models._depthwise"}
    # The extensions were compiled inside this copy, and they work there.
    assert all((root / file).is_file() and not Path(file).is_absolute() for file in modules.values())
    probe = ("import numpy as np; from nasseg.metrics import confusion_matrix as cm; "
             "print(cm(np.array([0, 1, 1]), np.array([0, 1, 0]), 2).tolist())")
    assert run([sys.executable, "-c", probe], root).stdout.strip() == "[[1, 1], [0, 1]]"
    probe = ("import torch; from nasseg.models.ops import DepthwiseConv2d; "
             "c = DepthwiseConv2d(8, 8, 3, padding=2, dilation=2, groups=8, bias=False); "
             "x = torch.randn(2, 8, 9, 9).contiguous(memory_format=torch.channels_last); "
             "c.kernel = 'direct'; y = c(x); c.kernel = 'plain'; "
             "print(torch.allclose(y, c(x), atol=1e-5))")
    assert run([sys.executable, "-c", probe], root).stdout.strip() == "True"


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


def test_snakemake_charges_a_lone_ready_job_its_resources(tmp_path):
    """The limits the workstation profile sets (one GPU job, the latency benchmark alone)
    hold only if Snakemake charges every job it starts. Snakemake up to 9.16 did not
    charge a job that was the only one ready, yet gave its resources back when it ended
    (its scheduler's one-job shortcut), so the pool grew: here `a` runs alone, then `b`
    and `c`, each taking the whole `slot`, ran side by side. pyproject.toml asks for a
    Snakemake without that."""
    (tmp_path / "Snakefile").write_text('''
import time
rule all:
    input: "b.txt", "c.txt"
rule a:
    output: "a.txt"
    resources: slot=1
    shell: "touch {output}"
for name in ("b", "c"):
    rule:
        name: name
        input: "a.txt"
        output: f"{name}.txt"
        resources: slot=1
        run:
            start = time.time()
            time.sleep(1.5)
            with open(output[0], "w") as f:
                f.write(f"{start} {time.time()}")
''')
    run([str(BIN / "snakemake"), "--cores", "3", "--resources", "slot=1", "--scheduler", "greedy",
         "--workflow-profile", "none"], tmp_path)
    (b0, b1), (c0, c1) = (map(float, (tmp_path / f"{n}.txt").read_text().split()) for n in "bc")
    assert b1 <= c0 or c1 <= b0, "b and c ran at the same time although each takes the one slot"
