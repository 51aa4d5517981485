"""CityScapes: a tiny dataset in the official layout, prepared and checked pixel by pixel.

The expected id -> train id mapping is computed here from cityscapesscripts'
label table, independently of nasseg's lookup table, and spot-checked by hand.
The bad-input cases all formats share run from :class:`TestCityscapesFormat`.
"""
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from cityscapesscripts.helpers.labels import labels as CS_LABELS
from PIL import Image

from nasseg.data import DataError, PrepareParams, prepare_dataset

from conftest import BaseFormatTest

PARAMS = PrepareParams(workers=2, check_split_sizes="ignore")
H, W = 9, 13
ALL_IDS = np.array([lab.id for lab in CS_LABELS if lab.id >= 0], np.uint8)


def expected_train_ids(ids: np.ndarray) -> np.ndarray:
    table = {lab.id: lab.trainId for lab in CS_LABELS}
    out = np.vectorize(lambda i: table[int(i)])(ids)
    out[(out < 0) | (out == 255)] = 255
    return out.astype(np.uint8)


def build(root, layout=None, seed=0):
    """leftImg8bit/<split>/<city>/*_leftImg8bit.png + gtFine/.../*_gtFine_labelIds.png."""
    layout = layout or {"train": {"aachen": 2, "bremen": 1}, "val": {"frankfurt": 2}}
    rng = np.random.default_rng(seed)
    written = {}
    for split, cities in layout.items():
        for city, n in cities.items():
            for k in range(n):
                stem = f"{city}_{k:06d}_000019"
                rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
                ids = rng.choice(ALL_IDS, (H, W)).astype(np.uint8)
                ids.flat[: len(ALL_IDS)] = ALL_IDS  # every id appears
                img_dir = root / "leftImg8bit" / split / city
                gt_dir = root / "gtFine" / split / city
                img_dir.mkdir(parents=True, exist_ok=True)
                gt_dir.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rgb, "RGB").save(img_dir / f"{stem}_leftImg8bit.png")
                Image.fromarray(ids, "L").save(gt_dir / f"{stem}_gtFine_labelIds.png")
                # The colour rendering sits beside it in the real download; it must be ignored.
                Image.fromarray(rgb, "RGB").save(gt_dir / f"{stem}_gtFine_color.png")
                written[(split, stem)] = (rgb, ids)
    return written


