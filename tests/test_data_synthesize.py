"""synthesize -> prepare for all four datasets, determinism, and never touching real data."""
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nasseg.data import DataError, PrepareParams, prepare_dataset, synthesize_dataset
from stages import synthesize as synthesize_stage

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"voc": (12, 30, 40), "nyud": (8, 24, 32), "cityscapes": (8, 32, 64), "camvid": (9, 30, 40)}


def tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("dataset", sorted(SMALL))
def test_synthesize_then_prepare(dataset, tmp_path, capsys):
    n, h, w = SMALL[dataset]
    raw, out = tmp_path / "raw", tmp_path / "out"
    rc = synthesize_stage.main(["--dataset", dataset, "--out", str(raw), "--num-images", str(n),
                                "--height", str(h), "--width", str(w), "--seed", "5",
                                "--params", str(ROOT / "params.yaml"), "--source", "synthetic"])
    assert rc == 0, capsys.readouterr().err
    marker = json.loads((raw / "SYNTHETIC.json").read_text())
    meta = prepare_dataset(dataset, raw, out, PrepareParams())
    assert meta["synthetic"] is True and meta["splits"] == marker["splits"]
    assert sum(meta["splits"].values()) <= n and min(meta["splits"].values()) >= 1
    first_split = next(iter(meta["splits"]))
    img_rel, tgt_rel = (out / f"{first_split}.lst").read_text().splitlines()[0].split("\t")
    target = np.asarray(Image.open(out / tgt_rel))
    if dataset == "nyud":
        assert target.dtype == np.uint16 and (target > 0).mean() > 0.5
        assert meta["segmentation"]["num_classes"] == 40
    else:
        assert target.dtype == np.uint8
        assert len(set(np.unique(target)) - {255}) >= 2  # several classes per image
    assert Image.open(out / img_rel).size[::-1] == target.shape


def test_real_file_formats(tmp_path):
    """The stand-ins use the official formats: v7.3 HDF5, v5 .mat, palette and index PNGs."""
    import h5py
    import scipy.io

    for ds in SMALL:
        n, h, w = SMALL[ds]
        synthesize_dataset(ds, tmp_path / ds, num_images=n, seed=0, height=h, width=w)
    nyud = tmp_path / "nyud/nyu_depth_v2_labeled.mat"
    assert nyud.read_bytes()[:19] == b"MATLAB 7.3 MAT-file" and h5py.is_hdf5(nyud)
    with h5py.File(nyud) as f:
        assert f["images"].shape == (8, 3, 32, 24)  # MATLAB's 24x32x3x8, column-major
    splits = scipy.io.loadmat(tmp_path / "nyud/splits.mat")
    assert splits["trainNdxs"].shape[1] == 1 and splits["trainNdxs"].min() >= 1
    seg = next((tmp_path / "voc/VOCdevkit/VOC2012/SegmentationClass").iterdir())
    assert Image.open(seg).mode == "P" and 255 in np.asarray(Image.open(seg))
    sbd = next((tmp_path / "voc/benchmark_RELEASE/dataset/cls").iterdir())
    gt = scipy.io.loadmat(sbd, squeeze_me=True, struct_as_record=False)["GTcls"]
    assert gt.Segmentation.dtype == np.uint8 and len(gt.Boundaries) == 20
    lbl = next((tmp_path / "cityscapes/gtFine/train").rglob("*_gtFine_labelIds.png"))
    assert Image.open(lbl).mode == "L"
    assert Image.open(next((tmp_path / "camvid/trainannot").iterdir())).mode == "L"


def test_deterministic_for_a_seed(tmp_path):
    for ds, (n, h, w) in SMALL.items():
        synthesize_dataset(ds, tmp_path / "a" / ds, num_images=n, seed=1, height=h, width=w)
        synthesize_dataset(ds, tmp_path / "b" / ds, num_images=n, seed=1, height=h, width=w)
        synthesize_dataset(ds, tmp_path / "c" / ds, num_images=n, seed=2, height=h, width=w)
        a, b, c = (tree(tmp_path / x / ds) for x in "abc")
        assert a == b, ds
        assert a != c, ds


def test_every_class_appears_in_the_default_cityscapes_preset(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    synthesize_dataset("cityscapes", raw, num_images=48, seed=0, height=64, width=128)
    prepare_dataset("cityscapes", raw, out, PrepareParams())
    seen = set()
    for line in (out / "train.lst").read_text().splitlines():
        seen |= set(np.unique(np.asarray(Image.open(out / line.split("\t")[1]))).tolist())
    assert seen - {255} == set(range(19))


def test_never_overwrites_data_it_did_not_write(tmp_path):
    real = tmp_path / "cityscapes"
    (real / "leftImg8bit").mkdir(parents=True)
    (real / "leftImg8bit" / "keep.png").write_bytes(b"x")
    with pytest.raises(DataError, match=re.escape(str(real))
                       + ".*no SYNTHETIC.json.*data.source.cityscapes: real"):
        synthesize_dataset("cityscapes", real, num_images=4, seed=0, height=32, width=64)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(DataError, match=re.escape(str(link)) + ": is a symbolic link"):
        synthesize_dataset("cityscapes", link, num_images=4, seed=0, height=32, width=64)
    assert (real / "leftImg8bit" / "keep.png").read_bytes() == b"x"
    # Its own output it replaces.
    own = tmp_path / "own"
    synthesize_dataset("camvid", own, num_images=6, seed=0, height=20, width=20)
    synthesize_dataset("camvid", own, num_images=9, seed=0, height=20, width=20)
    assert json.loads((own / "SYNTHETIC.json").read_text())["num_images"] == 9


def test_source_real_only_checks_the_layout(tmp_path, capsys):
    raw = tmp_path / "camvid"
    synthesize_dataset("camvid", raw, num_images=6, seed=0, height=20, width=20)
    (raw / "SYNTHETIC.json").unlink()  # now it looks like a user's download
    before = tree(raw)
    args = ["--dataset", "camvid", "--out", str(raw), "--params", str(ROOT / "params.yaml"),
            "--source", "real"]
    assert synthesize_stage.main(args) == 0
    assert "nothing synthesized" in capsys.readouterr().out
    assert tree(raw) == before
    (raw / "valannot").rename(tmp_path / "elsewhere")
    assert synthesize_stage.main(args) == 2
    assert capsys.readouterr().err.startswith(f"error: {raw / 'valannot'}: not found")


def test_too_few_images(tmp_path, capsys):
    rc = synthesize_stage.main(["--dataset", "camvid", "--out", str(tmp_path / "x"),
                                "--num-images", "3", "--params", str(ROOT / "params.yaml"),
                                "--source", "synthetic"])
    assert rc == 2 and "at least 6" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
