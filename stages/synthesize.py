"""Write a small synthetic dataset in a dataset's official layout and file formats.

    python -m stages.synthesize --dataset cityscapes --out data/raw/cityscapes \\
        [--num-images 48] [--seed 0] [--height 128 --width 256]

The stand-ins (class-dependent shapes and textures with noise; .mat files,
palette PNGs, labelIds PNGs, SegNet index PNGs as in the real downloads) let
the whole pipeline run without a download; `stages.prepare` reads them through
the same code as the real data. Deterministic for a seed. Defaults come from
section `synthesize` of params.yaml (e.g. --set cityscapes.num_images=100).

When params.yaml says `data.source.<dataset>: real` (or --source real), this
stage writes nothing: it only checks that --out holds your download in the
official layout. It never replaces a folder it did not write itself.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from nasseg.data.classes import DATASETS
from nasseg.data.errors import DataError
from nasseg.data.formats import get_format
from nasseg.data.synthesize import DataParams, SynthesizeParams, synthesize_dataset
from stages.params import ParamsError, add_common_args, load_section, stage_parser

log = logging.getLogger("stages.synthesize")


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("python -m stages.synthesize", __doc__)
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--out", type=Path, required=True,
                        help="where to write the raw dataset (e.g. data/raw/<dataset>)")
    parser.add_argument("--num-images", type=int, default=None,
                        help="images in total, spread over the official splits "
                             "(default: synthesize.<dataset>.num_images)")
    parser.add_argument("--seed", type=int, default=None, help="default: synthesize.seed")
    parser.add_argument("--height", type=int, default=None,
                        help="image height (default: synthesize.<dataset>.height)")
    parser.add_argument("--width", type=int, default=None,
                        help="image width (default: synthesize.<dataset>.width)")
    parser.add_argument("--source", choices=("synthetic", "real"), default=None,
                        help="override data.source.<dataset> of params.yaml")
    add_common_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        params = load_section(args.params, "synthesize", SynthesizeParams, args.overrides)
        source = args.source or getattr(load_section(args.params, "data", DataParams).source,
                                        args.dataset)
        if source == "real":
            get_format(args.dataset).check_layout(args.out)
            print(f"data.source.{args.dataset} is 'real': using your download at {args.out} "
                  "(layout checked); nothing synthesized")
            return 0
        size = getattr(params, args.dataset)
        marker = synthesize_dataset(
            args.dataset, args.out,
            num_images=args.num_images if args.num_images is not None else size.num_images,
            seed=args.seed if args.seed is not None else params.seed,
            height=args.height if args.height is not None else size.height,
            width=args.width if args.width is not None else size.width)
    except (DataError, ParamsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sizes = ", ".join(f"{k}: {v}" for k, v in marker["splits"].items())
    print(f"synthesized {args.dataset} -> {args.out} ({sizes}; seed {marker['seed']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
