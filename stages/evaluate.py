"""Evaluation: score a trained model on a split of a prepared dataset at full resolution.

    python -m stages.evaluate --checkpoint runs/train/wacv/cityscapes/1/model.pt \\
        --data data/prepared/cityscapes --split val --out runs/evaluate/wacv/cityscapes/metrics.json

Every image is scored whole, at its prepared resolution (batch size 1: the images
differ in size), with nasseg.evaluation.evaluate, the function training validates
with. --checkpoint is a model file of the train stage (it carries its genotype,
class names and palette) or one of the authors' released checkpoints, which hold
weights only: give its genotype and class count (--genotype wacv/arch0
--num-classes 19); the class names then come from the dataset's meta.json.

Test-time settings: with --experiment (wacv or cvpr), section
evaluate.<experiment>.<preset> of params.yaml (flip, scales, workers; `preset` is the
top-level key), and the model must be of that experiment's space; --flip/--no-flip,
--scales and --workers override it (so does --set). Without --experiment: single
scale, no flip, as the papers evaluated.

Outputs (each written atomically): --out, a metrics JSON -- segmentation: miou,
mean_acc, fwiou, pixel_acc, per_class_iou and per_class_acc keyed by class name,
confusion_matrix (rows: truth, columns: prediction); depth (NYUD): rmse, rmse_log,
abs_rel, sq_rel, log10, delta1..3 -- and for segmentation, in --plots (default: the
folder of --out), confusion_matrix.png (row-normalised) and per_class_iou.csv
(class,iou) for `dvc plots`. An undefined score (a class in neither the labels nor
the predictions) is null.

A missing, corrupt or refused checkpoint, one of another space or class count than
the data, and bad data stop with exit status 2 and a message naming the file.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .model_args import add_model_args, authors_card_of
from .params import add_common_args, exit_status, experiment_settings, stage_parser

if TYPE_CHECKING:
    from nasseg.evaluation_config import EvaluateParams

EXPERIMENTS = ("wacv", "cvpr")


def parse_scales(text: str) -> tuple[float, ...]:
    """``"0.75,1,1.25"`` -> (0.75, 1.0, 1.25)."""
    try:
        scales = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated numbers such as 0.75,1,1.25") \
            from None
    if not scales:
        raise argparse.ArgumentTypeError("expected at least one scale")
    return scales


def load_settings(args: argparse.Namespace) -> EvaluateParams:
    """The evaluate settings: params.yaml's section (with --experiment), then the flags."""
    from nasseg.evaluation_config import EvaluateParams

    return experiment_settings(args, "evaluate", EvaluateParams,
                               {"flip": args.flip, "scales": args.scales, "workers": args.workers})


def run(args: argparse.Namespace) -> dict[str, Any]:
    from nasseg.data import read_meta
    from nasseg.evaluation import evaluate_checkpoint
    from nasseg.reports import evaluation_report, write_report

    settings = load_settings(args)
    card = authors_card_of(args, meta=read_meta(args.data) if args.genotype is not None else None)
    scores, card = evaluate_checkpoint(args.checkpoint, args.data, args.split, settings, card=card,
                                       expect_space=args.experiment, device=args.device,
                                       progress=not args.no_progress)
    names = list(card.class_names)
    if card.task == "segmentation" and len(names) != card.num_classes:
        names = [str(i) for i in range(card.num_classes)]
    report = evaluation_report(scores, task=card.task, class_names=names,
                               checkpoint=str(args.checkpoint), data=str(args.data), split=args.split,
                               space=card.space, dataset=card.dataset, flip=settings.flip,
                               scales=list(settings.scales))
    write_report(report, args.out, args.plots)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("python -m stages.evaluate", __doc__)
    add_model_args(parser)
    parser.add_argument("--data", type=Path, required=True, help="prepared dataset folder (with meta.json)")
    parser.add_argument("--split", required=True, help="split to score (val, test, ...)")
    parser.add_argument("--out", type=Path, required=True, help="metrics JSON to write")
    parser.add_argument("--plots", type=Path, default=None,
                        help="folder for confusion_matrix.png and per_class_iou.csv (default: that of --out)")
    parser.add_argument("--experiment", choices=EXPERIMENTS, default=None,
                        help="read evaluate.<experiment>.<preset> of params.yaml and require a model "
                             "of this space")
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                        help="also score the mirrored image and average (default: no, as the papers)")
    parser.add_argument("--scales", type=parse_scales, default=None, metavar="S1,S2,...",
                        help="input scales averaged, e.g. 0.75,1,1.25 (default: 1, as the papers)")
    parser.add_argument("--workers", type=int, default=None, help="data-loading processes (default: 1)")
    parser.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_common_args(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        report = run(args)
    except Exception as exc:
        return exit_status(exc)
    if report["task"] == "segmentation":
        miou = report["miou"]
        print(f"{args.checkpoint} on {args.split} ({report['num_images']} images): mIoU "
              + (f"{miou:.4f}" if miou is not None else "undefined") + f" -> {args.out}", file=sys.stderr)
    else:
        print(f"{args.checkpoint} on {args.split} ({report['num_images']} images): RMSE "
              f"{report['rmse']} m, delta1 {report['delta1']} -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
