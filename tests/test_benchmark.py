"""The latency benchmark: backends checked against eager before timing, eval mode enforced,
FLOPs as counted by hand, and the stage's files with their fields."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import nasseg
import nasseg.backends as backends
from nasseg.backends import BACKENDS, BackendUnavailable
from nasseg.benchmark_config import BACKEND_NAMES, BenchmarkParams
from nasseg.benchmarking import CSV_FIELDS, Network, benchmark, benchmark_network, compare_outputs, count_flops
from nasseg.checkpoint import ModelCard, save_model
from nasseg.export import deployable

from conftest import ROOT, prepared_stand_in, run_cli

SMALL = {"warmup": 0, "min_seconds": 0.0, "repeats": 2, "threads": 1}


def small_card(dataset: str = "cityscapes") -> ModelCard:
    return ModelCard(genotype=nasseg.published_genotype("wacv", "arch0"), num_classes=19, agg_size=16, repeats=1,
                     dataset=dataset)


def small_network(label: str = "cityscapes/1") -> Network:
    torch.manual_seed(0)
    card = small_card()
    return Network(label=label, card=card, model=card.build().eval())


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory):
    return prepared_stand_in(tmp_path_factory, "cityscapes", 12, 64, 128)


def test_the_registry_and_the_settings_name_the_same_backends():
    assert tuple(BACKENDS) == BACKEND_NAMES
    # eager always runs, and first: every other backend is checked against it
    assert BenchmarkParams(backends=("onnxruntime", "eager")).backends == ("eager", "onnxruntime")
    with pytest.raises(ValueError, match="must include eager"):
        BenchmarkParams(backends=("onnxruntime",))
    with pytest.raises(ValueError, match="HEIGHTxWIDTH"):
        BenchmarkParams(sizes=("360by480",))


def test_flops_of_a_plain_conv_model_match_a_hand_count():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1, stride=2)).eval()
    # multiply-adds: 8 outputs x 3 inputs x 3x3 taps x 32x48 pixels, then 4 x 8 x 16x24; two FLOPs each
    macs = 8 * 3 * 9 * 32 * 48 + 4 * 8 * 16 * 24
    assert count_flops(model, (32, 48)) == 2 * macs
    assert count_flops(model, (32, 48), batch=3) == 3 * 2 * macs


def test_deployable_is_in_eval_mode_throughout_and_a_network_in_train_mode_is_refused(tmp_path):
    network = small_network()
    model, _ = deployable(network.model)
    assert not any(m.training for m in model.modules())    # the identities put in place of BNs too
    training = Network(label="t", card=network.card, model=network.card.build().train())
    with pytest.raises(ValueError, match="training mode"):
        benchmark_network(training, BenchmarkParams(sizes=("64x64",), backends=("eager",), **SMALL),
                          workdir=tmp_path)
    with pytest.raises(ValueError, match="training mode"):
        count_flops(network.card.build().train(), (64, 64))


def test_compare_outputs_rules():
    ref = torch.linspace(-1, 1, 100)
    assert compare_outputs(ref + 5e-4, ref, low_precision=False, rtol=1e-3, int8_tolerance=0.3)[0]
    ok, diff, rule = compare_outputs(ref + 1e-2, ref, low_precision=False, rtol=1e-3, int8_tolerance=0.3)
    assert not ok and diff == pytest.approx(1e-2, rel=1e-4) and "above the tolerance" in rule
    assert not compare_outputs(ref * float("nan"), ref, low_precision=False, rtol=1e-3, int8_tolerance=0.3)[0]
    assert not compare_outputs(ref[:50], ref, low_precision=False, rtol=1e-3, int8_tolerance=0.3)[0]
    noisy = ref + 0.1 * torch.randn(100, generator=torch.Generator().manual_seed(0))
    assert compare_outputs(noisy, ref, low_precision=True, rtol=1e-3, int8_tolerance=0.3)[0]
    assert not compare_outputs(-ref, ref, low_precision=True, rtol=1e-3, int8_tolerance=0.3)[0]


def test_a_backend_that_disagrees_with_eager_is_not_timed_and_a_broken_one_is_recorded(tmp_path, monkeypatch):
    timed: list[int] = []
    real_measure = nasseg.benchmarking.measure

    def counting_measure(fn, **kw):
        timed.append(1)
        return real_measure(fn, **kw)

    def off_by_one(model, example, ctx):
        return lambda x: model(x) + 1.0

    def unavailable(model, example, ctx):
        raise BackendUnavailable("no such runtime here")

    def crashes(model, example, ctx):
        raise RuntimeError("exporter crashed\nwith details")

    monkeypatch.setattr(nasseg.benchmarking, "measure", counting_measure)
    monkeypatch.setitem(backends.BACKENDS, "channels_last", off_by_one)
    monkeypatch.setitem(backends.BACKENDS, "compile", unavailable)
    monkeypatch.setitem(backends.BACKENDS, "int8", crashes)
    params = BenchmarkParams(sizes=("64x96",), backends=("eager", "channels_last", "compile", "int8"), **SMALL)
    entry = benchmark_network(small_network(), params, workdir=tmp_path)
    by = {r["backend"]: r for r in entry["results"]}
    assert by["eager"]["status"] == "ok" and by["eager"]["stats"]["runs"] >= 1
    assert by["eager"]["speedup_vs_eager"] == 1.0
    assert by["channels_last"]["status"] == "mismatch" and by["channels_last"]["stats"] is None
    assert "disagrees with eager" in by["channels_last"]["reason"]
    assert by["channels_last"]["max_abs_diff"] == pytest.approx(1.0, abs=1e-5)
    assert by["compile"] == {**by["compile"], "status": "unavailable", "reason": "no such runtime here"}
    assert by["int8"]["status"] == "failed" and by["int8"]["reason"] == "RuntimeError: exporter crashed"
    assert len(timed) == 1                                   # eager only


@pytest.mark.slow
def test_real_backends_match_eager_and_are_timed(tmp_path, cityscapes):
    params = BenchmarkParams(sizes=("64x128",), backends=("eager", "channels_last", "onnxruntime", "openvino", "int8",
                                                                   "int8_openvino"),
                             calibration_images=4, accuracy_split={"cityscapes": "val"}, accuracy_images=3, **SMALL)
    entry = benchmark_network(small_network(), params, workdir=tmp_path, data=cityscapes)
    by = {r["backend"]: r for r in entry["results"]}
    assert all(r["status"] == "ok" and r["stats"]["median"] > 0 for r in by.values()), by
    assert by["onnxruntime"]["max_abs_diff"] < 1e-3 * 10
    assert "relative RMS error" in by["int8"]["check"] and "relative RMS error" in by["int8_openvino"]["check"]
    int8 = entry["int8"]
    assert int8["split"] == "val" and int8["num_images"] == 3 and int8["metric"] == "miou"
    assert (int8["backend"], int8["fp32_backend"]) == ("int8", "onnxruntime")
    assert int8["delta"] == pytest.approx(int8["miou_int8"] - int8["miou_fp32"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cityscapes_1.int8.onnx", "cityscapes_1.onnx"]


@pytest.mark.slow
def test_quantisation_leaves_nothing_in_the_working_directory(tmp_path, cityscapes, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    params = BenchmarkParams(sizes=("64x96",), backends=("eager", "int8"), calibration_images=2,
                             accuracy_split={}, **SMALL)
    entry = benchmark_network(small_network(), params, workdir=tmp_path / "work", data=cityscapes)
    assert [r["status"] for r in entry["results"]] == ["ok", "ok"]
    assert list(cwd.iterdir()) == [] and Path.cwd() == cwd      # ONNX Runtime's scratch files went elsewhere


@pytest.mark.slow
def test_the_stage_writes_json_csv_and_metrics_with_their_fields(tmp_path, cityscapes):
    ckpt = tmp_path / "best.pt"
    torch.manual_seed(0)
    card = small_card()
    save_model(ckpt, card, card.build())
    out = tmp_path / "bench" / "latency.json"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cityscapes").symlink_to(cityscapes)     # --data-root holds <root>/<dataset>
    run_cli([sys.executable, "-m", "stages.benchmark", "--checkpoint", f"cityscapes/1={ckpt}",
             "--sizes", "64x128,96x96", "--backends", "eager,onnxruntime,openvino,int8", "--min-seconds", "0.01",
             "--repeats", "2", "--threads", "1", "--data-root", str(tmp_path / "data"),
             "--out", str(out), "--metrics", str(tmp_path / "bench" / "metrics.json"), "--no-progress"],
            cwd=ROOT)
    results = json.loads(out.read_text())
    assert results["format"] == "nasseg-latency/1"
    env = results["environment"]
    assert {"cpu", "vector", "threads", "torch", "versions", "device"} <= set(env), env
    assert env["threads"] == 1 and "onnxruntime" in env["versions"]
    assert results["settings"]["sizes"] == [[64, 128], [96, 96]]
    (m,) = results["models"]
    assert m["label"] == "cityscapes/1" and m["dataset"] == "cityscapes" and m["slot"] == "1"
    assert m["params"] == m["params_without_aux"] == nasseg.count_parameters(card.build())
    assert set(m["flops"]) == {"64x128", "96x96"} and m["flops"]["96x96"] > m["flops"]["64x128"] > 0
    assert [(r["size"], r["backend"]) for r in m["results"]] == [
        (s, b) for s in ("64x128", "96x96") for b in ("eager", "onnxruntime", "openvino", "int8")]
    for r in m["results"]:
        assert r["status"] == "ok", r
        assert set(r["stats"]) == {"median", "mean", "std", "p90", "min", "runs", "repeats"}
        assert r["stats"]["min"] <= r["stats"]["median"] <= r["stats"]["p90"] and r["stats"]["repeats"] == 2
    assert m["int8"]["split"] == "val"        # cityscapes' accuracy split by default
    rows = list(csv.DictReader((out.with_suffix(".csv")).open()))
    assert tuple(rows[0]) == CSV_FIELDS and len(rows) == 8
    assert float(rows[0]["median_ms"]) == pytest.approx(1e3 * m["results"][0]["stats"]["median"])
    metrics = json.loads((tmp_path / "bench" / "metrics.json").read_text())
    assert set(metrics["cityscapes/1"]["64x128"]) == {"eager_ms", "onnxruntime_ms", "openvino_ms", "int8_ms"}
    assert "int8_miou_delta" in metrics["cityscapes/1"]


def test_the_stage_names_a_missing_checkpoint_and_needs_networks(tmp_path):
    proc = run_cli([sys.executable, "-m", "stages.benchmark", "--checkpoint", str(tmp_path / "nope.pt"),
                    "--out", str(tmp_path / "x.json")], cwd=ROOT, ok=False)
    assert proc.returncode == 2 and "nope.pt" in proc.stderr
    proc = run_cli([sys.executable, "-m", "stages.benchmark", "--out", str(tmp_path / "x.json")], cwd=ROOT, ok=False)
    assert proc.returncode == 2 and "--checkpoint FILE" in proc.stderr
    proc = run_cli([sys.executable, "-m", "stages.benchmark", "--genotype", "wacv/arch0", "--num-classes", "19",
                    "--sizes", "12x12", "--out", str(tmp_path / "x.json")], cwd=ROOT, ok=False)
    assert proc.returncode == 2 and "at least 32x32" in proc.stderr
    assert not (tmp_path / "x.json").exists()


def test_benchmark_refuses_duplicate_labels(tmp_path):
    with pytest.raises(ValueError, match="unique"):
        benchmark([small_network("a"), small_network("a")], BenchmarkParams(backends=("eager",), **SMALL),
                  workdir=tmp_path, progress=False)


@pytest.mark.slow
def test_int8_calibrates_on_each_datasets_training_split(tmp_path_factory, tmp_path):
    voc = prepared_stand_in(tmp_path_factory, "voc", 8, 64, 80)      # VOC trains on SBD's train_aug
    torch.manual_seed(0)
    card = ModelCard(genotype=nasseg.published_genotype("wacv", "arch0"), num_classes=21, agg_size=16, repeats=1,
                     dataset="voc")
    params = BenchmarkParams(sizes=("64x96",), backends=("eager", "int8"), calibration_images=2,
                             accuracy_images=2, **SMALL)
    assert params.calibration_split["voc"] == "train_aug"
    entry = benchmark_network(Network("voc/1", card, card.build().eval()), params, workdir=tmp_path, data=voc)
    assert [r["status"] for r in entry["results"]] == ["ok", "ok"]
    assert entry["int8"]["split"] == "val" and entry["int8"]["num_images"] == 2
