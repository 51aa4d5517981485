"""Export: a trained model as ONNX, BatchNorm folded, checked against PyTorch.

    python -m stages.export --checkpoint runs/train/wacv/cityscapes/1/model.pt \\
        --out runs/export/wacv/cityscapes/model.onnx --check-sizes 256x512,360x480

The model is made deployable first (nasseg.export.deployable): eval mode, the
auxiliary heads and other branches an eval forward never runs removed, every
BatchNorm folded into the convolution before it (one with no convolution before it
becomes a per-channel scale/shift, and is named). The ONNX graph (torch.onnx.export
with dynamo=True, opset 18 by default) takes `image` (N x 3 x H x W, normalised with
the ImageNet mean and std) with dynamic batch, height and width, and returns
`logits` at decoder resolution (stride 4 or 8; upsample to the image size). The
model card (genotype, class names, palette) is stored in the metadata as JSON
under `nasseg_card`.

Then ONNX Runtime runs the file at each --check-sizes (random inputs) and its output
is compared with the PyTorch model's; a difference above --atol + --rtol * max|output|
fails the stage (exit status 2), naming the size and the difference. Finally --report
(default: --out with the suffix .json) records what was folded and the differences.

An authors' checkpoint needs --genotype and --num-classes. A missing or corrupt
checkpoint stops with exit status 2 and a message naming the file.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from .model_args import add_model_args, authors_card_of
from .params import exit_status, stage_parser


def _size(text: str) -> tuple[int, int]:
    from nasseg.export import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _sizes(text: str) -> list[tuple[int, int]]:
    return [_size(part) for part in text.split(",") if part.strip()]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from nasseg.checkpoint import load_model
    from nasseg.export import check_onnx, export_onnx, export_summary
    from nasseg.io import atomic_write_json

    card = authors_card_of(args, dataset=args.dataset)
    model, card = load_model(args.checkpoint, card)
    report = export_onnx(model, args.out, card=card, sample_size=args.sample_size, opset=args.opset)
    diffs = check_onnx(args.out, model, args.check_sizes, batch=args.check_batch, atol=args.atol,
                       rtol=args.rtol) if args.check_sizes else {}
    summary = export_summary(report, diffs, checkpoint=str(args.checkpoint), onnx=str(args.out),
                             opset=args.opset, space=card.space, task=card.task,
                             num_classes=card.num_classes, atol=args.atol, rtol=args.rtol)
    atomic_write_json(args.report or args.out.with_suffix(".json"), summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("python -m stages.export", __doc__)
    add_model_args(parser)
    parser.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    parser.add_argument("--check-sizes", type=_sizes, default=[(256, 512), (360, 480)],
                        metavar="HxW,...",
                        help="input sizes to compare ONNX Runtime with PyTorch at "
                             "(default: 256x512,360x480; empty: no check)")
    parser.add_argument("--check-batch", type=int, default=1, help="batch size of the check inputs")
    parser.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance (default: %(default)s)")
    parser.add_argument("--rtol", type=float, default=1e-4,
                        help="tolerance relative to the largest |output| (default: %(default)s)")
    parser.add_argument("--sample-size", type=_size, default=(256, 512), metavar="HxW",
                        help="input size traced by the exporter (default: 256x512)")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default: %(default)s)")
    parser.add_argument("--report", type=Path, default=None,
                        help="JSON report (default: --out with the suffix .json)")
    parser.add_argument("--dataset", default=None,
                        help="for an authors' checkpoint: the dataset whose class names go in the metadata")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("onnx_ir", "onnxscript", "torch"):   # hundreds of lines per export at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        summary = run(args)
    except Exception as exc:
        return exit_status(exc)
    diffs = ", ".join(f"{k}: {v:.2g}" for k, v in summary["check_max_abs_diff"].items()) or "not checked"
    print(f"wrote {args.out}; BatchNorm folded: {summary['batchnorm']['folded']}, "
          f"left as scale/shift: {len(summary['batchnorm']['affine'])}; "
          f"max |ONNX - PyTorch| {diffs}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
