"""DataLoaders, and the seeded 90/10 meta-train / meta-val split of the search."""
from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .datasets import PreparedDataset
from .transforms import AugmentParams, train_transform, val_transform


def _init_worker(worker_id: int) -> None:
    # Seed numpy/random from torch's per-worker seed (torch itself is seeded per worker).
    # Do not touch OpenCV's thread pool here: cv2.setNumThreads in a forked worker
    # deadlocks when the parent process has already used that pool.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(dataset: Dataset, batch_size: int, *, train: bool, workers: int = 2,
                seed: int = 0, pin_memory: bool | None = None, drop_last: bool | None = None,
                prefetch_factor: int | None = 2) -> DataLoader:
    """A DataLoader with workers, pinned memory (when an accelerator is present), persistent
    workers and a seeded shuffling/augmentation stream (same seed, same batches)."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=train,
        drop_last=train if drop_last is None else drop_last,
        num_workers=workers, pin_memory=pin_memory,
        persistent_workers=workers > 0,
        prefetch_factor=prefetch_factor if workers > 0 else None,
        worker_init_fn=_init_worker if workers > 0 else None,
        generator=generator)


def meta_split_indices(n: int, train_fraction: float = 0.9, seed: int = 0) -> tuple[list[int], list[int]]:
    """Seeded permutation of range(n) cut into meta-train (`train_fraction`) and meta-val."""
    if n < 2:
        raise ValueError(f"need at least 2 samples to split into meta-train and meta-val, got {n}")
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    g = torch.Generator()
    g.manual_seed(seed)
    perm = torch.randperm(n, generator=g).tolist()
    n_train = min(n - 1, max(1, int(n * train_fraction)))
    return sorted(perm[:n_train]), sorted(perm[n_train:])


def search_datasets(root: str, train_split: str, val_split: str, augment: AugmentParams, *,
                    meta_train_fraction: float = 0.9, seed: int = 0, task: str | None = None,
                    ) -> tuple[PreparedDataset, PreparedDataset]:
    """Training and validation sets of the search.

    When both splits are the same list (as in the papers, where the search trains
    and validates on the training set), it is divided into meta-train and meta-val
    (`meta_train_fraction`, seeded); otherwise the two splits are used as they are.
    """
    base = PreparedDataset(root, train_split, task=task)
    trn_tf = train_transform(augment, base.target_fill)
    val_tf = val_transform(augment, base.target_fill)
    if train_split == val_split:
        tr, va = meta_split_indices(len(base), meta_train_fraction, seed)
        return base.subset(tr, trn_tf), base.subset(va, val_tf)
    return (PreparedDataset(root, train_split, trn_tf, task=task),
            PreparedDataset(root, val_split, val_tf, task=task))
