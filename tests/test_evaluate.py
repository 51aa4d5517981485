"""The evaluate stage and nasseg.evaluation on tiny synthetic data.

Scores are checked against confusion matrices and depth metrics computed here
directly (numpy bincount, not the Cython kernel) from models whose predictions are
known: a wrapper returning fixed logit maps, and trained-format model files whose
classifier is set to a constant output.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from nasseg.checkpoint import ModelCard, save_model
from nasseg.data import PrepareParams, PreparedDataset, eval_transform
from nasseg.data.classes import class_info
from nasseg.evaluation import evaluate
from nasseg.evaluation_config import EvaluateParams
from nasseg.genotypes import load_genotype
from nasseg.metrics import depth_metrics, segmentation_scores
from nasseg.models import export_original_weights
from nasseg.reports import CONFUSION_PNG, IOU_CSV
from stages.evaluate import main
from stages.params import load_section

from conftest import constant_model, prepared_stand_in

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
PREP = PrepareParams(workers=0, check_split_sizes="ignore")
CS = class_info("cityscapes")


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory) -> Path:
    return prepared_stand_in(tmp_path_factory, "cityscapes", 5, 48, 96, PREP)


@pytest.fixture(scope="module")
def nyud(tmp_path_factory) -> Path:
    return prepared_stand_in(tmp_path_factory, "nyud", 4, 40, 56, PREP)



def class_file(path: Path, cls: int, genotype: str = "wacv/arch0", num_classes: int = 19) -> Path:
    """A model file whose every pixel is predicted as `cls` (cityscapes names)."""
    card = ModelCard(load_genotype(genotype), num_classes, dataset="cityscapes",
                     class_names=tuple(CS["class_names"][:num_classes]) if num_classes == 19 else (),
                     palette=tuple(map(tuple, CS["palette"])) if num_classes == 19 else ())
    save_model(path, card, constant_model(card, 5.0 * torch.eye(num_classes)[cls]))
    return path


def direct_confusion(preds: list[np.ndarray], labels: list[np.ndarray], n: int) -> np.ndarray:
    cm = np.zeros((n, n), np.int64)
    for p, t in zip(preds, labels):
        keep = t != 255
        cm += np.bincount(t[keep].astype(np.int64) * n + p[keep], minlength=n * n).reshape(n, n)
    return cm


def split_labels(root: Path, split: str) -> list[np.ndarray]:
    ds = PreparedDataset(root, split)
    return [ds.load(i)[1] for i in range(len(ds))]


def same(a: float | None, b: float) -> bool:
    return (a is None and math.isnan(b)) or (a is not None and a == pytest.approx(b, rel=1e-9, abs=1e-12))


class FixedLogits(nn.Module):
    """Returns one-hot logits of the given class maps, one per call, in order."""

    def __init__(self, maps: list[np.ndarray], n: int) -> None:
        super().__init__()
        self.maps, self.n, self.calls = maps, n, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = torch.from_numpy(self.maps[self.calls]).long()
        self.calls += 1
        assert tuple(x.shape[-2:]) == tuple(m.shape), "evaluate must feed the full-resolution image"
        return nn.functional.one_hot(m, self.n).permute(2, 0, 1)[None].float()


def test_evaluate_agrees_with_metrics_on_known_predictions(cityscapes):
    labels = split_labels(cityscapes, "val")
    rng = np.random.default_rng(0)
    preds = []
    for t in labels:
        p = np.where(t == 255, 3, t).astype(np.int64)
        wrong = rng.uniform(size=t.shape) < 0.3            # 30% of pixels: a random class
        p[wrong] = rng.integers(0, 19, int(wrong.sum()))
        preds.append(p)
    ds = PreparedDataset(cityscapes, "val", eval_transform())
    loader = torch.utils.data.DataLoader(ds, batch_size=1)
    scores = evaluate(FixedLogits(preds, 19), loader, task="segmentation", num_classes=19)
    cm = direct_confusion(preds, labels, 19)
    assert np.array_equal(np.asarray(scores["confusion_matrix"]), cm)
    expected = segmentation_scores(cm)
    for key in ("miou", "mean_acc", "fwiou", "pixel_acc"):
        assert scores[key] == pytest.approx(expected[key])
    assert 0.5 < scores["pixel_acc"] < 0.9
    np.testing.assert_allclose(scores["iou"], expected["iou"], equal_nan=True)


def run_stage(*args: object, workers: int | None = 0) -> int:
    """The stage's main(); workers=None: the settings' own (one loader process by default)."""
    extra = [] if workers is None else ["--workers", str(workers)]
    return main([str(a) for a in args] + ["--no-progress", *extra])


def test_stage_scores_a_model_file(cityscapes, tmp_path, capsys):
    model = class_file(tmp_path / "model.pt", cls=0)   # road everywhere
    out = tmp_path / "eval" / "metrics.json"
    assert run_stage("--checkpoint", model, "--data", cityscapes, "--split", "val", "--out", out) == 0
    report = json.loads(out.read_text())
    labels = split_labels(cityscapes, "val")
    cm = direct_confusion([np.zeros(t.shape, np.int64) for t in labels], labels, 19)
    expected = segmentation_scores(cm)
    assert report["task"] == "segmentation" and report["num_images"] == len(labels) == 2
    assert report["confusion_matrix"] == cm.tolist()          # full resolution: every labelled pixel
    assert int(cm.sum()) == sum(int((t != 255).sum()) for t in labels)
    for key in ("miou", "mean_acc", "fwiou", "pixel_acc"):
        assert same(report[key], expected[key]), key
    assert list(report["per_class_iou"]) == CS["class_names"]
    for name, iou in zip(CS["class_names"], expected["iou"]):
        assert same(report["per_class_iou"][name], iou), name
    assert report["per_class_iou"]["road"] > 0 and report["flip"] is False and report["scales"] == [1.0]
    rows = list(csv.reader((out.parent / IOU_CSV).open()))
    assert rows[0] == ["class", "iou"] and [r[0] for r in rows[1:]] == CS["class_names"]
    assert float(rows[1][1]) == pytest.approx(report["per_class_iou"]["road"], abs=1e-6)
    with Image.open(out.parent / CONFUSION_PNG) as png:
        assert png.format == "PNG" and png.width > 300
    assert "mIoU" in capsys.readouterr().err

    # flip and multi-scale change nothing for a model whose output is constant
    out2 = tmp_path / "flip" / "metrics.json"
    assert run_stage("--checkpoint", model, "--data", cityscapes, "--split", "val", "--out", out2,
                     "--flip", "--scales", "0.75,1,1.25") == 0
    report2 = json.loads(out2.read_text())
    assert report2["flip"] is True and report2["scales"] == [0.75, 1.0, 1.25]
    for key in ("flip", "scales"):
        del report[key], report2[key]
    assert report2 == report


def test_authors_checkpoint_with_its_card(cityscapes, tmp_path):
    card = ModelCard(load_genotype("wacv/arch0"), 19)
    authors = tmp_path / "wacv_cs.pth"
    torch.save(export_original_weights(constant_model(card, 5.0 * torch.eye(19)[2])), authors)
    out = tmp_path / "metrics.json"
    assert run_stage("--checkpoint", authors, "--genotype", "wacv/arch0", "--num-classes", 19,
                     "--data", cityscapes, "--split", "val", "--out", out) == 0
    report = json.loads(out.read_text())
    assert list(report["per_class_iou"]) == CS["class_names"]          # names from meta.json
    assert all(row[2] == sum(row) for row in report["confusion_matrix"])   # all "building"


def test_depth_end_to_end_on_synthetic_nyud(nyud, tmp_path):
    card = ModelCard(load_genotype("cvpr/arch0"), 1, task="depth", dataset="nyud", class_names=("depth",))
    save_model(tmp_path / "depth.pt", card, constant_model(card, torch.tensor([2.5])))
    out = tmp_path / "metrics.json"
    assert run_stage("--checkpoint", tmp_path / "depth.pt", "--data", nyud, "--split", "test",
                     "--out", out, workers=None) == 0
    report = json.loads(out.read_text())
    targets = split_labels(nyud, "test")
    flat = np.concatenate([t.ravel() for t in targets])
    expected = depth_metrics(np.full(flat.shape, 2.5), flat)
    assert report["task"] == "depth" and report["num_images"] == len(targets)
    for key, value in expected.items():
        assert report[key] == pytest.approx(value, rel=1e-6), key
    assert not (tmp_path / CONFUSION_PNG).exists()


def test_settings_from_params_and_flags(cityscapes, tmp_path, capsys):
    params = yaml.safe_load(PARAMS.read_text())
    for experiment in ("wacv", "cvpr"):   # the papers: single scale, no flip, every preset
        for preset in ("default", "ci", "paper"):
            got = load_section(PARAMS, f"evaluate.{experiment}.{preset}", EvaluateParams)
            assert got.flip is False and got.scales == (1.0,)
    params["preset"] = "ci"
    params["evaluate"]["wacv"]["ci"] = {"flip": True, "scales": [1.0, 0.5], "workers": 0}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    model = class_file(tmp_path / "model.pt", cls=1)
    common = ["--checkpoint", model, "--data", cityscapes, "--split", "val", "--params", tmp_path / "params.yaml"]
    out = tmp_path / "a.json"
    assert run_stage(*common, "--experiment", "wacv", "--out", out, workers=None) == 0
    assert json.loads(out.read_text())["scales"] == [1.0, 0.5] and json.loads(out.read_text())["flip"]
    assert run_stage(*common, "--experiment", "wacv", "--out", out, "--no-flip", "--set", "scales=[1.0]") == 0
    assert json.loads(out.read_text())["flip"] is False and json.loads(out.read_text())["scales"] == [1.0]
    assert run_stage(*common, "--experiment", "wacv", "--out", out, "--scales", "0") == 2
    assert "--scales: scales must lie in [0.1, 4]" in capsys.readouterr().err
    assert run_stage(*common, "--experiment", "wacv", "--out", out, "--set", "flip=maybe") == 2
    assert "evaluate.wacv.ci.flip" in capsys.readouterr().err


def expect_error(capsys, *args: object, says: str) -> str:
    assert run_stage(*args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: "), err
    assert says in err, err
    return err


def test_bad_checkpoints_name_the_file(cityscapes, nyud, tmp_path, capsys):
    common = ["--data", cityscapes, "--split", "val", "--out", tmp_path / "m.json"]
    missing = tmp_path / "nope.pt"
    expect_error(capsys, "--checkpoint", missing, *common, says=f"{missing}: model checkpoint not found")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 not really a torch file")
    expect_error(capsys, "--checkpoint", corrupt, *common, says=f"{corrupt}: cannot read this model checkpoint")
    five = class_file(tmp_path / "five.pt", cls=0, num_classes=5)
    expect_error(capsys, "--checkpoint", five, *common, says=f"{five}: its model has 5 output classes, the data has 19")
    wacv = class_file(tmp_path / "wacv.pt", cls=0)
    expect_error(capsys, "--checkpoint", wacv, *common, "--experiment", "cvpr",
                 says=f"{wacv}: holds a wacv model, expected one of the cvpr space")
    # a segmentation model on NYUD data without 40-class labels
    expect_error(capsys, "--checkpoint", wacv, "--data", nyud, "--split", "test", "--out", tmp_path / "n.json",
                 says=f"{wacv}: its model has 19 output classes")
    # an authors' checkpoint (weights only) given the genotype of another space
    authors = tmp_path / "authors.pth"
    torch.save(export_original_weights(ModelCard(load_genotype("wacv/arch0"), 19).build()), authors)
    expect_error(capsys, "--checkpoint", authors, "--genotype", "cvpr/arch0", "--num-classes", 19, *common,
                 says=f"{authors}: ")
    expect_error(capsys, "--checkpoint", authors, *common, says=f"{authors}: not a model file of this pipeline")
    assert not (tmp_path / "m.json").exists()
