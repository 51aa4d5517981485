"""Prediction: masks and overlays (or depth maps) of a trained model on image files.

    python -m stages.predict --checkpoint runs/train/wacv/cityscapes/1/model.pt \\
        --out runs/predict/wacv/cityscapes photos/ street.jpg

Each image (a file, or every .png/.jpg/.jpeg under a folder, walked recursively) is
predicted at its full resolution and written to --out, keeping the path below
the folder given:

  segmentation  <name>_mask.png     palette PNG: pixels are class indices, shown in
                                    the dataset's colours
                <name>_overlay.png  the image blended with the coloured mask (--alpha)
  depth         <name>_depth.png    colour-mapped depth (each image's own range)
                <name>_depth_mm.png 16-bit depth in millimetres (0: invalid)

The colours come from the model file; an authors' checkpoint (weights only: give
--genotype and --num-classes) takes them from --dataset's class table. A missing or
corrupt checkpoint or image stops with exit status 2 and a message naming the file.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from .evaluate import parse_scales
from .model_args import add_model_args, authors_card_of
from .params import exit_status, stage_parser


def run(args: Any) -> list[dict[str, Any]]:
    from nasseg.checkpoint import load_model
    from nasseg.prediction import find_images, predict_files

    card = authors_card_of(args, dataset=args.dataset)
    find_images(args.inputs)   # a missing input fails before the model is loaded
    model, card = load_model(args.checkpoint, card)
    return predict_files(model, card, args.inputs, args.out, dataset=args.dataset, flip=args.flip,
                         scales=args.scales, alpha=args.alpha, device=args.device,
                         progress=not args.no_progress)


def main(argv: list[str] | None = None) -> int:
    from nasseg.data.classes import DATASETS

    parser = stage_parser("python -m stages.predict", __doc__)
    parser.add_argument("inputs", nargs="+", type=Path, metavar="IMAGE_OR_FOLDER",
                        help="image files and folders")
    add_model_args(parser)
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--flip", action="store_true", help="average with the mirrored image")
    parser.add_argument("--scales", type=parse_scales, default=(1.0,), metavar="S1,S2,...",
                        help="input scales averaged (default: 1)")
    parser.add_argument("--alpha", type=float, default=0.5, help="weight of the mask in the overlay")
    parser.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    parser.add_argument("--dataset", choices=DATASETS, default=None,
                        help="class names and colours when the model file has none")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        records = run(args)
    except Exception as exc:
        return exit_status(exc)
    print(f"predicted {len(records)} images -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
