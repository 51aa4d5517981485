"""The search's view of a prepared dataset (see :mod:`nasseg.data`)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..data import AugmentParams, DataError, search_datasets
from .proxy import ProxyData


def make_proxy_data(data_dir: str | Path, config: Any) -> ProxyData:
    """Meta-train (per-stage crops) and meta-val sets for ``config`` (a SearchConfig).

    Stage 1 reads a seeded random subset of ``proxy.stage1.num_images`` crops.
    """
    d, p = config.data, config.proxy
    aug1 = AugmentParams(crop_size=p.stage1.crop_size, resize_side=p.stage1.resize_side,
                         scale_range=tuple(d.scale_range), resize_longer=d.resize_longer,
                         val_resize_side=d.val_resize_side, val_crop_size=d.val_crop_size)
    aug2 = replace(aug1, crop_size=p.stage2.crop_size, resize_side=p.stage2.resize_side)
    kw = dict(meta_train_fraction=d.meta_train_fraction, seed=config.seed)
    train1, val = search_datasets(str(data_dir), d.train_split, d.val_split, aug1, **kw)
    train2, _ = search_datasets(str(data_dir), d.train_split, d.val_split, aug2, **kw)
    if train1.task != "segmentation":
        raise DataError(f"{Path(data_dir) / 'meta.json'}: the search needs a segmentation dataset, "
                        f"this one's task is {train1.task!r}")
    order = torch.randperm(len(train1), generator=torch.Generator().manual_seed(config.seed)).tolist()
    train1 = train1.subset(order[: p.stage1.num_images], train1.transform)
    return ProxyData(train_stage1=train1, train_stage2=train2, val=val,
                     num_classes=train1.num_classes, loader_workers=d.loader_workers)
