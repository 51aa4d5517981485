"""PASCAL VOC 2012 + SBD: tiny official layout, split arithmetic, label sources, errors.

The bad-input cases all formats share run from :class:`TestVocFormat`.
"""
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse
from PIL import Image

from nasseg.data import DataError, PrepareParams, prepare_dataset
from nasseg.data.formats.voc import split_ids

from conftest import BaseFormatTest

PARAMS = PrepareParams(workers=2, check_split_sizes="ignore")
VOC = "VOCdevkit/VOC2012"
SBD = "benchmark_RELEASE/dataset"

# Lists chosen so the arithmetic is checkable by hand:
#   train_aug = (SBD train + SBD val + VOC train) - VOC val = {a1, a2, b1, s1, s2, s3}
#   val = VOC val = {v1, v2, v3}  (v1 and v2 are also in SBD, and must not leak into train_aug)
LISTS = {
    "voc_train": ["2007_a1", "2007_a2", "2008_b1"],
    "voc_val": ["2009_v1", "2009_v2", "2009_v3"],
    "sbd_train": ["2008_b1", "2010_s1", "2010_s2", "2009_v1"],
    "sbd_val": ["2011_s3", "2009_v2", "2007_a2", "2010_s1"],
}
VOC_ANNOTATED = set(LISTS["voc_train"]) | set(LISTS["voc_val"])
ONLY_IN_SBD_IMG = "2011_s3"  # its photo exists only in SBD's img/


