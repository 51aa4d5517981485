"""NYUD-v2: a tiny MATLAB v7.3 file written column-major as MATLAB would, prepared.

The writer here is the test's own (h5py + the 512-byte MATLAB header), not
nasseg's, so a transposition bug in one cannot hide one in the other.
The bad-input cases all formats share run from :class:`TestNyudFormat`.
"""
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image

from nasseg.data import DataError, PrepareParams, PreparedDataset, prepare_dataset

from conftest import BaseFormatTest

PARAMS = PrepareParams(workers=2, check_split_sizes="ignore")
H, W, N = 6, 8, 4  # not square, so a missed transpose shows


def write_v73(path, arrays):
    """`arrays` in MATLAB's axis order (HxWx3xN); stored column-major like MATLAB."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, arr in arrays.items():
            ds = f.create_dataset(name, data=np.asarray(arr).T)
            ds.attrs["MATLAB_class"] = np.bytes_({np.dtype(np.uint8): "uint8",
                                                  np.dtype(np.uint16): "uint16",
                                                  np.dtype(np.float32): "single"}[arr.dtype])
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 " \
             b"HDF5 schema 1.00 ."
    with open(path, "r+b") as fh:
        fh.write(header.ljust(116) + b"\0" * 8 + b"\x00\x02IM")


def frames():
    y, x = np.mgrid[0:H, 0:W]
    images = np.zeros((H, W, 3, N), np.uint8)
    depths = np.zeros((H, W, N), np.float32)
    labels = np.zeros((H, W, N), np.uint16)
    for n in range(N):
        for c in range(3):
            images[..., c, n] = 10 * y + x + 60 * c + n  # distinct per row, column, channel
        depths[..., n] = 0.5 + 0.25 * y + 0.01 * x + n
        labels[..., n] = (y * W + x + n) % 6
    depths[0, 0, 0] = np.nan      # invalid
    depths[0, 1, 0] = 0.0         # invalid
    depths[0, 2, 0] = 1.2346      # -> 1235 mm
    return images, depths, labels


# raw label 0 = unlabelled; raw 1..5 -> 40-class ids (mapClass is 1-based, 0 = no class)
MAP_CLASS = np.array([[3, 1, 40, 0, 22]], np.float64)
EXPECTED_LUT = np.array([255, 2, 0, 39, 255, 21], np.uint8)


def build(root, *, mapping=True, train=(1, 3), test=(2, 4)):
    root.mkdir(parents=True, exist_ok=True)
    images, depths, labels = frames()
    write_v73(root / "nyu_depth_v2_labeled.mat",
              {"images": images, "depths": depths, "labels": labels, "rawDepths": depths})
    scipy.io.savemat(root / "splits.mat",
                     {"trainNdxs": np.array(train, np.float64).reshape(-1, 1),
                      "testNdxs": np.array(test, np.float64).reshape(-1, 1)})
    if mapping:
        names = np.empty((1, 40), dtype=object)
        names[0, :] = [f"class{i}" for i in range(1, 41)]
        scipy.io.savemat(root / "classMapping40.mat", {"mapClass": MAP_CLASS, "className": names})
    return images, depths, labels


def test_orientation_depth_and_labels(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    images, depths, labels = build(raw)
    with h5py.File(raw / "nyu_depth_v2_labeled.mat", "r") as f:
        assert f["images"].shape == (N, 3, W, H)  # as h5py shows MATLAB's HxWx3xN
    meta = prepare_dataset("nyud", raw, out, PARAMS)
    assert meta["task"] == "depth" and meta["splits"] == {"train": 2, "test": 2}
    assert meta["depth"]["unit"] == "mm" and meta["ignore_index"] == 0
    seg = meta["segmentation"]
    assert seg["num_classes"] == 40 and seg["class_names"][0] == "class1"
    assert seg["splits"] == {"train": 2, "test": 2}
    assert (out / "train.lst").read_text() == (
        "images/train/0001.png\tdepth/train/0001.png\nimages/train/0003.png\tdepth/train/0003.png\n")
    assert (out / "test.seg.lst").read_text().splitlines()[1] == \
        "images/test/0004.png\tlabels/test/0004.png"
    for split, idx in (("train", (1, 3)), ("test", (2, 4))):
        for i in idx:
            n = i - 1  # splits.mat is 1-based
            rgb = np.asarray(Image.open(out / f"images/{split}/{i:04d}.png").convert("RGB"))
            assert rgb.shape == (H, W, 3)  # upright: 480x640 for the real data
            np.testing.assert_array_equal(rgb, images[..., n])
            assert rgb[1, 0, 0] == 10 + n and rgb[0, 1, 0] == 1 + n  # rows are rows
            depth = np.asarray(Image.open(out / f"depth/{split}/{i:04d}.png"))
            assert depth.dtype == np.uint16 and depth.shape == (H, W)
            expected = np.round(np.nan_to_num(depths[..., n]) * 1000).astype(np.uint16)
            np.testing.assert_array_equal(depth, expected)
            label = np.asarray(Image.open(out / f"labels/{split}/{i:04d}.png"))
            assert label.dtype == np.uint8
            np.testing.assert_array_equal(label, EXPECTED_LUT[labels[..., n]])
    depth1 = np.asarray(Image.open(out / "depth/train/0001.png"))
    assert depth1[0, :3].tolist() == [0, 0, 1235]


def test_loader_reads_depth_in_metres_and_labels(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    _, depths, labels = build(raw)
    prepare_dataset("nyud", raw, out, PARAMS)
    ds = PreparedDataset(out, "train")
    image, depth = ds[1]  # frame 3
    assert image.shape == (3, H, W) and depth.shape == (H, W)
    np.testing.assert_allclose(depth.numpy(), np.round(depths[..., 2] * 1000) / 1000, atol=1e-6)
    seg = PreparedDataset(out, "test", task="segmentation")
    assert seg.num_classes == 40 and seg.ignore_index == 255
    np.testing.assert_array_equal(seg[0][1].numpy(), EXPECTED_LUT[labels[..., 1]])


def test_without_mapping_only_depth(tmp_path):
    raw = tmp_path / "raw"
    build(raw, mapping=False)
    meta = prepare_dataset("nyud", raw, tmp_path / "out", PARAMS)
    assert "segmentation" not in meta
    assert not (tmp_path / "out/labels").exists()


def test_mapping_given_on_the_command_line(tmp_path):
    raw = tmp_path / "raw"
    build(raw, mapping=True)
    moved = tmp_path / "elsewhere.mat"
    (raw / "classMapping40.mat").rename(moved)
    meta = prepare_dataset("nyud", raw, tmp_path / "out", PARAMS, class_mapping=moved)
    assert meta["segmentation"]["num_classes"] == 40


def test_v5_file_instead_of_v73(tmp_path):
    raw = tmp_path / "raw"
    build(raw)
    bad = raw / "nyu_depth_v2_labeled.mat"
    images, depths, _ = frames()
    scipy.io.savemat(bad, {"images": images, "depths": depths})
    with pytest.raises(DataError, match=re.escape(str(bad)) + ".*MATLAB v5.*v7.3"):
        prepare_dataset("nyud", raw, tmp_path / "out", PARAMS)


def test_split_index_outside_the_frames(tmp_path):
    raw = tmp_path / "raw"
    build(raw, train=(1, 5))
    with pytest.raises(DataError, match=re.escape(str(raw / "splits.mat")) + ".*index 5.*1..4"):
        prepare_dataset("nyud", raw, tmp_path / "out", PARAMS)


class TestNyudFormat(BaseFormatTest):
    dataset = "nyud"
    params = PARAMS
    layout_line = "MATLAB v5: trainNdxs (795), testNdxs (654), 1-based"
    first_required = "nyu_depth_v2_labeled.mat"
    corrupt_says = r": cannot open nyu_depth_v2_labeled.mat as HDF5 \(.+\); re-download it"
    size_says = (rf": depths is \({H - 1}, {W}, {N}\) \(MATLAB\) but images is {H}x{W}x3x{N}; "
                 "image and depths must match in size")
    outside_says = ": labels of frame 0004 hold values up to 6, outside the 5 classes"
    empty_says = ": testNdxs is empty, so split 'test' would be empty"

    def build(self, raw: Path) -> None:
        build(raw)

    def remove_layout_path(self, raw: Path) -> Path:
        (raw / "splits.mat").unlink()
        return raw / "splits.mat"

    def corrupt_image(self, raw: Path) -> Path:
        bad = raw / "nyu_depth_v2_labeled.mat"
        bad.write_bytes(bad.read_bytes()[:3000])
        return bad

    def mismatch_sizes(self, raw: Path) -> Path:
        images, depths, labels = frames()
        write_v73(raw / "nyu_depth_v2_labeled.mat",
                  {"images": images, "depths": depths[:-1], "labels": labels})
        return raw / "nyu_depth_v2_labeled.mat"

    def label_outside_classes(self, raw: Path) -> Path:
        images, depths, labels = frames()
        labels[2, 2, 3] = 6  # the mapping knows raw classes 1..5
        write_v73(raw / "nyu_depth_v2_labeled.mat",
                  {"images": images, "depths": depths, "labels": labels})
        return raw / "nyu_depth_v2_labeled.mat"

    def empty_split(self, raw: Path) -> Path:
        build(raw, test=())
        return raw / "splits.mat"