def test_prepare_maps_label_ids_to_train_ids(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    written = build(raw)
    meta = prepare_dataset("cityscapes", raw, out, PARAMS)

    assert meta["task"] == "segmentation" and meta["num_classes"] == 19
    assert meta["class_names"][0] == "road" and meta["class_names"][18] == "bicycle"
    assert meta["ignore_index"] == 255 and len(meta["palette"]) == 19
    assert meta["splits"] == {"train": 3, "val": 2}
    assert json.loads((out / "meta.json").read_text()) == meta
    for split in ("train", "val"):
        lines = (out / f"{split}.lst").read_text().splitlines()
        assert len(lines) == meta["splits"][split]
        for line in lines:
            img_rel, lbl_rel = line.split("\t")
            stem = img_rel.rsplit("/", 1)[1][: -len(".png")]
            assert img_rel == f"images/{split}/{stem}.png"
            assert lbl_rel == f"labels/{split}/{stem}.png"
            rgb, ids = written[(split, stem)]
            label = Image.open(out / lbl_rel)
            assert label.mode == "L"  # single-channel uint8
            np.testing.assert_array_equal(np.asarray(label), expected_train_ids(ids))
            src = raw / "leftImg8bit" / split / stem.split("_")[0] / f"{stem}_leftImg8bit.png"
            assert hashlib.sha256((out / img_rel).read_bytes()).digest() == \
                hashlib.sha256(src.read_bytes()).digest()


def test_official_mapping_spot_checks(tmp_path):
    raw = tmp_path / "raw"
    build(raw, {"train": {"aachen": 1}, "val": {"lindau": 1}})
    ids = np.array([[7, 8, 11, 23, 24, 26, 33, 0, 1, 9, 29, 30, 14]], np.uint8)
    Image.fromarray(np.repeat(ids, H, 0), "L").save(
        raw / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png")
    prepare_dataset("cityscapes", raw, tmp_path / "out", PARAMS)
    got = np.asarray(Image.open(tmp_path / "out/labels/train/aachen_000000_000019.png"))[0]
    # road sidewalk building sky person car bicycle | unlabeled ego parking caravan trailer guard rail
    assert got.tolist() == [0, 1, 2, 10, 11, 13, 18, 255, 255, 255, 255, 255, 255]


def test_optional_test_split(tmp_path):
    raw = tmp_path / "raw"
    build(raw, {"train": {"aachen": 1}, "val": {"lindau": 1}, "test": {"berlin": 2}})
    meta = prepare_dataset("cityscapes", raw, tmp_path / "out", PARAMS)
    assert meta["splits"] == {"train": 1, "val": 1, "test": 2}


def test_missing_label_names_the_file(tmp_path):
    raw = tmp_path / "raw"
    build(raw)
    missing = raw / "gtFine/val/frankfurt/frankfurt_000001_000019_gtFine_labelIds.png"
    missing.unlink()
    with pytest.raises(DataError, match=re.escape(str(missing))):
        prepare_dataset("cityscapes", raw, tmp_path / "out", PARAMS)
    assert not (tmp_path / "out").exists()


def test_colour_label_instead_of_label_ids(tmp_path):
    raw = tmp_path / "raw"
    build(raw)
    bad = raw / "gtFine/train/aachen/aachen_000001_000019_gtFine_labelIds.png"
    Image.fromarray(np.zeros((H, W, 3), np.uint8), "RGB").save(bad)
    with pytest.raises(DataError, match=re.escape(str(bad)) + ".*colour image"):
        prepare_dataset("cityscapes", raw, tmp_path / "out", PARAMS)


class TestCityscapesFormat(BaseFormatTest):
    dataset = "cityscapes"
    params = PARAMS
    layout_line = "gtFine/train/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png"
    first_required = "leftImg8bit/train"
    size_says = rf": label is {W}x{H + 1} \(WxH\) but its image .* is {W}x{H}; .*same size"
    outside_says = ": label values outside the classes: 34, 200 "
    empty_says = ": split 'val' is empty .*; found .* one sub-folder per city"

    def build(self, raw: Path) -> None:
        build(raw)

    def remove_layout_path(self, raw: Path) -> Path:
        for p in (raw / "gtFine/val/frankfurt").iterdir():
            p.unlink()
        (raw / "gtFine/val/frankfurt").rmdir()
        (raw / "gtFine/val").rmdir()
        return raw / "gtFine/val"

    def corrupt_image(self, raw: Path) -> Path:
        bad = raw / "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png"
        bad.write_bytes(bad.read_bytes()[:-40])
        return bad

    def mismatch_sizes(self, raw: Path) -> Path:
        bad = raw / "gtFine/val/frankfurt/frankfurt_000000_000019_gtFine_labelIds.png"
        Image.fromarray(np.zeros((H + 1, W), np.uint8), "L").save(bad)
        return bad

    def label_outside_classes(self, raw: Path) -> Path:
        bad = raw / "gtFine/train/bremen/bremen_000000_000019_gtFine_labelIds.png"
        ids = np.asarray(Image.open(bad)).copy()
        ids[0, 0], ids[1, 1] = 34, 200
        Image.fromarray(ids, "L").save(bad)
        return bad

    def empty_split(self, raw: Path) -> Path:
        # Images straight in leftImg8bit/val, not in one sub-folder per city.
        val = raw / "leftImg8bit/val"
        for p in list(val.rglob("*.png")):
            p.rename(val / p.name)
        for d in [d for d in val.iterdir() if d.is_dir()]:
            d.rmdir()
        return val
