"""The pipeline contract with the real tools, on a scratch copy with the `ci` preset.

One scratch repository runs through the user's second use of the project, in order:
a Snakemake run of the data and search stages, brought into DVC (`dvc commit`) and
committed as the baseline; code edits that must (segmentation metrics) and must not
(the VOC format) make the WACV search out of date in both tools; `dvc exp run -S` of a
search parameter with `dvc metrics/params/plots diff` and `dvc exp show` showing both
revisions; the same key edited in params.yaml and run with Snakemake; a Snakemake run
killed with SIGKILL in the middle of the search and restarted, which resumes.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import BIN, cli_env, run_cli, scratch_copy, set_dotted

pytestmark = pytest.mark.slow

SNAKEMAKE = [str(BIN / "snakemake"), "--cores", "2"]
DVC = str(BIN / "dvc")
SEARCH_OUT = "runs/search/wacv/summary.json"
STATES = Path("runs/search/.state/wacv")


def set_param(root: Path, key: str, value) -> None:
    """Edit one dotted key of params.yaml (as a user would; comments are lost, which is fine here)."""
    path = root / "params.yaml"
    params = yaml.safe_load(path.read_text())
    set_dotted(params, key, value)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def snakemake_jobs(root: Path, target: str = SEARCH_OUT) -> set[str]:
    out = run_cli(SNAKEMAKE + ["-n", target], root).stdout
    return {line.split()[1].rstrip(":") for line in out.splitlines()
            if line.startswith(("rule ", "localrule "))}


def dvc_stale(root: Path) -> set[str]:
    status = json.loads(run_cli([DVC, "status", "--json", "search_wacv", "--with-deps"], root).stdout)
    return set(status)


def states(root: Path) -> dict[str, list[dict]]:
    """The search state folders and their histories."""
    return {p.parent.name: [json.loads(line) for line in p.read_text().splitlines()]
            for p in (root / STATES).glob("*/history.jsonl")}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = scratch_copy(tmp_path_factory.mktemp("pipeline"))
    set_param(root, "preset", "ci")
    run_cli(SNAKEMAKE + [SEARCH_OUT], root)
    run_cli([DVC, "commit", "--force", "--with-deps", "search_wacv"], root)
    run_cli(["git", "add", "-A"], root)
    run_cli(["git", "commit", "-qm", "baseline"], root)
    return root


def append_comment(root: Path, rel: str) -> bytes:
    before = (root / rel).read_bytes()
    (root / rel).write_bytes(before + b"# an edit\n")
    return before


def test_baseline_is_up_to_date_in_both_tools(repo):
    assert snakemake_jobs(repo) == set()
    assert dvc_stale(repo) == set()
    # The metrics and plots are committed to git, where DVC reads them for any revision.
    tracked = run_cli(["git", "ls-files", "reports"], repo).stdout.split()
    assert tracked == ["reports/wacv/search/metrics.json", "reports/wacv/search/rewards.csv"]
    assert "runs/" not in run_cli(["git", "ls-files"], repo).stdout


@pytest.mark.parametrize("edited, stale", [
    ("nasseg/data/formats/voc.py", set()),
    ("nasseg/metrics/segmentation.py", {"search_wacv"}),
])
def test_code_edits_invalidate_exactly_the_stages_that_import_them(repo, edited, stale):
    before = append_comment(repo, edited)
    try:
        assert snakemake_jobs(repo) == stale
        assert dvc_stale(repo) == stale
    finally:
        (repo / edited).write_bytes(before)


def test_exp_run_then_diffs_show_both_revisions(repo):
    key = "search.wacv.ci.proxy.agg_size"
    run_cli([DVC, "exp", "run", "search_wacv", "--set-param", f"{key}=8"], repo)
    metrics = json.loads(run_cli([DVC, "metrics", "diff", "--json"], repo).stdout)
    best = metrics["reports/wacv/search/metrics.json"]["best_reward"]
    assert isinstance(best["old"], float) and isinstance(best["new"], float)
    params = json.loads(run_cli([DVC, "params", "diff", "--json"], repo).stdout)
    assert params["params.yaml"] == {key: {"old": 16, "new": 8, "diff": -8}}
    plots = json.loads(run_cli([DVC, "plots", "diff", "--json"], repo).stdout)
    (rewards,) = plots["data"]["Search rewards per architecture (WACV)"]
    assert set(rewards["revisions"]) == {"HEAD", "workspace"}
    points = rewards["content"]["data"]["values"]
    assert {(p["rev"], p["field"]) for p in points} == {
        (rev, field) for rev in ("HEAD", "workspace") for field in ("reward", "best_so_far")}
    # (the training curves' files do not exist: this repository ran the search only)
    assert not [e for e in plots.get("errors", []) if e["source"].startswith("reports/wacv/search/")], \
        plots["errors"]
    shown = json.loads(run_cli([DVC, "exp", "show", "--json"], repo).stdout)
    text = json.dumps(shown)
    assert '"agg_size": 8' in text and '"agg_size": 16' in text and "best_reward" in text
    # Two parameter sets, two state folders.
    assert len(states(repo)) == 2


def test_edit_in_params_yaml_reruns_with_snakemake(repo):
    set_param(repo, "search.wacv.ci.proxy.agg_size", 12)
    assert snakemake_jobs(repo) == {"search_wacv"}
    run_cli(SNAKEMAKE + [SEARCH_OUT], repo)
    assert len(states(repo)) == 3
    assert snakemake_jobs(repo) == set()


def test_snakemake_killed_mid_search_resumes(repo):
    set_param(repo, "search.wacv.ci.num_archs", 3)
    set_param(repo, "search.wacv.ci.proxy.agg_size", 10)
    known = set(states(repo))
    proc = subprocess.Popen(SNAKEMAKE + [SEARCH_OUT], cwd=repo, env=cli_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            new = {k: v for k, v in states(repo).items() if k not in known}
            if new and len(next(iter(new.values()))) >= 1:
                break
            assert time.monotonic() < deadline and proc.poll() is None, "ended before the kill"
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    (folder, before), = new.items()
    assert not (repo / SEARCH_OUT).exists()   # outputs only on completion
    run_cli(SNAKEMAKE + ["--unlock"], repo)   # Snakemake's own lock outlives a SIGKILL
    run_cli(SNAKEMAKE + [SEARCH_OUT], repo)
    after = states(repo)[folder]
    assert after[: len(before)] == before     # resumed: earlier records kept as they were
    assert [r["id"] for r in after] == [0, 1, 2]
    published = [json.loads(line) for line in (repo / "runs/search/wacv/history.jsonl").read_text().splitlines()]
    assert published == after
