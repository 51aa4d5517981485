"""How far each transform style's resize is from the authors' cv2 call, on real photos.

    python benchmarks/resize_agreement.py PHOTO [PHOTO ...] [--scale 0.5]

For each photo: the authors' ``cv2.resize(img, None, fx=s, fy=s, interpolation=INTER_CUBIC)``
against this project's two styles (``data.transforms: authors`` and ``torchvision``), as
the validation transform applies them; prints the mean and largest absolute difference in
grey levels (0-255). Not a timing: no CPU dependence.
"""
from __future__ import annotations

import argparse

import cv2
import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors

from nasseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD, AugmentParams, val_transform


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", nargs="+")
    parser.add_argument("--scale", type=float, default=0.5)
    args = parser.parse_args(argv)
    print(f"{'photo':48s} {'size':>10s} {'style':>12s} {'mean':>7s} {'max':>5s}")
    for path in args.photos:
        img = np.array(Image.open(path).convert("RGB"))
        h, w = img.shape[:2]
        ref = cv2.resize(img, None, fx=args.scale, fy=args.scale, interpolation=cv2.INTER_CUBIC).astype(np.float64)
        side = round(max(h, w) * args.scale)
        for style in ("authors", "torchvision"):
            params = AugmentParams(val_resize_side=side, val_crop_size=None, resize_longer=True, style=style)
            out, _ = val_transform(params)(tv_tensors.Image(torch.from_numpy(img).permute(2, 0, 1)),
                                           tv_tensors.Mask(torch.zeros(h, w, dtype=torch.uint8)))
            levels = (out.numpy().transpose(1, 2, 0) * IMAGENET_STD + np.array(IMAGENET_MEAN)) * 255
            if levels.shape != ref.shape:
                print(f"{path[-48:]:48s} {w}x{h:<5d} {style:>12s}  size {levels.shape[1::-1]} vs cv2 {ref.shape[1::-1]}")
                continue
            diff = np.abs(levels - ref)
            print(f"{path[-48:]:48s} {w:>5d}x{h:<4d} {style:>12s} {diff.mean():7.3f} {diff.max():5.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
