"""Latency benchmark: eval-mode inference time of trained networks, per input size and backend.

    python -m stages.benchmark --checkpoint runs/train/wacv/cityscapes/1/best.pt \\
        --sizes 1024x2048,512x1024,360x480 --out reports/wacv/benchmark/latency.json
    python -m stages.benchmark --genotype wacv/arch0 --num-classes 19 --sizes 360x480 --out lat.json

Each network is timed the way a latency figure should be: in eval mode (a network
left in training mode is refused), BatchNorm folded into its convolutions, the
auxiliary heads and unread branches removed, batch 1; warm-up runs, then runs
calibrated so that each figure rests on at least --min-seconds of timed work, over
several repeats (median, mean, std, p90, min); on CUDA, timed with CUDA events.
Backends: eager, channels_last, compile (torch.compile with freezing), onnxruntime,
int8 (ONNX Runtime static quantisation); each is checked against eager before it is
timed, and one that cannot run or disagrees is recorded with its reason, not timed.

--checkpoint (repeatable, optionally LABEL=FILE) names model files of the train
stage; with --genotype and --num-classes alone, the published network is built
freshly initialised (its speed does not depend on its weights); with both, the
checkpoint is one of the authors'. --data-root holds the prepared datasets
(<root>/<dataset>): int8 is calibrated on a network's training images and its
change in mIoU (RMSE for depth) is measured on accuracy_split; without it, int8 is
recorded as unavailable.

Settings: with --experiment, section benchmark.<experiment>.<preset> of params.yaml;
--sizes, --backends, --threads, --min-seconds, --repeats and --device override it.
Outputs (atomically): --out (JSON), the CSV beside it (one row per network, size and
backend; times in ms) and --metrics (JSON label -> size -> backend median in ms,
for `dvc metrics diff`). Parameters (with and without the auxiliary heads), FLOPs
and the environment (processor and vector extensions, threads, versions) are in the
JSON.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .model_args import authors_card_of
from .params import ParamsError, add_common_args, exit_status, experiment_settings, stage_parser

if TYPE_CHECKING:
    from nasseg.benchmark_config import BenchmarkParams
    from nasseg.benchmarking import Network

EXPERIMENTS = ("wacv", "cvpr")


def split_list(text: str) -> tuple[str, ...]:
    items = tuple(s.strip() for s in text.split(",") if s.strip())
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def load_settings(args: argparse.Namespace) -> BenchmarkParams:
    """params.yaml's section (with --experiment), then the flags, validated together."""
    from nasseg.benchmark_config import BenchmarkParams

    return experiment_settings(args, "benchmark", BenchmarkParams, {
        "sizes": args.sizes, "backends": args.backends, "threads": args.threads,
        "min_seconds": args.min_seconds, "repeats": args.repeats, "device": args.device})


def networks_of(args: argparse.Namespace) -> list[Network]:
    """The networks the arguments name: checkpoints (LABEL=FILE or FILE), or a published genotype."""
    import torch

    from nasseg.benchmarking import Network
    from nasseg.checkpoint import load_model

    card = authors_card_of(args)
    if not args.checkpoint:
        if card is None:
            raise ParamsError("name the networks: --checkpoint FILE (repeatable), or --genotype NAME "
                              "--num-classes N for a freshly initialised published network")
        torch.manual_seed(0)
        return [Network(label=str(args.genotype), card=card, model=card.build().eval())]
    networks = []
    for item in args.checkpoint:
        label, sep, file = item.partition("=")
        if not sep:
            label, file = item, item
        model, loaded = load_model(file, card, expect_space=args.experiment)
        networks.append(Network(label=label, card=loaded, model=model, checkpoint=file))
    return networks


def run(args: argparse.Namespace) -> dict[str, Any]:
    from nasseg.benchmarking import benchmark, write_results

    settings = load_settings(args)
    networks = networks_of(args)
    data = {}
    if args.data_root is not None:
        data = {n.card.dataset: args.data_root / n.card.dataset for n in networks
                if n.card.dataset and (args.data_root / n.card.dataset).is_dir()}
    results = benchmark(networks, settings, data=data, workdir=args.workdir, progress=not args.no_progress)
    write_results(results, args.out, metrics=args.metrics)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("python -m stages.benchmark", __doc__)
    parser.add_argument("--checkpoint", action="append", default=[], metavar="[LABEL=]FILE",
                        help="model file to time (repeatable); LABEL names it in the results")
    parser.add_argument("--genotype", default=None,
                        help="a published name (wacv/arch0) or genotype JSON: alone with --num-classes, "
                             "a freshly initialised network; with --checkpoint, the authors' checkpoint's")
    parser.add_argument("--num-classes", type=int, default=None, help="output classes (1: NYUD depth)")
    parser.add_argument("--out", type=Path, required=True, help="results JSON (the CSV goes beside it)")
    parser.add_argument("--metrics", type=Path, default=None, help="metrics JSON for dvc metrics diff")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="folder of prepared datasets (<root>/<dataset>) for int8 calibration and accuracy")
    parser.add_argument("--experiment", choices=EXPERIMENTS, default=None,
                        help="read benchmark.<experiment>.<preset> of params.yaml; networks must be of "
                             "this space")
    parser.add_argument("--sizes", type=split_list, default=None, metavar="HxW,...",
                        help="input sizes, e.g. 1024x2048,512x1024,360x480")
    parser.add_argument("--backends", type=split_list, default=None, metavar="NAME,...",
                        help="eager, channels_last, compile, onnxruntime, int8 (eager always runs)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: 2)")
    parser.add_argument("--min-seconds", type=float, default=None,
                        help="timed work per repeat, in seconds (default: 1)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per figure (default: 5)")
    parser.add_argument("--device", default=None, help="cpu or cuda[:n] (default: cpu)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the ONNX files here (default: a temporary folder)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_common_args(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        results = run(args)
    except Exception as exc:
        return exit_status(exc)
    for m in results["models"]:
        for r in m["results"]:
            shown = (f"{1e3 * r['stats']['median']:.2f} ms" if r["stats"]
                     else f"{r['status']}: {r['reason']}")
            print(f"{m['label']} {r['size']} {r['backend']}: {shown}", file=sys.stderr)
    print(f"-> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
