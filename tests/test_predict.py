"""The predict stage, nasseg.prediction and the inference notebook, on small made-up images."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nasseg.checkpoint import ModelCard, save_model
from nasseg.data.classes import CAMVID_PALETTE, class_info
from nasseg.genotypes import load_genotype
from nasseg.models import export_original_weights
from nasseg.prediction import (authors_card, colorize, find_images, mask_png, overlay, palette_for,
                               predict_files)
from stages.predict import main

from conftest import constant_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]
CS = class_info("cityscapes")



def class_card(**kw: object) -> ModelCard:
    return ModelCard(load_genotype("wacv/arch0"), 19, dataset="cityscapes",
                     class_names=tuple(CS["class_names"]), palette=tuple(map(tuple, CS["palette"])), **kw)


@pytest.fixture
def images(tmp_path) -> Path:
    """A folder with a PNG, a JPEG in a subfolder and a file that is no image."""
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (40, 72, 3), dtype=np.uint8)).save(folder / "sub" / "b.JPG")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_predict_stage_writes_palette_masks_and_overlays(images, tmp_path):
    card = class_card()
    model_file = tmp_path / "model.pt"
    save_model(model_file, card, constant_model(card, 5.0 * torch.eye(19)[13]))   # "car" everywhere
    out = tmp_path / "out"
    assert main(["--checkpoint", str(model_file), "--out", str(out), str(images), "--no-progress"]) == 0
    car = np.asarray(CS["palette"][13], np.uint8)
    for stem, size in (("a", (48, 64)), ("sub/b", (40, 72))):
        with Image.open(out / f"{stem}_mask.png") as mask:
            assert mask.mode == "P" and mask.size == size[::-1]
            assert np.all(np.asarray(mask) == 13)                        # the class indices
            assert np.all(np.asarray(mask.convert("RGB")) == car)        # shown in the palette's colours
        src = np.asarray(Image.open(images / (stem + (".png" if stem == "a" else ".JPG"))).convert("RGB"))
        with Image.open(out / f"{stem}_overlay.png") as ov:
            np.testing.assert_array_equal(np.asarray(ov), overlay(src, np.broadcast_to(car, src.shape), 0.5))
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "a_mask.png", "a_overlay.png", "sub/b_mask.png", "sub/b_overlay.png"]


def test_palette_from_the_dataset_when_the_card_has_none(images, tmp_path):
    card = ModelCard(load_genotype("cvpr/arch0"), 11)      # an authors'-style card: no names, no palette
    model = constant_model(card, 5.0 * torch.eye(11)[4])
    assert np.array_equal(palette_for(card, "camvid"), np.asarray(CAMVID_PALETTE, np.uint8))
    records = predict_files(model, card, [images / "a.png"], tmp_path / "out", dataset="camvid", progress=False)
    assert records[0]["class_pixels"] == {4: 48 * 64}
    with Image.open(tmp_path / "out" / "a_mask.png") as mask:
        assert np.all(np.asarray(mask.convert("RGB")) == CAMVID_PALETTE[4])
    # mask_png keeps the indices for any class map, coloured as colorize does
    labels = np.tile(np.arange(11, dtype=np.uint8), (3, 1))
    with Image.open(io.BytesIO(mask_png(labels, palette_for(card, "camvid")))) as png:
        assert np.array_equal(np.asarray(png), labels)
        assert np.array_equal(np.asarray(png.convert("RGB")), colorize(labels, np.asarray(CAMVID_PALETTE)))


def test_depth_maps(images, tmp_path):
    card = ModelCard(load_genotype("cvpr/arch0"), 1, task="depth", dataset="nyud")
    save_model(tmp_path / "depth.pt", card, constant_model(card, torch.tensor([2.5])))
    assert main(["--checkpoint", str(tmp_path / "depth.pt"), "--out", str(tmp_path / "out"),
                 str(images / "a.png"), "--no-progress"]) == 0
    with Image.open(tmp_path / "out" / "a_depth_mm.png") as mm:
        arr = np.asarray(mm)
        assert arr.dtype == np.uint16 and arr.shape == (48, 64) and np.all(arr == 2500)
    with Image.open(tmp_path / "out" / "a_depth.png") as colour:
        rgb = np.asarray(colour)
        assert rgb.shape == (48, 64, 3) and len(np.unique(rgb.reshape(-1, 3), axis=0)) == 1


def test_find_images_refuses_clashing_outputs(tmp_path):
    for name in ("x.png", "x.jpg"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    with pytest.raises(ValueError, match=r"x\.(png|jpg): its outputs \(x_\*\.png\) would overwrite"):
        find_images([tmp_path])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=rf"{tmp_path / 'empty'}: no .png/.jpg/.jpeg images"):
        find_images([tmp_path / "empty"])


def test_authors_card():
    card = authors_card("wacv/arch0", 19, dataset="cityscapes")
    assert card.class_names == tuple(CS["class_names"]) and card.task == "segmentation"
    assert authors_card("cvpr/arch0", 1, dataset="nyud").task == "depth"
    assert authors_card("cvpr/arch0", 7, dataset="voc").class_names == ()   # VOC has 21: not its names


def expect_error(capsys, argv: list[object], says: str) -> None:
    assert main([str(a) for a in argv] + ["--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and says in err, err


def test_bad_input_names_the_file(images, tmp_path, capsys):
    out = tmp_path / "out"
    missing = tmp_path / "nope.pt"
    expect_error(capsys, ["--checkpoint", missing, "--out", out, images], f"{missing}: model checkpoint not found")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(bytes(range(256)))   # no pickle opcode: not a torch file
    expect_error(capsys, ["--checkpoint", corrupt, "--out", out, images], f"{corrupt}: cannot read this model")
    card = class_card()
    good = tmp_path / "model.pt"
    save_model(good, card, card.build())
    expect_error(capsys, ["--checkpoint", good, "--out", out, tmp_path / "none"], f"{tmp_path / 'none'}: image or "
                 "folder not found")
    broken = tmp_path / "broken.png"
    broken.write_bytes((images / "a.png").read_bytes()[:60])
    expect_error(capsys, ["--checkpoint", good, "--out", out, broken], f"{broken}: cannot read this image")
    authors = tmp_path / "authors.pth"
    torch.save(export_original_weights(card.build()), authors)     # wacv weights, 19 classes
    expect_error(capsys, ["--checkpoint", authors, "--out", out, images, "--genotype", "cvpr/arch0",
                          "--num-classes", 19], f"{authors}: ")
    expect_error(capsys, ["--checkpoint", authors, "--out", out, images, "--genotype", "wacv/arch0",
                          "--num-classes", 5], f"{authors}: ")
    expect_error(capsys, ["--checkpoint", authors, "--out", out, images], f"{authors}: not a model file")
    assert not out.exists()


@pytest.mark.slow
def test_notebook_runs_headless(images, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    card = class_card()
    save_model(tmp_path / "model.pt", card, constant_model(card, 5.0 * torch.eye(19)[8]))  # vegetation
    monkeypatch.setenv("NASSEG_MODEL", str(tmp_path / "model.pt"))
    monkeypatch.setenv("NASSEG_IMAGES", str(images))
    monkeypatch.setenv("NASSEG_NUM_IMAGES", "2")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(ROOT / "notebooks" / "inference.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    text = "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                   for out in cell.outputs if out.output_type == "stream")
    assert "wacv model, task segmentation, 19 classes (cityscapes)" in text
    assert "a.png: prediction 48x64, class histogram {'vegetation': 3072}" in text
    assert "b.JPG: prediction 40x72, class histogram {'vegetation': 2880}" in text
    assert "classes shown: ['vegetation']" in text
    figures = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
               if out.output_type == "display_data" and "image/png" in out.get("data", {})]
    assert len(figures) == 2      # the image / prediction / overlay grid and the colour legend
