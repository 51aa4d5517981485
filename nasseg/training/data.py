"""Training data whose order and augmentation depend only on (seed, epoch, index).

What: :func:`epoch_order` is the seeded permutation of one epoch;
:class:`BatchPlan` walks the permutations of the epochs left to run from a given
(epoch, step) and yields each process's share of every global batch as
``(epoch, index)`` keys; :class:`SeededSamples` loads a key with its augmentation
seeded from ``(seed, epoch, index)``; :func:`make_train_loader` puts them into one
prefetching DataLoader for the whole run.

Why: a run killed at any moment and resumed from a checkpoint taken after step
``s`` of epoch ``e`` must see exactly the batches the uninterrupted run saw. The
data order is a function of ``(seed, epoch)`` and each sample's crop, scale and
flip a function of ``(seed, epoch, index)`` -- not of a random stream that has
advanced by however much the process had run -- so resuming skips exactly the
consumed batches, and the number of loader workers, the process count and the
prefetching never change what is trained on. A global batch is split into
contiguous shares, one per process (DistributedDataParallel), so ``n`` processes
see together the batch one process would see.

Where we differ from the original: the authors' search shuffles with the global
random stream and seeds workers from it (``src/data/loaders.py`` of
DrSleep/nas-segm-pytorch); their full training was not released. As there,
incomplete last batches are dropped.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..data import AugmentParams, DataError, PreparedDataset, eval_transform, train_transform, val_transform
from .config import TrainConfig

__all__ = ["sample_seed", "epoch_order", "BatchPlan", "SeededSamples", "make_train_loader",
           "training_sets", "val_batches"]

Key = tuple[int, int]   # (epoch, index)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's augmentation: a hash of (seed, epoch, index)."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index]).generate_state(1, np.uint64)[0]
               >> 1)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The order of the ``n`` training samples in ``epoch``: a permutation seeded by (seed, epoch)."""
    g = torch.Generator().manual_seed(sample_seed(seed, epoch, -1 & 0xFFFFFFFF))
    return torch.randperm(n, generator=g).tolist()


class BatchPlan(Sampler[list[Key]]):
    """This process's share of every global batch from ``(start_epoch, start_step)`` to the end.

    ``steps_per_epoch = n // batch_size`` (the incomplete last batch is dropped). Rank
    ``r`` of ``world`` processes gets the contiguous slice
    ``[r * B // world, (r + 1) * B // world)`` of each global batch of ``B`` samples.
    """

    def __init__(self, n: int, batch_size: int, seed: int, epochs: int, *, start_epoch: int = 0,
                 start_step: int = 0, rank: int = 0, world: int = 1):
        if batch_size > n:
            raise ValueError(f"batch_size {batch_size} is larger than the {n} training samples")
        if not 0 <= rank < world or world > batch_size:
            raise ValueError(f"rank {rank} of {world} processes cannot share batches of {batch_size}")
        self.n, self.batch_size, self.seed, self.epochs = n, batch_size, seed, epochs
        self.start_epoch, self.start_step, self.rank, self.world = start_epoch, start_step, rank, world
        self.steps_per_epoch = n // batch_size

    def share(self, batch: Sequence[int]) -> Sequence[int]:
        b = len(batch)
        return batch[self.rank * b // self.world:(self.rank + 1) * b // self.world]

    def __iter__(self) -> Iterator[list[Key]]:
        for epoch in range(self.start_epoch, self.epochs):
            order = epoch_order(self.n, self.seed, epoch)
            first = self.start_step if epoch == self.start_epoch else 0
            for step in range(first, self.steps_per_epoch):
                batch = order[step * self.batch_size:(step + 1) * self.batch_size]
                yield [(epoch, i) for i in self.share(batch)]

    def __len__(self) -> int:
        total = (self.epochs - self.start_epoch) * self.steps_per_epoch - self.start_step
        return max(0, total)


class SeededSamples(Dataset):
    """``dataset[index]`` with its random augmentation seeded from ``(seed, epoch, index)``.

    Indexed by ``(epoch, index)`` keys (see :class:`BatchPlan`). The transforms draw
    from torch's global stream; it is forked around each sample, so loading in the
    training process itself (``num_workers: 0``) leaves that process's stream alone.
    """

    def __init__(self, dataset: PreparedDataset, seed: int):
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, epoch, index))
            return self.dataset[index]


def _init_worker(_: int) -> None:
    # One intra-op thread per loader process: the training process owns the cores.
    torch.set_num_threads(1)


def make_train_loader(samples: SeededSamples, plan: BatchPlan, *, workers: int,
                      pin_memory: bool) -> DataLoader:
    """One DataLoader over the whole plan, prefetching across epoch ends."""
    return DataLoader(samples, batch_sampler=plan, num_workers=workers, pin_memory=pin_memory,
                      prefetch_factor=4 if workers > 0 else None,
                      worker_init_fn=_init_worker if workers > 0 else None,
                      multiprocessing_context="fork" if workers > 0 and os.name == "posix" else None)


def _augment(config: TrainConfig) -> AugmentParams:
    return AugmentParams(crop_size=config.crop_size, resize_side=config.resize_side,
                         scale_range=tuple(config.scale_range), resize_longer=config.resize_longer,
                         val_resize_side=config.val_resize_side or 1, val_crop_size=config.val_crop_size,
                         style=config.transforms)


def training_sets(data_dir: str | os.PathLike, config: TrainConfig) -> tuple[PreparedDataset, PreparedDataset]:
    """The training split (random augmentation) and the validation split (its first
    ``val_num_images``), checked against the settings; errors name the file or key."""
    root = Path(data_dir)
    train = PreparedDataset(root, config.train_split, task=config.task)
    aug = _augment(config)
    train.transform = train_transform(aug, train.target_fill)
    val = PreparedDataset(root, config.val_split, task=config.task)
    tf: Callable = eval_transform() if config.whole_val_images else val_transform(aug, val.target_fill)
    n_val = len(val) if config.val_num_images is None else min(len(val), config.val_num_images)
    val = val.subset(range(n_val), tf)
    if len(train) < config.batch_size:
        raise DataError(f"{train.list_path}: {len(train)} training images, fewer than batch_size "
                        f"{config.batch_size} (incomplete batches are dropped); lower batch_size")
    if train.task == "segmentation":
        outside = sorted(c for c in config.omit_classes if c >= train.num_classes)
        if outside:
            raise ValueError(f"omit_classes lists {outside}, but {root / 'meta.json'} has "
                             f"{train.num_classes} classes (0..{train.num_classes - 1})")
    elif config.omit_classes:
        raise ValueError("omit_classes is for segmentation; this run trains depth: set it to []")
    return train, val


def _val_samples(val: Dataset, workers: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    if workers == 0:
        return (val[i] for i in range(len(val)))
    return iter(DataLoader(val, batch_size=None, num_workers=workers, worker_init_fn=_init_worker,
                           prefetch_factor=2))


def val_batches(val: Dataset, batch_size: int, workers: int = 0
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Validation batches in order: consecutive images of one size, at most ``batch_size``
    together (whole images of several sizes cannot be stacked)."""
    group: list[tuple[torch.Tensor, torch.Tensor]] = []
    for image, target in _val_samples(val, workers):
        if group and (len(group) == batch_size or group[0][0].shape != image.shape):
            yield torch.stack([g[0] for g in group]), torch.stack([g[1] for g in group])
            group = []
        group.append((image, target))
    if group:
        yield torch.stack([g[0] for g in group]), torch.stack([g[1] for g in group])
