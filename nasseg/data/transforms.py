"""The original augmentations, as torchvision.transforms.v2 pipelines.

Training (as in the authors' code): resize by a random factor in
`scale_range` (0.7-1.4), clamped so that the shorter side stays >= `resize_side`
or, with `resize_longer=True`, the longer side stays <= `resize_side`; random
horizontal mirror; random crop of `crop_size`, padding images with the mean
colour and labels with the ignore index where the image is smaller; ImageNet
mean/std normalisation. Validation: the same resize with scale 1, then a
centre crop (padded the same way), or the whole image when `val_crop_size` is
None. Images are resized bicubically, labels and depth with nearest neighbour
(they are wrapped as `tv_tensors.Mask`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_MEAN_PIXEL = tuple(int(round(255 * m)) for m in IMAGENET_MEAN)


@dataclass(frozen=True)
class AugmentParams:
    """Sizes of the training and validation transforms (embed in a stage's params)."""

    crop_size: int = 512
    resize_side: int = 1024
    scale_range: tuple[float, float] = (0.7, 1.4)
    resize_longer: bool = False
    val_resize_side: int = 1024
    val_crop_size: int | None = 512

    def __post_init__(self) -> None:
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {self.scale_range}")
        if self.crop_size < 1 or self.resize_side < 1 or self.val_resize_side < 1:
            raise ValueError("crop_size, resize_side and val_resize_side must be positive")
        if self.val_crop_size is not None and self.val_crop_size < 1:
            raise ValueError("val_crop_size must be positive or null")


def _hw(flat_inputs: list[Any]) -> tuple[int, int]:
    for x in flat_inputs:
        if isinstance(x, (tv_tensors.Image, tv_tensors.Mask)):
            return int(x.shape[-2]), int(x.shape[-1])
    raise TypeError("expected a tv_tensors.Image or Mask among the inputs")


class ResizeScale(v2.Transform):
    """Scale by U(low, high), clamped: shorter side >= side, or longer side <= side."""

    def __init__(self, side: int, scale_range: tuple[float, float] = (1.0, 1.0),
                 longer: bool = False) -> None:
        super().__init__()
        self.side, self.scale_range, self.longer = side, tuple(scale_range), longer

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = _hw(flat_inputs)
        lo, hi = self.scale_range
        scale = lo if lo == hi else float(torch.empty(1).uniform_(lo, hi))
        if self.longer:
            scale = min(scale, self.side / max(h, w))
        else:
            scale = max(scale, self.side / min(h, w))
        return {"size": [max(1, round(h * scale)), max(1, round(w * scale))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Image):
            return F.resize(inpt, params["size"], interpolation=v2.InterpolationMode.BICUBIC,
                            antialias=True)
        if isinstance(inpt, tv_tensors.Mask):
            return F.resize(inpt, params["size"], interpolation=v2.InterpolationMode.NEAREST)
        return inpt


class PadToSize(v2.Transform):
    """Pad (evenly on both sides) to at least `size` x `size`; images with `image_fill`,
    masks with `mask_fill`."""

    def __init__(self, size: int, image_fill: tuple[int, ...] | int, mask_fill: float) -> None:
        super().__init__()
        self.size, self.image_fill, self.mask_fill = size, image_fill, mask_fill

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = _hw(flat_inputs)
        ph, pw = max(0, self.size - h), max(0, self.size - w)
        return {"padding": [pw // 2, ph // 2, pw - pw // 2, ph - ph // 2]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not any(params["padding"]):
            return inpt
        if isinstance(inpt, tv_tensors.Image):
            return F.pad(inpt, params["padding"], fill=list(self.image_fill)
                         if isinstance(self.image_fill, tuple) else self.image_fill)
        if isinstance(inpt, tv_tensors.Mask):
            return F.pad(inpt, params["padding"], fill=self.mask_fill)
        return inpt


def _normalise() -> list[v2.Transform]:
    return [v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def train_transform(params: AugmentParams, target_fill: float = 255) -> v2.Compose:
    """Random scale, mirror, random crop (padded: image mean colour, target `target_fill`), normalise."""
    return v2.Compose([
        ResizeScale(params.resize_side, params.scale_range, params.resize_longer),
        v2.RandomHorizontalFlip(),
        PadToSize(params.crop_size, _MEAN_PIXEL, target_fill),
        v2.RandomCrop(params.crop_size),
        *_normalise(),
    ])


def val_transform(params: AugmentParams, target_fill: float = 255) -> v2.Compose:
    """Resize (scale 1, same clamp as training), centre crop (padded) or whole image, normalise."""
    steps: list[v2.Transform] = [ResizeScale(params.val_resize_side, (1.0, 1.0),
                                             params.resize_longer)]
    if params.val_crop_size is not None:
        steps += [PadToSize(params.val_crop_size, _MEAN_PIXEL, target_fill),
                  v2.CenterCrop(params.val_crop_size)]
    return v2.Compose(steps + _normalise())


def eval_transform() -> v2.Compose:
    """Normalisation only: the full image at its prepared resolution."""
    return v2.Compose(_normalise())
