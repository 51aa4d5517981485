"""Full training (nasseg.training, stages/train.py) on tiny synthetic data: it learns, a run
killed by SIGKILL resumes to the same result, two DDP processes agree with one, depth trains,
the data order is a function of (seed, epoch, step), and bad inputs are named errors."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import nasseg
from nasseg.checkpoint import load_model, read_model_file
from nasseg.data import PreparedDataset
from nasseg.evaluation import evaluate
from nasseg.serialization import safe_load
from nasseg.training import TrainConfig, run_training
from nasseg.training.data import (BatchPlan, SeededSamples, epoch_order, make_train_loader, training_sets,
                                  val_batches)
from stages.train import main as train_main

from conftest import prepared_stand_in

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]

# A tiny but complete training: random scale/crop, two Adam optimisers, poly decay,
# validation every epoch on whole images, a step checkpoint every 2 steps.
BASE = {
    "train_split": "train", "val_split": "val", "epochs": 6, "batch_size": 4, "crop_size": 64,
    "resize_side": 128, "scale_range": [0.7, 1.4], "resize_longer": True,
    "enc_optim": "adam", "enc_lr": 3.0e-3, "dec_optim": "adam", "dec_lr": 3.0e-3,
    "agg_size": 16, "repeats": 1, "encoder_weights": "none", "val_every": 1, "val_batch_size": 4,
    "num_workers": 0, "checkpoint_every_steps": 2, "seed": 0,
}


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory) -> Path:
    return prepared_stand_in(tmp_path_factory, "cityscapes", 24, 64, 128)


@pytest.fixture(scope="module")
def nyud(tmp_path_factory) -> Path:
    return prepared_stand_in(tmp_path_factory, "nyud", 16, 48, 64)


def write_params(path: Path, experiment: str = "wacv", dataset: str = "cityscapes", **changes) -> Path:
    section = {**BASE, **changes}
    path.write_text(yaml.safe_dump({"preset": "default", "train": {experiment: {dataset: {"default": section}}}}))
    return path


def train_cmd(params: Path, data: Path, out: Path, genotype: str = "wacv/arch0", experiment: str = "wacv",
              dataset: str = "cityscapes") -> list[str]:
    return ["-m", "stages.train", "--experiment", experiment, "--dataset", dataset, "--genotype", genotype,
            "--data", str(data), "--out", str(out), "--params", str(params), "--no-progress"]


def cli_env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def untrained_score(config: TrainConfig, genotype: str, data: Path, num_classes: int, task: str) -> dict:
    """The scores of the network as training starts (same seed, same initialisation)."""
    torch.manual_seed(config.seed)
    space = genotype.split("/")[0]
    model = nasseg.build_segmenter(nasseg.published_genotype(space, genotype.split("/")[1]), num_classes,
                                   agg_size=config.agg_size, repeats=config.repeats)
    _, val = training_sets(data, config)
    return evaluate(model, val_batches(val, config.val_batch_size), task=task, num_classes=num_classes,
                    ignore_index=val.ignore_index)


def read_tsv(path: Path) -> list[dict[str, str]]:
    header, *rows = [line.split("\t") for line in path.read_text().splitlines()]
    return [dict(zip(header, r)) for r in rows]


def states(model_file: Path) -> dict[str, torch.Tensor]:
    return read_model_file(model_file)["state_dict"]


# -- the data plan ------------------------------------------------------------------------

def test_batch_plan_resumes_exactly_and_splits_over_processes():
    full = list(BatchPlan(10, 3, seed=5, epochs=3))
    assert len(full) == 9 and all(len(b) == 3 for b in full)       # 10 // 3 steps, last batch dropped
    for epoch in range(3):                                         # each epoch: its own permutation
        assert [i for b in full[3 * epoch:3 * epoch + 3] for _, i in b] == epoch_order(10, 5, epoch)[:9]
    assert epoch_order(10, 5, 0) != epoch_order(10, 5, 1) != epoch_order(10, 6, 1)
    # From (epoch 1, step 2): exactly the batches not yet consumed.
    assert list(BatchPlan(10, 3, seed=5, epochs=3, start_epoch=1, start_step=2)) == full[5:]
    # Two processes' shares are the one-process batch, split in order.
    shares = [list(BatchPlan(10, 3, seed=5, epochs=3, rank=r, world=2)) for r in (0, 1)]
    assert [a + b for a, b in zip(*shares)] == full and all(len(b) == 1 for b in shares[0])


def test_augmentation_depends_on_the_key_only(cityscapes):
    config = TrainConfig(**BASE)
    train, _ = training_sets(cityscapes, config)
    samples = SeededSamples(train, seed=0)
    image, target = samples[(2, 5)]
    torch.manual_seed(123)                                   # whatever the global stream holds
    state = torch.get_rng_state()
    again, target2 = samples[(2, 5)]
    assert torch.equal(image, again) and torch.equal(target, target2)
    assert torch.equal(torch.get_rng_state(), state)         # the global stream is left alone
    other = [samples[(3, 5)][0], samples[(2, 5)][0], samples[(2, 6)][0]]
    assert not torch.equal(image, other[0]) and torch.equal(image, other[1])
    # Loader processes change nothing: the same batches with two workers as in line.
    plans = [BatchPlan(len(train), 4, seed=0, epochs=2, start_epoch=1, start_step=1) for _ in range(2)]
    inline, workers = (list(make_train_loader(samples, plan, workers=w, pin_memory=False))
                       for plan, w in zip(plans, (0, 2)))
    assert len(inline) == len(workers) == len(train) // 4 - 1
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(inline, workers))


# -- training -----------------------------------------------------------------------------

@pytest.mark.slow
def test_training_learns_and_publishes_its_outputs(cityscapes, tmp_path):
    config = TrainConfig(**{**BASE, "epochs": 20, "val_every": 10, "enc_lr": 1e-2, "dec_lr": 1e-2})
    summary = run_training(config, nasseg.published_genotype("wacv", "arch0"), cityscapes, tmp_path / "out",
                           state_dir=tmp_path / "state", progress=False)
    before = untrained_score(config, "wacv/arch0", cityscapes, 19, "segmentation")["miou"]
    after = summary["best"]["miou"]
    assert after > 2 * before and after > before + 0.1, (before, after)

    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "metrics.json", "metrics.tsv", "model.pt"]
    rows = read_tsv(out / "metrics.tsv")
    assert [r["epoch"] for r in rows] == [str(e) for e in range(1, 21)]
    assert rows[-1]["step"] == str(20 * (len(PreparedDataset(cityscapes, "train")) // 4))
    assert [bool(r["val_miou"]) for r in rows] == ([False] * 9 + [True]) * 2
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    lrs = [float(r["lr_enc"]) for r in rows]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] == 0.0 and float(rows[0]["lr_dec"]) < 1e-2
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best"]["miou"] >= metrics["last"]["miou"] and metrics["epochs"] == 20
    assert metrics["params"] == metrics["params_without_aux"] > 0          # wacv: no aux heads
    # best.pt holds the weights that scored the best mIoU, with the dataset's card.
    model, card = load_model(out / "best.pt")
    assert card.num_classes == 19 and card.dataset == "cityscapes" and len(card.palette) == 19
    assert card.genotype == nasseg.published_genotype("wacv", "arch0") and card.agg_size == 16
    _, val = training_sets(cityscapes, config)
    again = evaluate(model, val_batches(val, 4), task="segmentation", num_classes=19)["miou"]
    assert again == pytest.approx(metrics["best"]["miou"], abs=1e-9)
    final, _ = load_model(out / "model.pt")                  # and model.pt the last validated weights
    last = evaluate(final, val_batches(val, 4), task="segmentation", num_classes=19)["miou"]
    assert last == pytest.approx(metrics["last"]["miou"], abs=1e-9)
    assert read_model_file(out / "model.pt")["epoch"] == 20
    # Run again: the completed state is published again, unchanged.
    assert run_training(config, card.genotype, cityscapes, tmp_path / "out2", state_dir=tmp_path / "state",
                        progress=False) == summary
    assert (tmp_path / "out2" / "metrics.tsv").read_text() == (out / "metrics.tsv").read_text()


@pytest.mark.slow
def test_sigkill_mid_epoch_and_resume_match_an_uninterrupted_run(cityscapes, tmp_path):
    params = write_params(tmp_path / "p.yaml", epochs=4, checkpoint_every_steps=1)
    subprocess.run([sys.executable, *train_cmd(params, cityscapes, tmp_path / "ref")], cwd=ROOT,
                   env=cli_env(), check=True, capture_output=True, timeout=300)

    out = tmp_path / "killed"
    state_root = tmp_path / ".state" / "killed"
    proc = subprocess.Popen([sys.executable, *train_cmd(params, cityscapes, out)], cwd=ROOT, env=cli_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(state_root.glob("*/key.json")):           # written once the run holds the lock
        assert time.monotonic() < deadline and proc.poll() is None, "training ended early"
        time.sleep(0.02)
    # A second run on the same state is refused at once, naming the lock's holder. The first is
    # paused meanwhile (it keeps its lock), so that a slow start of the second cannot let it finish.
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        second = subprocess.run([sys.executable, *train_cmd(params, cityscapes, out)], cwd=ROOT, env=cli_env(),
                                capture_output=True, text=True, timeout=60)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    assert second.returncode == 2 and f"is in use by PID {proc.pid}" in second.stderr, second.stderr
    mid_epoch = None
    while mid_epoch is None:                                 # killed right after a step checkpoint, mid-epoch
        assert time.monotonic() < deadline and proc.poll() is None, "training ended before the kill"
        for ckpt in state_root.glob("*/checkpoint.pt"):
            progress = safe_load(ckpt, "training state")["progress"]
            if progress["epoch"] >= 1 and progress["step"] > 0:
                os.kill(proc.pid, signal.SIGSTOP)            # hold it where it was seen
                mid_epoch = progress
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert not out.exists()                                  # outputs appear only on completion

    subprocess.run([sys.executable, *train_cmd(params, cityscapes, out)], cwd=ROOT, env=cli_env(), check=True,
                   capture_output=True, timeout=300)
    ref, got = (json.loads((d / "metrics.json").read_text()) for d in (tmp_path / "ref", out))
    for m in (ref, got):
        m.pop("train_seconds")
    assert got == ref
    drop_seconds = [{k: v for k, v in r.items() if k != "seconds"} for r in read_tsv(tmp_path / "ref" / "metrics.tsv")]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in read_tsv(out / "metrics.tsv")] == drop_seconds
    for name in ("model.pt", "best.pt"):
        a, b = states(tmp_path / "ref" / name), states(out / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


@pytest.mark.slow
def test_two_ddp_processes_agree_with_one_on_the_same_global_batch(cityscapes, tmp_path):
    n_train = len(PreparedDataset(cityscapes, "train"))
    # One step on the whole training split: SGD, so the update is the gradient itself.
    params = write_params(tmp_path / "p.yaml", epochs=1, batch_size=n_train, enc_optim="sgd", dec_optim="sgd",
                          enc_lr=0.05, dec_lr=0.05, lr_power=0.0, val_num_images=2)
    subprocess.run([sys.executable, *train_cmd(params, cityscapes, tmp_path / "one")], cwd=ROOT, env=cli_env(),
                   check=True, capture_output=True, timeout=300)
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          *train_cmd(params, cityscapes, tmp_path / "two")], cwd=ROOT, env=cli_env(),
                         capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one, two = states(tmp_path / "one" / "model.pt"), states(tmp_path / "two" / "model.pt")
    torch.manual_seed(0)
    init = nasseg.build_segmenter(nasseg.published_genotype("wacv", "arch0"), 19, agg_size=16,
                                  repeats=1).state_dict()
    floats = [k for k in one if one[k].is_floating_point()]
    moved = max(float((one[k] - init[k]).abs().max()) for k in floats)
    apart = max(float((two[k] - one[k]).abs().max()) for k in floats)
    # The step moved the network, and both runs moved it alike. Not bit for bit: float32 sums
    # in another order, amplified through BatchNorm on 2x2 maps of a random network, put them
    # ~0.1 % of the step apart (in float64 the two gradients agree to 1e-12); per-process
    # BatchNorm statistics (bn: local) put them ~30 % of the step apart.
    assert moved > 1e-2 and apart < 0.01 * moved, (moved, apart)
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one if k not in floats)
    assert json.loads((tmp_path / "two" / "metrics.json").read_text())["world_size"] == 2


def _small_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 8, 3, stride=2, padding=1), torch.nn.BatchNorm2d(8),
                               torch.nn.ReLU(), torch.nn.Conv2d(8, 2, 1)).double()


def _batch() -> torch.Tensor:
    return torch.randn(6, 3, 12, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def _all_reduce_bn_worker(rank: int, folder: str, port: int) -> None:
    import torch.distributed as dist

    from nasseg.training.distributed import convert_batchnorm
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    net = convert_batchnorm(_small_net(), dist.new_group(backend="gloo"))
    share = _batch()[[0, 1] if rank == 0 else [2, 3, 4, 5]]             # uneven shares
    (net(share) ** 2).sum().backward()
    torch.save({"grads": {n: p.grad for n, p in net.named_parameters()}, "buffers": dict(net.named_buffers())},
               f"{folder}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_all_reduce_batchnorm_is_batchnorm_over_the_global_batch(tmp_path):
    """In float64, where rounding is out of the way: the summed gradients and the running
    statistics of two processes equal one process's on the whole batch."""
    import socket

    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_all_reduce_bn_worker, args=(str(tmp_path), port), nprocs=2, start_method="spawn")
    net = _small_net()
    (net(_batch()) ** 2).sum().backward()
    ranks = [safe_load(tmp_path / f"rank{r}.pt", "test output") for r in (0, 1)]
    for name, p in net.named_parameters():
        torch.testing.assert_close(ranks[0]["grads"][name] + ranks[1]["grads"][name], p.grad, rtol=1e-10,
                                   atol=1e-12)
    for name, b in net.named_buffers():
        assert torch.equal(ranks[0]["buffers"][name], ranks[1]["buffers"][name])
        torch.testing.assert_close(ranks[0]["buffers"][name], b, rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_depth_training_runs_end_to_end(nyud, tmp_path):
    config = TrainConfig(**{**BASE, "val_split": "test", "epochs": 12, "crop_size": 48, "resize_side": 64,
                            "val_every": 6, "enc_lr": 1e-2, "dec_lr": 1e-2})
    genotype = nasseg.published_genotype("cvpr", "arch0")
    summary = run_training(config, genotype, nyud, tmp_path / "out", state_dir=tmp_path / "state", progress=False)
    assert summary["task"] == "depth" and summary["score"] == "rmse"
    before = untrained_score(config, "cvpr/arch0", nyud, 1, "depth")["rmse"]
    assert math.isfinite(summary["best"]["rmse"]) and summary["best"]["rmse"] < 0.6 * before, (before, summary)
    model, card = load_model(tmp_path / "out" / "model.pt")
    assert card.task == "depth" and card.num_classes == 1 and card.ignore_index == 0
    assert model(torch.zeros(1, 3, 48, 64)).shape[1] == 1
    assert "val_rmse" in (tmp_path / "out" / "metrics.tsv").read_text().splitlines()[0]


# -- bad input ------------------------------------------------------------------------------

def run_main(args: list[str], capsys) -> tuple[int, str]:
    code = train_main(args)
    return code, capsys.readouterr().err


def test_missing_data_folder_is_named(tmp_path, capsys):
    params = write_params(tmp_path / "p.yaml")
    code, err = run_main(train_cmd(params, tmp_path / "nope", tmp_path / "out")[2:], capsys)
    assert code == 2 and f"error: {tmp_path / 'nope' / 'meta.json'}: not found" in err


def test_unparsable_genotype_file_is_named(cityscapes, tmp_path, capsys):
    bad = tmp_path / "slot.json"
    bad.write_text("{not json")
    code, err = run_main(train_cmd(write_params(tmp_path / "p.yaml"), cityscapes, tmp_path / "out",
                                   genotype=str(bad))[2:], capsys)
    assert code == 2 and f"error: {bad}: not a genotype file" in err


def test_missing_encoder_weights_file_is_named(cityscapes, tmp_path, capsys):
    missing = tmp_path / "mbv2_voc_rflw.ckpt"
    params = write_params(tmp_path / "p.yaml", encoder_weights=str(missing))
    code, err = run_main(train_cmd(params, cityscapes, tmp_path / "out")[2:], capsys)
    assert code == 2 and f"error: {missing}: encoder weights file not found" in err
    assert not (tmp_path / "out").exists()
