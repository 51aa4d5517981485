"""`reproduce_wacv` end to end with the real tools, on a scratch copy with the `ci` preset.

The user's first run, as the README's quick start has it (on the `ci` preset, to fit in
CI): every stage from the synthetic stand-ins to the report; running it again does
nothing; DVC agrees (the Snakefile records the run in dvc.lock on success); then one
training parameter changes, and exactly the trainings it belongs to and what follows
them are out of date, in both tools; `dvc repro` runs them, and after the documented
sync (`python workflow/pipeline.py --sync-snakemake report_wacv`) Snakemake has nothing
to do either.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import BIN, run_cli, scratch_copy

pytestmark = pytest.mark.slow

SNAKEMAKE = [str(BIN / "snakemake"), "--cores", "2"]
DVC = str(BIN / "dvc")


def planned(root: Path, target: str = "reproduce_wacv") -> set[str]:
    out = run_cli(SNAKEMAKE + ["-n", target], root).stdout
    return {line.split()[1].rstrip(":") for line in out.splitlines()
            if line.startswith(("rule ", "localrule "))} - {target}


def dvc_stale(root: Path, stage: str = "report_wacv") -> set[str]:
    return set(json.loads(run_cli([DVC, "status", "--json", stage, "--with-deps"], root).stdout))


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = scratch_copy(tmp_path_factory.mktemp("reproduce"))
    run_cli([str(BIN / "python"), "workflow/pipeline.py", "--preset", "ci"], root)
    run_cli(SNAKEMAKE + ["reproduce_wacv"], root, timeout=900)
    return root


def test_reproduce_writes_the_report_and_every_stage_output(repo):
    for name in ("report.html", "report.md"):
        assert (repo / "reports/wacv" / name).stat().st_size > 1000
    html = (repo / "reports/wacv/report.html").read_text()
    assert "<img" in html and not re.search(r'<img[^>]+src="(?!data:)', html)   # self-contained
    latency = json.loads((repo / "reports/wacv/benchmark/latency.json").read_text())
    assert {m["label"] for m in latency["models"]} == {
        f"{ds}/{slot}" for ds in ("cityscapes", "camvid") for slot in ("1", "published", "random")}
    for ds in ("cityscapes", "camvid"):
        for slot in ("1", "published", "random"):
            assert (repo / f"runs/train/wacv/{ds}/{slot}/best.pt").is_file()
            assert json.loads((repo / f"reports/wacv/evaluate/{ds}/{slot}/metrics.json").read_text())["miou"] >= 0


def test_a_second_run_does_nothing_and_dvc_agrees(repo):
    assert planned(repo) == set()
    assert dvc_stale(repo) == set()
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert {"search_wacv", "train_wacv_camvid_1", "benchmark_wacv", "report_wacv"} <= set(lock)


def test_a_training_parameter_reruns_only_training_and_what_follows_in_both_tools(repo):
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    epochs = params["train"]["wacv"]["camvid"]["ci"]["epochs"]
    params["train"]["wacv"]["camvid"]["ci"]["epochs"] = epochs + 1
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    trainings = {f"train_wacv_camvid_{slot}" for slot in ("1", "published", "random")}
    expected = trainings | {f"evaluate_wacv_camvid_{slot}" for slot in ("1", "published", "random")} | {
        "benchmark_wacv", "report_wacv"}
    assert planned(repo) == expected
    # DVC's status names the stages whose own inputs changed; its repro then follows the graph.
    assert dvc_stale(repo) == trainings
    sync = [str(BIN / "python"), "workflow/pipeline.py", "--sync-snakemake", "report_wacv"]
    refused = run_cli(sync, repo, ok=False)               # it would hide the work still to do
    assert refused.returncode != 0 and "are not up to date" in refused.stderr
    repro = run_cli([DVC, "repro", "report_wacv"], repo, timeout=900)
    assert set(re.findall(r"Running stage '([^']+)'", repro.stdout + repro.stderr)) == expected
    assert dvc_stale(repo) == set()
    # Snakemake's provenance still holds the old parameters until the documented sync records
    # what DVC ran; then Snakemake has nothing to do either.
    assert planned(repo) == trainings | expected
    run_cli(sync, repo)
    assert planned(repo) == set()
    assert dvc_stale(repo) == set()
    assert json.loads((repo / "reports/wacv/train/camvid/1/metrics.json").read_text())["epochs"] == epochs + 1
