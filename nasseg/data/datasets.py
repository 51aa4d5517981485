"""Datasets over the prepared format (see `nasseg.data.prepare`)."""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from .errors import DataError
from .imageio import load_rgb, load_single_channel
from .prepare import FORMAT


def read_meta(root: str | os.PathLike) -> dict[str, Any]:
    """meta.json of a prepared dataset, checked for the fields loaders need."""
    path = Path(root) / "meta.json"
    if not path.is_file():
        raise DataError(f"{path}: not found; {root} is not a prepared dataset (run the "
                        "prepare stage: python -m stages.prepare --dataset NAME --raw DIR "
                        "--out DIR)")
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable ({exc}); re-run the prepare stage") from exc
    if meta.get("format") != FORMAT:
        raise DataError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}; re-run "
                        "the prepare stage")
    return meta


def read_list(path: Path) -> list[tuple[str, str]]:
    """Lines `<image>\\t<target>` of a .lst file."""
    if not path.is_file():
        raise DataError(f"{path}: list file not found")
    items = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise DataError(f"{path}:{n}: expected '<image>\\t<label>', got {line!r}")
        items.append((parts[0], parts[1]))
    if not items:
        raise DataError(f"{path}: empty list, no samples")
    return items


class PreparedDataset(Dataset):
    """Samples of one split of a prepared dataset, as (image, target) tensors.

    `image` is float32 3xHxW (after `transform`; the transforms normalise it),
    `target` is int64 HxW class indices (255 = ignore) for segmentation, or
    float32 HxW depth in metres (0 = invalid) for depth. `task` picks NYUD's
    40-class labels ("segmentation") instead of its depth; by default the
    dataset's own task. Without a transform the image is returned as uint8.
    """

    def __init__(self, root: str | os.PathLike, split: str, transform: Callable | None = None,
                 task: str | None = None) -> None:
        self.root = Path(root)
        self.meta = read_meta(self.root)
        self.split = split
        info = self.meta
        if task is not None and task != self.meta["task"]:
            extra = self.meta.get(task)
            if not isinstance(extra, dict):
                raise DataError(f"{self.root / 'meta.json'}: {self.meta['dataset']} has no "
                                f"{task!r} targets (task is {self.meta['task']!r})")
            info = {**extra, "task": task}
        self.task = info["task"]
        self.num_classes: int = info["num_classes"]
        self.class_names: list[str] = info["class_names"]
        self.ignore_index: int = info["ignore_index"]
        lists = info.get("lists", {})
        if split not in lists:
            raise DataError(f"{self.root / 'meta.json'}: no split {split!r}; available: "
                            f"{', '.join(lists) or 'none'}")
        self.list_path = self.root / lists[split]
        self.items = [(self.root / a, self.root / b) for a, b in read_list(self.list_path)]
        self.ids = [Path(a).stem for a, _ in self.items]
        self.transform = transform
        self._decoded: dict[int, tuple[np.ndarray, np.ndarray]] | None = None
        self._decoded_budget = 0

    @classmethod
    def _view(cls, parent: PreparedDataset, items: Sequence[tuple[Path, Path]],
              transform: Callable | None) -> PreparedDataset:
        view = cls.__new__(cls)
        view.__dict__.update(parent.__dict__)
        view.items = list(items)
        view.ids = [Path(a).stem for a, _ in view.items]
        view.transform = transform
        view._decoded, view._decoded_budget = None, 0
        return view

    def keep_decoded(self, max_bytes: int) -> PreparedDataset:
        """A view that keeps the decoded arrays of the samples it reads in memory, until
        they fill ``max_bytes`` (later samples are read from disk each time, as before).
        The transforms still run on every access, so random crops and flips stay random.
        For a dataset read in the training process itself, epoch after epoch: decoding
        is then on the training's critical path."""
        view = self._view(self, self.items, self.transform)
        view._decoded, view._decoded_budget = {}, max_bytes
        return view

    def subset(self, indices: Sequence[int], transform: Callable | None = None) -> PreparedDataset:
        """The samples at `indices`, with their own transform."""
        return self._view(self, [self.items[int(i)] for i in indices], transform)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def target_fill(self) -> float:
        """Padding value for targets: the ignore index (labels) or 0 (invalid depth)."""
        return float(self.ignore_index)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw arrays: RGB uint8 HxWx3 and the target (uint8 labels / float32 metres)."""
        if self._decoded is not None and index in self._decoded:
            return self._decoded[index]
        image_path, target_path = self.items[index]
        image = load_rgb(image_path)
        if self.task == "depth":
            target = load_single_channel(target_path, np.uint16).astype(np.float32) / 1000.0
        else:
            target = load_single_channel(target_path, np.uint8)
        if image.shape[:2] != target.shape:
            raise DataError(f"{target_path}: size {target.shape[::-1]} differs from its image "
                            f"{image_path} {image.shape[1::-1]}; re-run the prepare stage")
        if self._decoded is not None and self._decoded_budget >= image.nbytes + target.nbytes:
            self._decoded_budget -= image.nbytes + target.nbytes
            self._decoded[index] = image, target
        return image, target

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, target = self.load(index)
        img = tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1))
        tgt = tv_tensors.Mask(torch.from_numpy(target))
        if self.transform is not None:
            img, tgt = self.transform(img, tgt)
        img = img.as_subclass(torch.Tensor)
        tgt = tgt.as_subclass(torch.Tensor)
        tgt = tgt.float() if self.task == "depth" else tgt.long()
        return img, tgt
