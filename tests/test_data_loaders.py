"""Transforms, datasets over the prepared format, loaders, the meta-train/meta-val split."""
import re

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from nasseg.data import (IMAGENET_MEAN, IMAGENET_STD, AugmentParams, DataError, PreparedDataset,
                         make_loader, meta_split_indices, prepare_dataset, search_datasets,
                         synthesize_dataset, train_transform, val_transform)
from nasseg.data.transforms import ResizeScale

MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("loaders")
    synthesize_dataset("cityscapes", root / "raw", num_images=20, seed=0, height=48, width=96)
    prepare_dataset("cityscapes", root / "raw", root / "prepared")
    return root / "prepared"


def pair(h, w):
    """An image whose red channel encodes the label (label * 10), and the label."""
    label = torch.from_numpy(np.add.outer(np.arange(h), np.arange(w)) % 19).to(torch.uint8)
    image = torch.zeros(3, h, w, dtype=torch.uint8)
    image[0] = label * 10
    image[1] = 77
    return tv_tensors.Image(image), tv_tensors.Mask(label)


def denormalise(x):
    return (x * STD + MEAN) * 255


def test_resize_scale_clamps_like_the_original():
    img, lbl = pair(100, 200)
    # shorter side kept >= side: 0.7 * 100 < 150, so the scale becomes 1.5
    out, _ = ResizeScale(150, (0.7, 0.7))(img, lbl)
    assert tuple(out.shape[-2:]) == (150, 300)
    # longer side kept <= side: 1.4 * 200 > 150, so the scale becomes 0.75
    out, m = ResizeScale(150, (1.4, 1.4), longer=True)(img, lbl)
    assert tuple(out.shape[-2:]) == (75, 150) and tuple(m.shape[-2:]) == (75, 150)
    # within the range the random scale is used
    torch.manual_seed(0)
    sizes = {tuple(ResizeScale(50, (0.7, 1.4))(img)[0].shape[-2:]) for _ in range(20)}
    assert len(sizes) > 5 and all(70 <= h <= 140 for h, _ in sizes)


def test_resized_labels_stay_labels():
    img, lbl = pair(40, 60)
    _, m = ResizeScale(40, (1.37, 1.37))(img, lbl)
    assert m.dtype == torch.uint8 and set(m.unique().tolist()) <= set(range(19))


def test_train_transform_keeps_image_and_label_aligned_and_pads_with_ignore():
    params = AugmentParams(crop_size=64, resize_side=30, scale_range=(1.0, 1.0))
    tf = train_transform(params)
    torch.manual_seed(0)
    flips = set()
    for _ in range(12):
        img, lbl = pair(30, 50)  # smaller than the crop: padded
        x, y = tf(img, lbl)
        assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and y.shape == (64, 64)
        raw = denormalise(x)
        valid = y != 255
        assert valid.sum() == 30 * 50  # padding only, nothing lost
        np.testing.assert_allclose(raw[0][valid], y[valid].float() * 10, atol=0.01)
        np.testing.assert_allclose(raw[1][valid], 77, atol=0.01)
        # padding: label 255, image the mean colour (0 after normalisation)
        assert x[:, ~valid].abs().max() < 0.02
        top, left = torch.nonzero(valid).min(0).values.tolist()
        inner = y[top:top + 30, left:left + 50]
        if torch.equal(inner, lbl.long()):
            flips.add("kept")
        else:
            assert torch.equal(inner, lbl.flip(-1).long())
            flips.add("mirrored")
    assert flips == {"kept", "mirrored"}


def test_val_transform_is_a_centre_crop():
    params = AugmentParams(val_resize_side=40, val_crop_size=20, resize_longer=False)
    img, lbl = pair(40, 80)
    x1, y1 = val_transform(params)(img, lbl)
    x2, y2 = val_transform(params)(img, lbl)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.equal(y1, lbl[10:30, 30:50])
    # no crop: the whole (resized) image
    x, y = val_transform(AugmentParams(val_resize_side=40, val_crop_size=None))(img, lbl)
    assert tuple(y.shape) == (40, 80)


def test_prepared_dataset(prepared):
    ds = PreparedDataset(prepared, "train")
    assert len(ds) == 15 and ds.num_classes == 19 and ds.ignore_index == 255
    image, label = ds[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 48, 96)
    assert label.dtype == torch.int64 and label.shape == (48, 96)
    assert ds.ids[0].startswith("aachen_")
    with pytest.raises(DataError, match="no split 'test'"):
        PreparedDataset(prepared, "test")
    with pytest.raises(DataError, match="has no 'depth' targets"):
        PreparedDataset(prepared, "train", task="depth")