def voc_palette():
    pal = np.zeros((256, 3), np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    return pal


def save_palette_png(path, indices):
    img = Image.fromarray(indices, "P")
    img.putpalette(voc_palette().ravel().tolist())
    img.save(path)


def save_sbd(path, seg):
    boundaries = np.empty((20, 1), dtype=object)
    for c in range(20):
        boundaries[c, 0] = scipy.sparse.csc_matrix(seg == c + 1)
    gt = {"Segmentation": seg, "Boundaries": boundaries,
          "CategoriesPresent": np.unique(seg[seg > 0]).astype(np.uint8).reshape(-1, 1)}
    scipy.io.savemat(path, {"GTcls": gt})


def build(root, seed=0):
    rng = np.random.default_rng(seed)
    for d in (f"{VOC}/JPEGImages", f"{VOC}/SegmentationClass", f"{VOC}/ImageSets/Segmentation",
              f"{SBD}/img", f"{SBD}/cls", f"{SBD}/inst"):
        (root / d).mkdir(parents=True, exist_ok=True)
    sbd_ids = set(LISTS["sbd_train"]) | set(LISTS["sbd_val"])
    all_ids = sorted(VOC_ANNOTATED | sbd_ids)
    labels = {}
    for k, i in enumerate(all_ids):
        h, w = (7, 10) if k % 2 else (10, 7)  # landscape and portrait
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        photo = Image.fromarray(rgb, "RGB")
        if i != ONLY_IN_SBD_IMG:
            photo.save(root / VOC / "JPEGImages" / f"{i}.jpg", quality=95)
        if i in sbd_ids:
            photo.save(root / SBD / "img" / f"{i}.jpg", quality=95)
        voc_label = rng.integers(0, 21, (h, w)).astype(np.uint8)
        voc_label[0, :] = 255  # VOC's ignore border
        sbd_label = rng.integers(0, 21, (h, w)).astype(np.uint8)
        if i in VOC_ANNOTATED:
            save_palette_png(root / VOC / "SegmentationClass" / f"{i}.png", voc_label)
        if i in sbd_ids:
            save_sbd(root / SBD / "cls" / f"{i}.mat", sbd_label)
        labels[i] = voc_label if i in VOC_ANNOTATED else sbd_label
    seg = root / VOC / "ImageSets/Segmentation"
    (seg / "train.txt").write_text("".join(f"{i}\n" for i in LISTS["voc_train"]))
    (seg / "val.txt").write_text("".join(f"{i}\n" for i in LISTS["voc_val"]))
    (root / SBD / "train.txt").write_text("".join(f"{i}\n" for i in LISTS["sbd_train"]))
    (root / SBD / "val.txt").write_text("\n".join(LISTS["sbd_val"]) + "\n\n")
    return labels


def test_split_arithmetic_and_labels(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    labels = build(raw)
    meta = prepare_dataset("voc", raw, out, PARAMS)
    assert meta["splits"] == {"train_aug": 6, "val": 3}
    assert meta["num_classes"] == 21 and meta["class_names"][15] == "person"
    assert meta["label_sources"] == {"voc": 6, "sbd": 3}
    ids = {s: [line.split("\t")[0].rsplit("/", 1)[1][:-4]
               for line in (out / f"{s}.lst").read_text().splitlines()] for s in meta["splits"]}
    assert ids["train_aug"] == ["2007_a1", "2007_a2", "2008_b1", "2010_s1", "2010_s2", "2011_s3"]
    assert ids["val"] == ["2009_v1", "2009_v2", "2009_v3"]
    for split, split_ids_ in ids.items():
        for i in split_ids_:
            got = Image.open(out / "labels" / split / f"{i}.png")
            assert got.mode == "L"
            # Palette PNGs are read as indices (not colours), 255 stays ignore; SBD as is.
            np.testing.assert_array_equal(np.asarray(got), labels[i])
            assert (out / "images" / split / f"{i}.jpg").is_file()
    # A photo missing from VOC's JPEGImages comes from SBD's img/.
    assert (out / "images/train_aug" / f"{ONLY_IN_SBD_IMG}.jpg").read_bytes() == \
        (raw / SBD / "img" / f"{ONLY_IN_SBD_IMG}.jpg").read_bytes()


def test_split_arithmetic_at_official_scale():
    # Lists with the official sizes (VOC train 1,464, VOC val 1,449, SBD train 8,498,
    # SBD val 2,857) and overlaps with SBD (x of VOC train, y of VOC val) chosen so that
    # x + y = 2,237: then |train_aug| = 1,464 + 11,355 - x - y = 10,582.
    x, y = 1121, 1116
    voc_val = [f"v{i}" for i in range(1449)]
    voc_train = [f"t{i}" for i in range(1464)]
    sbd = voc_val[:y] + voc_train[:x] + [f"s{i}" for i in range(11355 - x - y)]
    sbd = list(np.random.default_rng(0).permutation(sbd))
    splits = split_ids(voc_train, voc_val, sbd[:8498], sbd[8498:])
    assert len(splits["train_aug"]) == 1464 + 11355 - x - y == 10582
    assert len(splits["val"]) == 1449
    assert not set(splits["train_aug"]) & set(splits["val"])


def test_rgb_label_is_rejected(tmp_path):
    raw = tmp_path / "raw"
    build(raw)
    bad = raw / VOC / "SegmentationClass/2007_a1.png"
    Image.fromarray(np.zeros((7, 10, 3), np.uint8), "RGB").save(bad)
    with pytest.raises(DataError, match=re.escape(str(bad)) + ".*colour image"):
        prepare_dataset("voc", raw, tmp_path / "out", PARAMS)


def test_sbd_value_outside_the_classes(tmp_path):
    raw = tmp_path / "raw"
    build(raw)
    bad = raw / SBD / "cls/2010_s2.mat"
    seg = np.full((7, 10), 30, np.uint8)
    save_sbd(bad, seg)
    with pytest.raises(DataError, match=re.escape(str(bad)) + ".*outside the classes: 30"):
        prepare_dataset("voc", raw, tmp_path / "out", PARAMS)


def test_corrupt_sbd_mat(tmp_path):
    raw = tmp_path / "raw"
    build(raw)
    bad = raw / SBD / "cls/2010_s1.mat"
    bad.write_bytes(bad.read_bytes()[:150])
    with pytest.raises(DataError, match=re.escape(str(bad)) + ": corrupt or truncated"):
        prepare_dataset("voc", raw, tmp_path / "out", PARAMS)


def test_missing_image_names_the_file_and_list(tmp_path):
    raw = tmp_path / "raw"
    build(raw)
    (raw / VOC / "JPEGImages/2009_v3.jpg").unlink()  # not in SBD: no fallback
    with pytest.raises(DataError, match=re.escape(str(raw / VOC / "JPEGImages/2009_v3.jpg"))
                       + ".*" + re.escape(str(raw / VOC / "ImageSets/Segmentation/val.txt"))):
        prepare_dataset("voc", raw, tmp_path / "out", PARAMS)


def test_official_split_sizes_are_checked_for_real_data(tmp_path):
    raw = tmp_path / "raw"
    build(raw)
    with pytest.raises(DataError, match=re.escape(str(raw))
                       + r".*train_aug: 6 \(official 10582\), val: 3 \(official 1449\)"):
        prepare_dataset("voc", raw, tmp_path / "out", PrepareParams(check_split_sizes="error"))
    meta = prepare_dataset("voc", raw, tmp_path / "out", PrepareParams(check_split_sizes="warn"))
    assert meta["synthetic"] is False


class TestVocFormat(BaseFormatTest):
    dataset = "voc"
    params = PARAMS
    layout_line = "benchmark_RELEASE/dataset/cls/<id>.mat"
    first_required = "VOCdevkit/VOC2012/JPEGImages"
    # 2009_v1 is a landscape image, 10x7 (WxH)
    size_says = r": label is 11x7 \(WxH\) but its image .* is 10x7; .*same size"
    outside_says = ": label values outside the classes: 21 "
    empty_says = ": list file is empty"

    def build(self, raw: Path) -> None:
        build(raw)

    def remove_layout_path(self, raw: Path) -> Path:
        (raw / SBD / "train.txt").unlink()
        return raw / SBD / "train.txt"

    def corrupt_image(self, raw: Path) -> Path:
        bad = raw / VOC / "JPEGImages/2008_b1.jpg"
        bad.write_bytes(bad.read_bytes()[:-60])
        return bad

    def mismatch_sizes(self, raw: Path) -> Path:
        bad = raw / VOC / "SegmentationClass/2009_v1.png"
        save_palette_png(bad, np.zeros((7, 11), np.uint8))
        return bad

    def label_outside_classes(self, raw: Path) -> Path:
        bad = raw / VOC / "SegmentationClass/2009_v3.png"
        arr = np.asarray(Image.open(bad)).copy()
        arr[2, 2] = 21
        save_palette_png(bad, arr)
        return bad

    def empty_split(self, raw: Path) -> Path:
        empty = raw / VOC / "ImageSets/Segmentation/val.txt"
        empty.write_text("\n")
        return empty
