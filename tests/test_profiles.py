"""Scale-out: the Snakemake profiles, `snakemake --lint`, the rules' software environment
and the DVC remote (docs/scale-out.md).

The Snakemake runs are dry runs on a scratch copy, except one run through the real SLURM
executor plugin with a fake `sbatch` on the PATH: it records the submission and refuses
the job, so the exact sbatch options of a GPU job are checked without a cluster.
workflow/profiles/default is Snakemake's workflow profile: it is loaded on every run, the
cluster ones included, and its keys win over the cluster profile's; several tests below
check that it does not spoil the cluster's requests.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from conftest import BIN, ROOT, cli_env, run_cli, scratch_copy, set_dotted

sys.path.insert(0, str(ROOT / "workflow"))
import pipeline  # noqa: E402  (workflow/pipeline.py)

SNAKEMAKE = str(BIN / "snakemake")
SLURM = ["--profile", "workflow/profiles/slurm"]
#: the SLURM executor plugin needs Python 3.11 (pyproject's `cluster` and `test` extras)
needs_plugin = pytest.mark.skipif(sys.version_info < (3, 11),
                                  reason="snakemake-executor-plugin-slurm needs Python 3.11")


def planned_jobs(output: str) -> dict[str, dict[str, str]]:
    """The jobs of a dry run's output and their resources, by rule name."""
    jobs: dict[str, dict[str, str]] = {}
    rule = None
    for line in output.splitlines():
        if m := re.fullmatch(r"(?:local)?rule (\w+):", line):
            rule = m.group(1)
            jobs[rule] = {}
        elif rule and line.startswith("    resources: "):
            jobs[rule] = dict(item.split("=", 1) for item in line.removeprefix("    resources: ").split(", "))
    return jobs


def wacv_trainings(root: Path) -> set[str]:
    """The training rules of the WACV chain for the parameters of the checkout at `root`."""
    config = yaml.safe_load((root / "params.yaml").read_text())
    return {f"train_wacv_{ds}_{slot}" for ds in ("cityscapes", "camvid") for slot in pipeline.slots(config, "wacv")}


def set_params(root: Path, values: dict[str, object]) -> None:
    path = root / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for key, value in values.items():
        set_dotted(params, key, value)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return scratch_copy(tmp_path_factory.mktemp("profiles"))


#: the paper preset, with the WACV trainings on `cuda` (so that they hold a GPU each)
CUDA_TRAINING = {f"train.wacv.{ds}.paper.device": "cuda" for ds in ("cityscapes", "camvid")}


@pytest.fixture(scope="module")
def paper_repo(tmp_path_factory) -> Path:
    root = scratch_copy(tmp_path_factory.mktemp("paper"))
    set_params(root, {"preset": "paper", **CUDA_TRAINING})
    return root


# -- snakemake --lint --------------------------------------------------------------------

