"""The search loop on synthetic CityScapes: budget, history, failures, SIGKILL resume."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import pytest
import torch
import yaml
from torch import nn

from nasseg.models import Segmenter
from nasseg.search import make_strategy
from nasseg.search.failures import SearchAborted
from nasseg.search.runner import run_search
from nasseg.serialization import safe_load
from stages.search import load_config

from conftest import prepared_stand_in

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
    return prepared_stand_in(tmp_path_factory, "cityscapes", 24, 64, 128)


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


class InjectFaults:
    """An ``on_build`` hook: the n-th network built (from 1) gets the fault listed for n."""

    def __init__(self, faults: dict[int, Callable[[Segmenter], None]]):
        self.faults = faults
        self.built = 0

    def __call__(self, model: Segmenter) -> None:
        self.built += 1
        if self.built in self.faults:
            self.faults[self.built](model)


def mis_sized_classifier(model: Segmenter) -> None:
    """A real shape error: the classifier expects 8 more channels than it gets."""
    clf = model.decoder.conv_clf
    model.decoder.conv_clf = nn.Conv2d(clf.in_channels + 8, clf.out_channels, 3, padding=1)


def nan_weights(model: Segmenter) -> None:
    """NaN logits, so the first training loss is NaN."""
    with torch.no_grad():
        model.decoder.conv_clf.weight.fill_(float("nan"))


class OutOfMemoryWhenRun(nn.Module):
    """Wraps a module; runs out of memory on a real device (FLOP counting on meta still works)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "meta":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return self.inner(x)


def out_of_memory(model: Segmenter) -> None:
    model.decoder.pre_clf = OutOfMemoryWhenRun(model.decoder.pre_clf)


def test_architecture_failures_are_recorded_not_fatal(cityscapes, tmp_path):
    config = load_config(write_params(tmp_path / "p.yaml", num_archs=5), "wacv",
                         ["proxy.failure_reward=-0.5"])
    hook = InjectFaults({2: mis_sized_classifier, 3: nan_weights, 4: out_of_memory})
    summary = run_search(config, cityscapes, tmp_path / "run", progress=False, on_build=hook)
    records = read_history(tmp_path / "run")
    assert [r["status"] for r in records][1:4] == ["error", "nan", "oom"]
    assert records[1]["reason"].startswith("RuntimeError: ") and "channel" in records[1]["reason"]
    assert "loss became nan in stage 1 epoch 0" in records[2]["reason"]
    assert "OutOfMemoryError: CUDA out of memory" in records[3]["reason"]
    for r in records[1:4]:
        assert r["reward"] == -0.5 and r["metrics"] == {}
    for r in (records[0], records[4]):
        assert r["status"] in ("ok", "early_stopped"), r["reason"]
    assert summary["num_evaluated"] == 5
    assert summary["status_counts"]["error"] == summary["status_counts"]["nan"] == summary["status_counts"]["oom"] == 1


def test_max_consecutive_failures_stops_the_search_and_a_rerun_resumes(cityscapes, tmp_path):
    config = load_config(write_params(tmp_path / "p.yaml", num_archs=4, max_consecutive_failures=2), "wacv", [])
    # Architectures 1 and 2 (ids 0, 1) fail: the search stops after the second.
    hook = InjectFaults({1: nan_weights, 2: nan_weights, 3: nan_weights})
    with pytest.raises(SearchAborted, match=r"the last 2 architectures all failed \(2 nan;.*max_consecutive_failures"):
        run_search(config, cityscapes, tmp_path / "run", progress=False, on_build=hook)
    assert hook.built == 2
    failed = read_history(tmp_path / "run")
    assert [(r["id"], r["status"]) for r in failed] == [(0, "nan"), (1, "nan")]
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert ckpt["observed"] == [0, 1] and ckpt["pending"] == []
    assert not (tmp_path / "run" / "summary.json").exists()
    # The cause fixed, the same search resumes: nothing recorded is lost or repeated.
    summary = run_search(config, cityscapes, tmp_path / "run", progress=False)
    records = read_history(tmp_path / "run")
    assert records[:2] == failed and [r["id"] for r in records] == [0, 1, 2, 3]
    assert all(r["status"] in ("ok", "early_stopped") for r in records[2:]), [r["reason"] for r in records]
    assert summary["status_counts"]["nan"] == 2


def copy_with_bad_label(prepared: Path, dst: Path, split: str) -> tuple[Path, bytes]:
    """A copy of `prepared` whose first `split` label holds 40 (CityScapes has 19 classes)."""
    shutil.copytree(prepared, dst)
    label = dst / (dst / f"{split}.lst").read_text().splitlines()[0].split("\t")[1]
    original = label.read_bytes()
    array = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)
    array[3, 5] = 40
    cv2.imwrite(str(label), array)
    return label, original


@pytest.mark.parametrize("split", ["val", "train"])
def test_a_label_outside_the_classes_stops_the_search_naming_the_file(cityscapes, tmp_path, split):
    data = tmp_path / "data"
    label, original = copy_with_bad_label(cityscapes, data, split)
    params = write_params(tmp_path / "p.yaml", num_archs=1)
    proc = subprocess.run(search_cmd(params, data, tmp_path / "run"), cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr
    assert f"error: {label}: label values outside the classes: 40" in proc.stderr
    assert "Traceback" not in proc.stderr
    # Stopped before the first architecture: nothing recorded, no output published.
    assert not list((tmp_path / ".state" / "run").glob("*/history.jsonl"))
    assert not (tmp_path / "run" / "history.jsonl").exists()
    if split == "val":   # the file fixed, the same command runs the search
        label.write_bytes(original)
        subprocess.run(search_cmd(params, data, tmp_path / "run"), cwd=ROOT, check=True, capture_output=True,
                       timeout=600)
        (record,) = read_history(tmp_path / "run")
        assert record["status"] in ("ok", "early_stopped"), record["reason"]


def test_two_cpu_workers(cityscapes, tmp_path):
    config = load_config(write_params(tmp_path / "p.yaml", num_archs=4, devices=["cpu", "cpu"]), "wacv", [])
    run_search(config, cityscapes, tmp_path / "run", progress=False)
    records = read_history(tmp_path / "run")
    assert sorted(r["id"] for r in records) == [0, 1, 2, 3]
    assert {r["worker"] for r in records} <= {"cpu#0", "cpu#1"}
    for r in records:
        assert r["status"] in ("ok", "early_stopped"), r["reason"]


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


def a_bug(model: Segmenter) -> None:
    raise TypeError("a bug, not the architecture's failure")


def test_an_error_in_a_worker_process_stops_the_search(cityscapes, tmp_path):
    config = load_config(write_params(tmp_path / "p.yaml", num_archs=4, devices=["cpu", "cpu"]), "wacv", [])
    with pytest.raises(SearchAborted, match=r"worker cpu#[01], architecture [01]: TypeError: a bug, not"):
        run_search(config, cityscapes, tmp_path / "run", progress=False, on_build=a_bug)
    assert not (tmp_path / "run" / "history.jsonl").exists()
    # The two proposals in flight stay pending: a rerun trains them again.
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)
    assert sorted(p["id"] for p in ckpt["pending"]) == [0, 1] and ckpt["observed"] == []


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