def test_meta_split_is_seeded_and_disjoint():
    tr, va = meta_split_indices(100, 0.9, seed=1)
    assert len(tr) == 90 and len(va) == 10 and not set(tr) & set(va)
    assert sorted(tr + va) == list(range(100))
    assert meta_split_indices(100, 0.9, seed=1) == (tr, va)
    assert meta_split_indices(100, 0.9, seed=2) != (tr, va)
    assert meta_split_indices(5, 0.9, seed=0)[1]  # meta-val never empty
    with pytest.raises(ValueError):
        meta_split_indices(1)


def test_search_datasets(prepared):
    aug = AugmentParams(crop_size=32, resize_side=48, val_resize_side=48, val_crop_size=32)
    tr, va = search_datasets(prepared, "train", "train", aug, seed=0)
    assert (len(tr), len(va)) == (13, 2) and not set(tr.ids) & set(va.ids)
    x, y = tr[0]
    assert x.shape == (3, 32, 32) and y.dtype == torch.int64
    tr, va = search_datasets(prepared, "train", "val", aug)
    assert (len(tr), len(va)) == (15, 5)


def test_loader_with_workers_is_reproducible(prepared):
    aug = AugmentParams(crop_size=32, resize_side=48)
    ds = PreparedDataset(prepared, "train", train_transform(aug))
    batches = []
    for _ in range(2):
        loader = make_loader(ds, batch_size=4, train=True, workers=2, seed=7)
        assert loader.persistent_workers and loader.num_workers == 2
        x, y = next(iter(loader))
        batches.append((x, y))
    assert x.shape == (4, 3, 32, 32) and y.shape == (4, 32, 32)
    assert torch.equal(batches[0][0], batches[1][0]) and torch.equal(batches[0][1], batches[1][1])
    other = next(iter(make_loader(ds, batch_size=4, train=True, workers=0, seed=8)))
    assert not torch.equal(other[0], batches[0][0])


def test_missing_or_broken_prepared_files(prepared, tmp_path):
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "meta.json")) + ": not found"):
        PreparedDataset(tmp_path, "train")
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy)
    (copy / "val.lst").write_text("images/val/a.png labels/val/a.png\n")
    with pytest.raises(DataError, match=re.escape(str(copy / "val.lst")) + ":1: expected"):
        PreparedDataset(copy, "val")
    ds = PreparedDataset(copy, "train")
    ds.items[0][0].unlink()
    with pytest.raises(DataError, match=re.escape(str(ds.items[0][0]))):
        ds[0]


def test_workers_start_after_the_parent_used_opencv_threads(prepared):
    """Regression: touching OpenCV's thread pool in a forked worker deadlocked the loader
    once the parent had run a large (multi-threaded) OpenCV operation."""
    import os
    import signal
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import cv2, numpy as np
        from nasseg.data import PreparedDataset, make_loader
        cv2.cvtColor(np.zeros((1024, 2048, 3), np.uint8), cv2.COLOR_BGR2RGB)
        ds = PreparedDataset({str(prepared)!r}, "train")
        x, y = next(iter(make_loader(ds, batch_size=2, train=True, workers=1)))
        print(tuple(x.shape))
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the worker too
        proc.communicate()
        pytest.fail("the loader's worker deadlocked")
    assert proc.returncode == 0, err
    assert out.strip() == "(2, 3, 48, 96)"


def test_keep_decoded_reads_each_file_once_within_its_budget_and_still_augments(prepared, monkeypatch):
    import nasseg.data.datasets as datasets

    aug = AugmentParams(crop_size=32, resize_side=48)
    ds = PreparedDataset(prepared, "train", train_transform(aug))
    image, target = ds.load(0)
    one = image.nbytes + target.nbytes
    reads = []
    real = datasets.load_rgb
    monkeypatch.setattr(datasets, "load_rgb", lambda path: reads.append(path.name) or real(path))
    kept = ds.keep_decoded(one)   # room for one sample
    torch.manual_seed(0)
    first = [kept[i] for i in (0, 1, 0, 1)]
    assert reads == [ds.items[0][0].name, ds.items[1][0].name, ds.items[1][0].name]
    assert not torch.equal(first[0][0], first[2][0])   # the same image, cropped anew
    torch.manual_seed(0)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
               for a, b in zip(first, [ds[i] for i in (0, 1, 0, 1)]))   # what the disk gives
    assert ds._decoded is None   # the original reads from disk as before


def test_the_evaluator_keeps_decoded_stage2_images_only_when_read_in_process(prepared):
    from nasseg.search.data import ProxyData

    ds = PreparedDataset(prepared, "train")
    data = ProxyData(train_stage1=ds, train_stage2=ds, val=ds, num_classes=19, val_source="-",
                     loader_workers=0, keep_decoded_bytes=1 << 20)
    assert data.stage2_reader()._decoded == {}
    for workers, budget in ((2, 1 << 20), (0, 0)):
        data.loader_workers, data.keep_decoded_bytes = workers, budget
        assert data.stage2_reader() is ds