@pytest.mark.slow
def test_lint_is_clean(repo):
    proc = run_cli([SNAKEMAKE, "--lint"], repo, ok=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Lints for" not in proc.stdout + proc.stderr
    # The same as JSON (through the API: this Snakemake's CLI prints text for `--lint json`).
    probe = ("import sys; from snakemake.api import OutputSettings, ResourceSettings, SnakemakeApi\n"
             "with SnakemakeApi(OutputSettings(quiet=True)) as api:\n"
             "    api.workflow(resource_settings=ResourceSettings(cores=1),\n"
             "                 snakefile=__import__('pathlib').Path('workflow/Snakefile')).lint(json=True)\n")
    out = run_cli([sys.executable, "-c", probe], repo).stdout
    lints = json.loads(out[out.index("{"):])
    assert lints == {"snakefiles": [], "rules": []}


def test_conda_environment_lists_the_project_dependencies():
    """workflow/envs/nasseg.yaml (every rule's `conda:`) installs pyproject's dependencies,
    less the tools that run the pipeline, which no stage imports."""
    env = yaml.safe_load((ROOT / "workflow/envs/nasseg.yaml").read_text())
    (pip,) = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    runners = {"snakemake", "dvc"}
    assert sorted(map(str, map(Requirement, pip))) == sorted(
        str(Requirement(r)) for r in project if Requirement(r).name not in runners)
    assert {"pip", "c-compiler"} <= {d.split(">")[0].split("=")[0] for d in env["dependencies"]
                                     if isinstance(d, str)}


# -- the workstation profile --------------------------------------------------------------

@pytest.mark.slow
def test_default_profile_dry_run(repo):
    # No --cores: the profile gives it.
    proc = run_cli([SNAKEMAKE, "-n", "reproduce_wacv"], repo)
    assert "workflow specific profile workflow/profiles/default" in proc.stderr
    jobs = planned_jobs(proc.stdout)
    assert {"build_ext", "search_wacv", "rank_wacv", "reproduce_wacv"} <= set(jobs)
    # The default preset uses no GPU.
    assert all(res.get("gpu", "0") == "0" and res.get("gpu_jobs", "0") == "0" for res in jobs.values())
    # The latency benchmark takes the whole machine share (the profile allows 100): it runs alone.
    assert jobs["benchmark_wacv"]["machine_share"] == "100"
    assert {res["machine_share"] for name, res in jobs.items() if name.startswith(("train_", "evaluate_"))} == {"1"}


@pytest.mark.slow
def test_default_profile_paper_preset_holds_the_gpus(paper_repo):
    jobs = planned_jobs(run_cli([SNAKEMAKE, "-n", "reproduce_wacv"], paper_repo).stdout)
    assert jobs["search_wacv"]["gpu"] == "2" and jobs["search_wacv"]["gpu_jobs"] == "1"
    trainings = {name for name in jobs if name.startswith("train_wacv_")}
    assert trainings == wacv_trainings(paper_repo)
    assert all(jobs[t]["gpu"] == "1" and jobs[t]["gpu_jobs"] == "1" for t in trainings)
    assert jobs["prepare_cityscapes"]["gpu_jobs"] == "0"


@pytest.mark.slow
def test_default_profile_runs_one_gpu_job_at_a_time(tmp_path):
    """The profile's `gpu_jobs=1` with the Snakefile's local scope: two GPU jobs never
    overlap on one machine, a CPU job runs beside them. (A toy workflow: the stages are
    too slow to time here.)"""
    profile = tmp_path / "profiles/default"
    profile.mkdir(parents=True)
    profile.joinpath("config.yaml").write_text((ROOT / "workflow/profiles/default/config.yaml").read_text())
    scopes = re.search(r"^resource_scopes:\n(    .*\n)+", (ROOT / "workflow/Snakefile").read_text(), re.M)
    assert scopes and "gpu_jobs" in scopes.group(0)
    (tmp_path / "Snakefile").write_text(scopes.group(0) + "\n" + "".join(
        f"rule {name}:\n    output: '{name}.txt'\n    resources: gpu={gpu}, gpu_jobs={int(gpu > 0)}\n"
        f"    shell: 'date +%s.%N > {{output}}; sleep 2; date +%s.%N >> {{output}}'\n"
        for name, gpu in (("a", 1), ("b", 2), ("c", 0))))
    run_cli([SNAKEMAKE, "--cores", "3", "a.txt", "b.txt", "c.txt"], tmp_path)
    span = {n: [float(t) for t in (tmp_path / f"{n}.txt").read_text().split()] for n in "abc"}
    assert span["a"][1] <= span["b"][0] or span["b"][1] <= span["a"][0], span
    assert span["c"][0] < max(span["a"][1], span["b"][1]) and span["c"][1] > min(span["a"][0], span["b"][0]), span


# -- the SLURM profile -------------------------------------------------------------------

@needs_plugin
@pytest.mark.slow
def test_slurm_dry_run_plans_gpu_requests(paper_repo):
    """`snakemake -n --profile workflow/profiles/slurm reproduce_wacv` with the paper preset:
    the search asks for its two devices, each training of a slot is its own job with one
    GPU; the workflow profile loaded beside it caps nothing."""
    proc = run_cli([SNAKEMAKE, "-n", *SLURM, "reproduce_wacv"], paper_repo)
    assert "Using profiles workflow/profiles/slurm and workflow specific profile" in proc.stderr
    jobs = planned_jobs(proc.stdout)
    search = jobs["search_wacv"]
    assert (search["gpu"], search["runtime"], search["nodes"], search["cpus_per_gpu"]) == ("2", "2880", "1", "8")
    trainings = {name for name in jobs if name.startswith("train_wacv_")}
    assert trainings == wacv_trainings(paper_repo)
    for name in trainings:
        assert (jobs[name]["gpu"], jobs[name]["runtime"]) == ("1", "720"), name
    for name in ("prepare_cityscapes", "rank_wacv", "evaluate_wacv_cityscapes_1"):
        assert jobs[name]["gpu"] == "0" and "tasks" not in jobs[name], name
    assert all(res.get("mem_mb_per_cpu") == "4000" for name, res in jobs.items() if name != "reproduce_wacv")


@needs_plugin
@pytest.mark.slow
def test_slurm_dry_run_default_preset(repo):
    jobs = planned_jobs(run_cli([SNAKEMAKE, "-n", *SLURM, "reproduce_wacv"], repo).stdout)
    assert "search_wacv" in jobs and all(res.get("gpu", "0") == "0" for res in jobs.values())


FAKE_SLURM = {
    # records the submission and refuses it: the job fails at once, nothing runs
    "sbatch": 'printf "%s\\n" "$*" >> "$FAKE_SLURM_LOG"; echo "fake sbatch: recorded" >&2; exit 1',
    # the rest answer nothing, so that no real cluster is ever asked
    **{cmd: "exit 0" for cmd in ("sacct", "squeue", "scontrol", "sinfo", "scancel", "sacctmgr", "sshare")},
}


@needs_plugin
@pytest.mark.slow
def test_slurm_submissions(tmp_path):
    """The sbatch options the plugin builds from the profile: GPU jobs get --gpus=N, CPUs per
    GPU, one node, the GPU partition, no task count per GPU (one task: torchrun starts a
    process per GPU); a CPU-only job one task on the CPU partition."""
    paper_repo = scratch_copy(tmp_path / "repo")
    set_params(paper_repo, {"preset": "paper", **CUDA_TRAINING})
    fake = tmp_path / "bin"
    fake.mkdir()
    for name, body in FAKE_SLURM.items():
        fake.joinpath(name).write_text(f"#!/bin/sh\n{body}\n")
        fake.joinpath(name).chmod(0o755)
    log = tmp_path / "sbatch.log"
    # Each job's inputs, as if the stages before it had run.
    for d in ("data/prepared/cityscapes", "data/raw/camvid", "reports/wacv/rank/top", "build"):
        (paper_repo / d).mkdir(parents=True, exist_ok=True)
    (paper_repo / "data/prepared/cityscapes/x").touch()
    (paper_repo / "data/raw/camvid/SYNTHETIC.json").write_text("{}")
    (paper_repo / "reports/wacv/rank/top/1.json").write_text("{}")
    (paper_repo / "build/ext.json").write_text("{}")
    rules = {"search_wacv": "runs/search/wacv/summary.json",
             "train_wacv_cityscapes_1": "runs/train/wacv/cityscapes/1/best.pt",
             "prepare_camvid": "data/prepared/camvid"}
    env = cli_env(FAKE_SLURM_LOG=str(log))
    env["PATH"] = f"{fake}{os.pathsep}{env['PATH']}"
    proc = subprocess.run([SNAKEMAKE, *rules.values(), *SLURM, "--allowed-rules", *rules, "--retries", "0",
                           "--slurm-init-seconds-before-status-checks", "1"],
                          cwd=paper_repo, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and log.is_file(), proc.stdout + proc.stderr
    calls = {}
    for line in log.read_text().splitlines():
        args = shlex.split(line.split(" --wrap=", 1)[0])
        calls[args[args.index("--comment") + 1].removeprefix("rule_")] = args
    assert set(calls) == set(rules)

    search = calls["search_wacv"]
    for option in ("--gpus=2", "--cpus-per-gpu=8", "--nodes=1"):
        assert option in search, search
    assert search[search.index("-p") + 1] == "gpu" and search[search.index("-t") + 1] == "2880"
    assert search[search.index("--mem-per-cpu") + 1] == "4000"
    train = calls["train_wacv_cityscapes_1"]
    assert "--gpus=1" in train and train[train.index("-t") + 1] == "720" and train[train.index("-p") + 1] == "gpu"
    for args in (search, train):
        assert not any(a.startswith(("--ntasks", "--cpus-per-task")) for a in args), args
    prepare = calls["prepare_camvid"]
    assert prepare[prepare.index("-p") + 1] == "cpu"
    assert "--ntasks=1" in prepare and "--cpus-per-task=1" in prepare
    assert not any(a.startswith(("--gpus", "--gres")) for a in prepare), prepare


# -- DVC remote --------------------------------------------------------------------------

REMOTE = Path(".local/share/nasseg/dvc-remote")


def test_dvc_default_remote_is_a_folder_in_the_home():
    """The committed default remote: `local`, a folder under the home directory, so it is the
    same for every clone of the user's, wherever it lies, and outside every checkout."""
    from dvc.config import Config

    config = Config(dvc_dir=str(ROOT / ".dvc")).read("repo")
    assert config["core"]["remote"] == "local"
    assert config["remote"]["local"]["url"] == str(Path.home() / REMOTE)


@pytest.mark.slow
def test_dvc_push_and_pull_through_the_default_remote(tmp_path):
    home = tmp_path / "home"   # where `~` of the remote's url points, for this test only
    home.mkdir()
    first = scratch_copy(tmp_path / "first")
    dvc = [str(BIN / "dvc")]
    (first / "data").mkdir()
    (first / "data/blob.bin").write_bytes(os.urandom(4096))
    run_cli(dvc + ["add", "data/blob.bin"], first, HOME=str(home))
    run_cli(["git", "add", "-A"], first)
    run_cli(["git", "commit", "-qm", "data"], first)
    run_cli(dvc + ["push"], first, HOME=str(home))
    assert any(p.is_file() for p in (home / REMOTE).rglob("*"))

    second = tmp_path / "second"
    run_cli(["git", "clone", "-q", str(first), str(second)], tmp_path)
    assert not (second / "data/blob.bin").exists()
    # (a bare `dvc pull` would also name the outputs of the stages that never ran here)
    run_cli(dvc + ["pull", "data/blob.bin"], second, HOME=str(home))
    assert (second / "data/blob.bin").read_bytes() == (first / "data/blob.bin").read_bytes()
