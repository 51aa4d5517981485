"""The original augmentations, as torchvision.transforms.v2 pipelines, in two styles.

Training (as in the authors' code): resize by a random factor in
`scale_range` (0.7-1.4), clamped so that the shorter side stays >= `resize_side`
or, with `resize_longer=True`, the longer side stays <= `resize_side`; random
horizontal mirror; random crop of `crop_size`; ImageNet mean/std normalisation.
Validation: the same resize with scale 1, then a centre crop, or the whole image
when `val_crop_size` is None. Labels and depth (wrapped as `tv_tensors.Mask`)
are resized with nearest neighbour.

`AugmentParams.style` picks how images are resized and cropped:

* ``"authors"``, as ``src/data/datasets.py`` of DrSleep/nas-segm-pytorch:
  ``cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)``
  (no antialiasing: a 2x downscale, such as every CityScapes image in the WACV
  search, samples the photo rather than averaging it) and ``INTER_NEAREST`` for the
  target, with the output size cv2 derives from the factor; the crop takes
  ``min(side, crop_size)`` of each side without padding (their ``RandomCrop`` and
  ``CentralCrop``). The crop size is used as given: their ``RandomCrop`` constructor
  rounds an odd size down to even (321 -> 320), but ``set_config`` in their
  ``main_search.py`` later assigns the odd size unrounded, so the presets state the
  size each stage really crops. An image smaller than the crop gives a smaller crop,
  as theirs, and such crops of different sizes cannot be batched: use the other style
  for data smaller than its crops.
* ``"torchvision"``: torchvision's bicubic resize with antialiasing, and crops padded
  (images with the mean colour, targets with the ignore index) where the image is
  smaller than the crop. Better for the small synthetic stand-ins, whose images are
  often smaller than their crops and whose thin shapes a non-antialiased downscale
  breaks up; ``benchmarks/resize_agreement.py`` measures both against cv2.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_MEAN_PIXEL = tuple(int(round(255 * m)) for m in IMAGENET_MEAN)

#: how images are resized and cropped (see the module docstring)
Style = Literal["torchvision", "authors"]
STYLES: tuple[str, ...] = ("torchvision", "authors")


@dataclass(frozen=True)
class AugmentParams:
    """Sizes of the training and validation transforms (embed in a stage's params)."""

    crop_size: int = 512
    resize_side: int = 1024
    scale_range: tuple[float, float] = (0.7, 1.4)
    resize_longer: bool = False
    val_resize_side: int = 1024
    val_crop_size: int | None = 512
    style: Style = "torchvision"

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise ValueError(f"style must be one of {', '.join(STYLES)}, got {self.style!r}")
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
        scale = _clamped_scale(h, w, self.side, self.scale_range, self.longer)
        return {"size": [max(1, round(h * scale)), max(1, round(w * scale))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Image):
            return F.resize(inpt, params["size"], interpolation=v2.InterpolationMode.BICUBIC,
                            antialias=True)
        if isinstance(inpt, tv_tensors.Mask):
            return F.resize(inpt, params["size"], interpolation=v2.InterpolationMode.NEAREST)
        return inpt


def _clamped_scale(h: int, w: int, side: int, scale_range: tuple[float, float], longer: bool) -> float:
    """A factor drawn from U(low, high) (torch's stream), clamped as the authors' ResizeScale."""
    lo, hi = scale_range
    scale = lo if lo == hi else float(torch.empty(1).uniform_(lo, hi))
    if longer:
        return min(scale, side / max(h, w))
    return max(scale, side / min(h, w))


class Cv2ResizeScale(ResizeScale):
    """The authors' ResizeScale: the same clamped factor, applied by ``cv2.resize`` with
    ``fx = fy = scale`` (images ``INTER_CUBIC``, targets ``INTER_NEAREST``)."""

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = _hw(flat_inputs)
        return {"scale": _clamped_scale(h, w, self.side, self.scale_range, self.longer)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Image):
            hwc = inpt.as_subclass(torch.Tensor).permute(1, 2, 0).contiguous().numpy()
            out = cv2_resize(hwc, params["scale"], cv2.INTER_CUBIC)
            return tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1))
        if isinstance(inpt, tv_tensors.Mask):
            arr = inpt.as_subclass(torch.Tensor).numpy()
            return tv_tensors.Mask(torch.from_numpy(cv2_resize(arr, params["scale"], cv2.INTER_NEAREST)))
        return inpt


def cv2_resize(array: np.ndarray, scale: float, interpolation: int) -> np.ndarray:
    """``cv2.resize(array, None, fx=scale, fy=scale, interpolation=...)`` as the authors call
    it, for H x W or H x W x C arrays (a one-channel result keeps its channel axis)."""
    out = cv2.resize(array, None, fx=scale, fy=scale, interpolation=interpolation)
    if array.ndim == 3 and out.ndim == 2:
        out = out[:, :, None]
    return out


class CropNoPad(v2.Transform):
    """The authors' RandomCrop (``random=True``) or CentralCrop: ``min(side, size)`` of each
    side, without padding; the random offsets from torch's stream."""

    def __init__(self, size: int, random: bool) -> None:
        super().__init__()
        self.size, self.random = size, random

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = _hw(flat_inputs)
        nh, nw = min(h, self.size), min(w, self.size)
        if self.random:
            top = int(torch.randint(0, h - nh + 1, ()))
            left = int(torch.randint(0, w - nw + 1, ()))
        else:
            top, left = (h - nh) // 2, (w - nw) // 2
        return {"top": top, "left": left, "height": nh, "width": nw}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, (tv_tensors.Image, tv_tensors.Mask)):
            return F.crop(inpt, **params)
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
    """Random scale, mirror, random crop (torchvision style: padded with the image mean colour
    and target `target_fill`), normalise."""
    if params.style == "authors":
        return v2.Compose([
            Cv2ResizeScale(params.resize_side, params.scale_range, params.resize_longer),
            v2.RandomHorizontalFlip(),
            CropNoPad(params.crop_size, random=True),
            *_normalise(),
        ])
    return v2.Compose([
        ResizeScale(params.resize_side, params.scale_range, params.resize_longer),
        v2.RandomHorizontalFlip(),
        PadToSize(params.crop_size, _MEAN_PIXEL, target_fill),
        v2.RandomCrop(params.crop_size),
        *_normalise(),
    ])


def val_transform(params: AugmentParams, target_fill: float = 255) -> v2.Compose:
    """Resize (scale 1, same clamp as training), centre crop (torchvision style: padded) or
    whole image, normalise."""
    if params.style == "authors":
        steps: list[v2.Transform] = [Cv2ResizeScale(params.val_resize_side, (1.0, 1.0),
                                                    params.resize_longer)]
        if params.val_crop_size is not None:
            steps.append(CropNoPad(params.val_crop_size, random=False))
        return v2.Compose(steps + _normalise())
    steps = [ResizeScale(params.val_resize_side, (1.0, 1.0), params.resize_longer)]
    if params.val_crop_size is not None:
        steps += [PadToSize(params.val_crop_size, _MEAN_PIXEL, target_fill),
                  v2.CenterCrop(params.val_crop_size)]
    return v2.Compose(steps + _normalise())


def eval_transform() -> v2.Compose:
    """Normalisation only: the full image at its prepared resolution."""
    return v2.Compose(_normalise())
