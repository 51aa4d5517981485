"""The search's data: a prepared dataset (see :mod:`nasseg.data`) as the proxy stages read it.

:func:`make_proxy_data` gives each worker its meta-train set (with each stage's crop
and resize) and its meta-val set. :func:`check_search_data` runs in the search
process before any architecture is trained and fails, naming the file or the key to
change, on what would otherwise fail every architecture alike: too few images for
the batch sizes, label values outside the classes, omitted classes the data does not
have, a validation set without a pixel to score.

Where we differ from the original (``src/data/`` and ``src/engine/inference.py`` of
DrSleep/nas-segm-pytorch): its validation silently ignores label values at or above
the number of classes, and nothing is checked before the search starts; stage 1 reads
a seeded random subset of ``proxy.stage1.num_images`` crops, where the original takes
the first ``n_task0`` crops of its shuffled training loader.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..data import AugmentParams, DataError, PreparedDataset, search_datasets
from ..data.imageio import check_label_values, load_single_channel


@dataclass
class ProxyData:
    """Datasets yielding ``(image float[3,H,W], labels int[H,W])``.

    ``train_stage1`` and ``val`` are read once (bounded by the config) and kept in
    memory; ``train_stage2`` is iterated by a DataLoader every stage-2 epoch, and read
    in the training process when ``loader_workers`` is 0: then the evaluator keeps up
    to ``keep_decoded_bytes`` of its decoded images in memory.
    ``val_source`` names the validation samples in error messages.
    """
    train_stage1: Dataset
    train_stage2: Dataset
    val: Dataset
    num_classes: int
    val_source: str
    loader_workers: int = 0
    keep_decoded_bytes: int = 0

    def stage2_reader(self) -> Dataset:
        """``train_stage2`` as one evaluator reads it: keeping decoded images in memory
        (:meth:`PreparedDataset.keep_decoded`) when it is read in-process."""
        ds = self.train_stage2
        if self.loader_workers == 0 and self.keep_decoded_bytes > 0 and isinstance(ds, PreparedDataset):
            return ds.keep_decoded(self.keep_decoded_bytes)
        return ds


def _search_splits(data_dir: str | Path, config: Any) -> tuple[PreparedDataset, PreparedDataset, PreparedDataset]:
    """Stage-1 crops (a seeded subset), stage-2 training set and validation set of ``config``."""
    d, p = config.data, config.proxy
    aug1 = AugmentParams(crop_size=p.stage1.crop_size, resize_side=p.stage1.resize_side,
                         scale_range=tuple(d.scale_range), resize_longer=d.resize_longer,
                         val_resize_side=d.val_resize_side, val_crop_size=d.val_crop_size,
                         style=d.transforms)
    aug2 = replace(aug1, crop_size=p.stage2.crop_size, resize_side=p.stage2.resize_side)
    kw = dict(meta_train_fraction=d.meta_train_fraction, seed=config.seed)
    train1, val = search_datasets(str(data_dir), d.train_split, d.val_split, aug1, **kw)
    train2, _ = search_datasets(str(data_dir), d.train_split, d.val_split, aug2, **kw)
    if train1.task != "segmentation":
        raise DataError(f"{Path(data_dir) / 'meta.json'}: the search needs a segmentation dataset, "
                        f"this one's task is {train1.task!r}")
    order = torch.randperm(len(train1), generator=torch.Generator().manual_seed(config.seed)).tolist()
    train1 = train1.subset(order[: p.stage1.num_images], train1.transform)
    return train1, train2, val


def make_proxy_data(data_dir: str | Path, config: Any) -> ProxyData:
    """Meta-train (per-stage crops) and meta-val sets for ``config`` (a SearchConfig).

    Stage 1 reads a seeded random subset of ``proxy.stage1.num_images`` crops.
    """
    train1, train2, val = _search_splits(data_dir, config)
    shown = config.proxy.val_images_scored(len(val))
    return ProxyData(train_stage1=train1, train_stage2=train2, val=val, num_classes=train1.num_classes,
                     val_source=f"the first {shown} images of {val.list_path}",
                     loader_workers=config.data.loader_workers,
                     keep_decoded_bytes=config.data.keep_decoded_mb << 20)


def check_search_data(data_dir: str | Path, config: Any) -> None:
    """Fail, naming the file or key, on data or settings that would fail every architecture.

    Reads every label file the search trains on and the validation labels it scores
    (not the images): a few milliseconds per file.
    """
    train1, train2, val = _search_splits(data_dir, config)
    p = config.proxy
    n = train1.num_classes
    outside = sorted(c for c in p.omit_classes if c >= n)
    if outside:
        raise ValueError(f"proxy.omit_classes lists {outside}, but {Path(data_dir) / 'meta.json'} has "
                         f"{n} classes (0..{n - 1}); fix proxy.omit_classes")
    if p.stage1.epochs > 0 and min(len(train1), p.stage1.batch_size) < 2:
        raise DataError(f"{train1.list_path}: stage 1 needs batches of at least 2 images (BatchNorm); it has "
                        f"{len(train1)} image(s) and proxy.stage1.batch_size {p.stage1.batch_size}: raise "
                        "them, or set proxy.stage1.epochs: 0")
    if p.stage2.epochs > 0 and p.stage2.batch_size < 2:
        raise ValueError(f"proxy.stage2.batch_size is {p.stage2.batch_size}; BatchNorm needs batches of at "
                         "least 2 images: raise it, or set proxy.stage2.epochs: 0")
    if p.stage2.epochs > 0 and len(train2) < p.stage2.batch_size:
        raise DataError(f"{train2.list_path}: stage 2 has {len(train2)} training image(s), fewer than "
                        f"proxy.stage2.batch_size {p.stage2.batch_size} (incomplete batches are dropped); "
                        "lower proxy.stage2.batch_size")
    valid = np.zeros(256, dtype=bool)
    valid[:n] = True
    valid[train1.ignore_index] = True
    hint = (f"the dataset has {n} classes, 0..{n - 1}, and {train1.ignore_index} = ignore; fix the file "
            "or re-run the prepare stage")
    for _, label_path in train2.items:
        check_label_values(load_single_channel(label_path, np.uint8), valid, label_path, hint)
    scored = valid.copy()
    scored[train1.ignore_index] = False
    scored[list(p.omit_classes)] = False
    scored_pixels = 0
    n_val = p.val_images_scored(len(val))
    if n_val == 0 and len(val) > 0:
        raise DataError(f"{val.list_path}: {len(val)} validation image(s), fewer than proxy.val_batch_size "
                        f"{p.val_batch_size}, and proxy.val_drop_last drops incomplete batches: lower "
                        "proxy.val_batch_size or set proxy.val_drop_last: false")
    for _, label_path in val.items[:n_val]:
        label = load_single_channel(label_path, np.uint8)
        check_label_values(label, valid, label_path, hint)
        scored_pixels += int(np.count_nonzero(scored[label]))
    if scored_pixels == 0:
        raise DataError(f"{val.list_path}: the first {n_val} validation labels "
                        "have no pixel of a scored class (only ignored pixels or proxy.omit_classes), so "
                        "no reward can be computed; check the labels, proxy.omit_classes and "
                        "proxy.val_num_images")


def downsample_labels(labels: torch.Tensor, size: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """Nearest-neighbour resize of an N x H x W label tensor (dtype kept), as the original."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    out = F.interpolate(labels[:, None].float(), size=tuple(size), mode="nearest")[:, 0]
    return out.to(labels.dtype)
