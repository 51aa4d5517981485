"""The search loop on synthetic CityScapes: budget, history, failures, SIGKILL resume."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from nasseg.data import prepare_dataset, synthesize_dataset
from nasseg.search import proxy as proxy_module
from nasseg.search import make_strategy
from nasseg.search.runner import run_search
from nasseg.serialization import safe_load
from stages.search import load_config

ROOT = Path(__file__).resolve().parents[1]

# A tiny but complete configuration: both proxy stages, validation, early stopping.
SEARCH = {
    "space": "wacv", "num_archs": 4, "devices": ["cpu"], "seed": 3,
    "data": {"train_split": "train", "val_split": "val", "resize_longer": True,
             "val_resize_side": 128, "val_crop_size": None},
    "strategy": {"name": "ppo"},
    "proxy": {"agg_size": 16, "repeats": 1, "aux_cell": False, "aux_weight": 0.0,
              "encoder_weights": "none", "val_batch_size": 4, "val_num_images": 6,
              "flops_input": [128, 256],
              "stage1": {"epochs": 2, "batch_size": 8, "crop_size": 64, "resize_side": 128,
                         "num_images": 16, "lr": 7.0e-3, "val_every": 1},
              "stage2": {"epochs": 1, "batch_size": 4, "crop_size": 64, "resize_side": 128,
                         "enc_optim": "adam", "enc_lr": 5.0e-4, "dec_lr": 2.0e-3}},
}


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cs")
    synthesize_dataset("cityscapes", root / "raw", num_images=24, seed=0, height=64, width=128)
    prepare_dataset("cityscapes", root / "raw", root / "prepared")
    return root / "prepared"


def write_params(path: Path, **changes) -> Path:
    section = json.loads(json.dumps(SEARCH))
    section.update(changes)
    path.write_text(yaml.safe_dump({"preset": "default", "search": {"wacv": {"default": section}}}))
    return path


def read_history(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]


def essence(records: list[dict]) -> list[tuple]:
    """What must not depend on interruptions: everything but wall-clock timings."""
    return [(r["id"], json.dumps(r["genotype"]), r["action"], r["reward"], r["status"],
             r["validations"], r["controller_step"], r["log_prob"]) for r in records]


def search_cmd(params: Path, data: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "stages.search", "--experiment", "wacv", "--data", str(data),
            "--out", str(out), "--params", str(params), "--no-progress"]


def test_search_evaluates_budget_and_writes_history(cityscapes, tmp_path):
    config = load_config(write_params(tmp_path / "p.yaml"), "wacv", [])
    summary = run_search(config, cityscapes, tmp_path / "run", progress=False)
    records = read_history(tmp_path / "run")
    assert [r["id"] for r in records] == [0, 1, 2, 3]
    for r in records:
        assert r["status"] in ("ok", "early_stopped"), r["reason"]
        assert 0.0 <= r["reward"] <= 1.0 and r["reward"] == r["metrics"]["reward"]
        assert r["params"] > 0 and r["flops"] > 0 and r["worker"] == "cpu"
        assert r["timings"]["total_s"] > 0 and r["validations"][0][0] == "s1e0"
    # Each proposal was made after the results before it had been learned from.
    assert [r["controller_step"] for r in records] == [0, 1, 2, 3]
    assert summary["num_evaluated"] == 4 and summary["best_reward"] == max(r["reward"] for r in records)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["top"][0]["reward"] == summary["best_reward"]
    ckpt = safe_load(tmp_path / "run" / "checkpoint.pt", "search checkpoint")   # plain data only
    assert ckpt["observed"] == [0, 1, 2, 3] and ckpt["pending"] == []
    # The controller learned from the rewards: compared with the initial controller, the
    # worst-rewarded architecture became less likely, and the best one more likely relative
    # to it (log p(best) - log p(worst) rose).
    initial = make_strategy(config.strategy, config.space, config.seed)
    trained = make_strategy(config.strategy, config.space, config.seed)
    trained.load_state_dict(ckpt["strategy"])
    ranked = sorted(records, key=lambda r: r["reward"])
    with torch.no_grad():
        change = {name: float(trained.controller.evaluate(a)[0] - initial.controller.evaluate(a)[0])
                  for name, a in (("worst", torch.tensor([ranked[0]["action"]])),
                                  ("best", torch.tensor([ranked[-1]["action"]])))}
    assert change["worst"] < -0.01 and change["best"] - change["worst"] > 0.01, change
    # Raising the budget and running again extends the same search.
    config = load_config(tmp_path / "p.yaml", "wacv", ["num_archs=5"])
    run_search(config, cityscapes, tmp_path / "run", progress=False)
    assert [r["id"] for r in read_history(tmp_path / "run")] == [0, 1, 2, 3, 4]
    # Changing what the search does is refused, with the way out.
    changed = load_config(tmp_path / "p.yaml", "wacv", ["num_archs=6", "proxy.agg_size=8"])
    with pytest.raises(ValueError, match="different parameters"):
        run_search(changed, cityscapes, tmp_path / "run", progress=False)


def test_sigkill_and_resume_match_an_uninterrupted_run(cityscapes, tmp_path):
    params = write_params(tmp_path / "p.yaml", num_archs=5)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    ref = tmp_path / "reference"
    subprocess.run(search_cmd(params, cityscapes, ref), cwd=ROOT, env=env, check=True, capture_output=True)

    out = tmp_path / "killed"

    def state_history() -> Path | None:   # the history grows in the run's state folder
        found = list((tmp_path / ".state" / "killed").glob("*/history.jsonl"))
        assert len(found) <= 1, found
        return found[0] if found else None

    for kill_after in (1, 3):   # killed twice, each time inside the next architecture
        proc = subprocess.Popen(search_cmd(params, cityscapes, out), cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 240
        while not ((h := state_history()) and len(h.read_bytes().splitlines()) >= kill_after):
            assert time.monotonic() < deadline and proc.poll() is None, "search ended before the kill"
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        # Declared outputs appear only when the search completes.
        assert not (out / "history.jsonl").exists() and not (out / "summary.json").exists()
    history = state_history()
    before = history.read_bytes()
    subprocess.run(search_cmd(params, cityscapes, out), cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=600)
    # Earlier lines are untouched by the resumed runs, and the output is the state's history.
    assert history.read_bytes().startswith(before[: before.rfind(b"\n") + 1])
    assert (out / "history.jsonl").read_bytes() == history.read_bytes()
    got, want = read_history(out), read_history(ref)
    assert [r["id"] for r in got] == list(range(5))
    assert essence(got) == essence(want)


def test_failures_are_recorded_not_fatal(cityscapes, tmp_path, monkeypatch):
    real_evaluate = proxy_module.ProxyEvaluator._evaluate
    calls = {"n": 0}

    def flaky(self, genotype, seed, es, timings, validations):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("Given groups=1, weight of size [8, 16, 1, 1], expected input to have 16 channels")
        if calls["n"] == 3:
            monkeypatch.setattr(self, "_loss", lambda *a: torch.tensor(float("nan"), requires_grad=True))
        else:
            monkeypatch.setattr(self, "_loss", proxy_module.ProxyEvaluator._loss.__get__(self))
        return real_evaluate(self, genotype, seed, es, timings, validations)

    monkeypatch.setattr(proxy_module.ProxyEvaluator, "_evaluate", flaky)
    config = load_config(write_params(tmp_path / "p.yaml", num_archs=4), "wacv",
                         ["proxy.failure_reward=-0.5"])
    summary = run_search(config, cityscapes, tmp_path / "run", progress=False)
    records = read_history(tmp_path / "run")
    assert [r["status"] for r in records][1:3] == ["error", "nan"]
    assert "expected input to have 16 channels" in records[1]["reason"]
    assert "loss became nan" in records[2]["reason"]
    assert records[1]["reward"] == records[2]["reward"] == -0.5
    assert records[1]["metrics"] == {} and records[0]["status"] in ("ok", "early_stopped")
    assert summary["num_evaluated"] == 4 and summary["status_counts"]["error"] == 1


def test_two_cpu_workers(cityscapes, tmp_path):
    config = load_config(write_params(tmp_path / "p.yaml", num_archs=4, devices=["cpu", "cpu"]), "wacv", [])
    run_search(config, cityscapes, tmp_path / "run", progress=False)
    records = read_history(tmp_path / "run")
    assert sorted(r["id"] for r in records) == [0, 1, 2, 3]
    assert {r["worker"] for r in records} <= {"cpu#0", "cpu#1"}


def test_bad_devices_and_params_fail_clearly(cityscapes, tmp_path):
    params = write_params(tmp_path / "p.yaml", devices=["cuda:7"])
    proc = subprocess.run(search_cmd(params, cityscapes, tmp_path / "run"), cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "cuda:7" in proc.stderr and "devices" in proc.stderr
    proc = subprocess.run(search_cmd(params, cityscapes, tmp_path / "run") + ["--set", "proxy.stage1.epoch=2"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert (f"{params}: search.wacv.default.proxy.stage1.epoch: unknown key (value: 2)" in proc.stderr
            and "epochs" in proc.stderr), proc.stderr


def state_folders(root: Path) -> dict[str, bytes]:
    """Each state folder under `root` and the bytes of its history."""
    return {p.parent.name: p.read_bytes() for p in root.glob("*/history.jsonl")}


def test_changed_parameters_start_fresh_and_reverting_finds_the_old_state(cityscapes, tmp_path):
    params = write_params(tmp_path / "p.yaml", num_archs=1)
    out, states = tmp_path / "run", tmp_path / ".state" / "run"
    cmd = search_cmd(params, cityscapes, out)
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=600)
    (first,) = state_folders(states).items()
    assert (out / "history.jsonl").read_bytes() == first[1]

    # Another parameter set: a fresh search in another folder; the first is untouched.
    subprocess.run(cmd + ["--set", "proxy.agg_size=8"], cwd=ROOT, check=True, capture_output=True,
                   timeout=600)
    folders = state_folders(states)
    assert len(folders) == 2 and folders[first[0]] == first[1]
    (second,) = set(folders) - {first[0]}
    assert (out / "history.jsonl").read_bytes() == folders[second]
    assert json.loads((states / second / "key.json").read_text())["params"] != \
        json.loads((states / first[0] / "key.json").read_text())["params"]

    # Back to the first parameters: their state is found; the search is complete, so the
    # outputs are published again without training anything.
    proc = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True, timeout=600)
    assert state_folders(states) == folders
    assert (out / "history.jsonl").read_bytes() == first[1]
    assert "resuming" in proc.stderr and "1 architectures recorded" in proc.stderr


def test_a_second_run_on_a_folder_in_use_is_refused(cityscapes, tmp_path):
    params = write_params(tmp_path / "p.yaml", num_archs=3)
    out = tmp_path / "run"
    first = subprocess.Popen(search_cmd(params, cityscapes, out), cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / ".state" / "run").glob("*/key.json")):
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.05)
        started = time.monotonic()
        second = subprocess.run(search_cmd(params, cityscapes, out), cwd=ROOT, capture_output=True,
                                text=True, timeout=60)
        assert time.monotonic() - started < 10
        assert second.returncode == 2
        assert f"in use by PID {first.pid}" in second.stderr and "lock file" in second.stderr
        assert first.wait(timeout=600) == 0
    finally:
        first.kill()
    ids = [r["id"] for r in read_history(out)]
    assert ids == [0, 1, 2]
