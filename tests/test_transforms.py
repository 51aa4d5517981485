"""The two transform styles: ``authors`` agrees with the authors' cv2 calls, ``torchvision`` pads.

The reference below is written from the facts of ``src/data/datasets.py`` of
DrSleep/nas-segm-pytorch (``ResizeScale``: ``cv2.resize(..., fx=scale, fy=scale)``,
``INTER_CUBIC`` for images and ``INTER_NEAREST`` for masks; ``CentralCrop`` and
``RandomCrop``: no padding; ``Normalise``: ``(x / 255 - mean) / std``).
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from nasseg.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, AugmentParams, train_transform,
                                    val_transform)


def photo_like(h: int = 256, w: int = 512, seed: int = 0) -> np.ndarray:
    """Smooth colour fields, fine stripes and sharp edges: detail at every scale, as a photo."""
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.uniform(0, 255, (h // 16, w // 16, 3)).astype(np.float32), (w, h),
                      interpolation=cv2.INTER_LINEAR)
    yy, xx = np.mgrid[:h, :w]
    stripes = 60 * np.sin(xx * 1.3 + yy * 0.4)[..., None]
    edges = np.where((xx // 37 + yy // 23) % 2 == 0, 40, -40)[..., None]
    return np.clip(base + stripes + edges, 0, 255).astype(np.uint8)


def labels_like(h: int = 256, w: int = 512) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return ((xx // 29 + 3 * (yy // 17)) % 19).astype(np.uint8)


def normalise(img: np.ndarray) -> np.ndarray:
    return ((img / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)).transpose(2, 0, 1)


def run(tf, img: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out_img, out_mask = tf(tv_tensors.Image(torch.from_numpy(img).permute(2, 0, 1)),
                           tv_tensors.Mask(torch.from_numpy(mask)))
    return out_img.as_subclass(torch.Tensor).numpy(), out_mask.as_subclass(torch.Tensor).numpy()


def test_authors_validation_transform_is_their_resize_and_central_crop() -> None:
    img, mask = photo_like(), labels_like()
    params = AugmentParams(val_resize_side=128, val_crop_size=48, resize_longer=True, style="authors")
    got_img, got_mask = run(val_transform(params), img, mask)
    scale = 128 / 512                                      # longer side clamped to 128
    ref = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    ref_mask = cv2.resize(mask, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    h, w = ref.shape[:2]
    t, left = (h - 48) // 2, (w - 48) // 2
    np.testing.assert_allclose(got_img, normalise(ref[t:t + 48, left:left + 48]), atol=1e-5)
    np.testing.assert_array_equal(got_mask, ref_mask[t:t + 48, left:left + 48])


def test_authors_training_crop_is_a_window_of_their_resize() -> None:
    img, mask = photo_like(200, 300), labels_like(200, 300)
    params = AugmentParams(crop_size=90, resize_side=150, scale_range=(0.5, 0.5), resize_longer=True,
                           style="authors")
    ref = normalise(cv2.resize(img, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC))
    tf = train_transform(params)
    torch.manual_seed(0)
    for _ in range(4):
        got, got_mask = run(tf, img, mask)
        assert got.shape == (3, 90, 90) and got_mask.shape == (90, 90)
        found = [(m, t, left) for m, r in (("plain", ref), ("mirrored", ref[:, :, ::-1]))
                 for t in range(r.shape[1] - 89) for left in range(r.shape[2] - 89)
                 if np.allclose(r[:, t:t + 90, left:left + 90], got, atol=1e-5)]
        assert found, "the crop is no window of cv2's INTER_CUBIC resize"


def test_authors_crop_is_not_padded() -> None:
    """As their RandomCrop: min(side, crop) of each side; the torchvision style pads instead."""
    img, mask = photo_like(60, 80), labels_like(60, 80)
    authors = AugmentParams(crop_size=64, resize_side=80, scale_range=(1.0, 1.0), resize_longer=True,
                            style="authors")
    got, got_mask = run(train_transform(authors), img, mask)
    assert got.shape == (3, 60, 64) and got_mask.shape == (60, 64)
    padded, padded_mask = run(train_transform(AugmentParams(**{**authors.__dict__, "style": "torchvision"})),
                              img, mask)
    assert padded.shape == (3, 64, 64) and (padded_mask == 255).sum() == 4 * 64


def test_torchvision_style_antialiases_where_the_authors_do_not() -> None:
    """A 2x downscale (every CityScapes image in the WACV search): the authors' style is
    cv2's to the bit; the torchvision style averages the detail away (antialiasing)."""
    img, mask = photo_like(), labels_like()
    ref = cv2.resize(img, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
    diffs = {}
    for style in ("authors", "torchvision"):
        params = AugmentParams(val_resize_side=256, val_crop_size=None, resize_longer=True, style=style)
        got, _ = run(val_transform(params), img, mask)
        levels = got.transpose(1, 2, 0) * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)
        diffs[style] = float(np.abs(levels * 255 - ref).mean())
    assert diffs["authors"] < 1e-3
    assert diffs["torchvision"] > 5, diffs


def test_unknown_style_is_refused() -> None:
    with pytest.raises(ValueError, match="style must be one of"):
        AugmentParams(style="pil")  # type: ignore[arg-type]
