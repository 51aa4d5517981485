"""The report of one experiment: search, ranking, training, trade-off, latency, samples, provenance.

    python -m stages.report --experiment wacv --out reports/wacv

Writes into --out, each file atomically: report.html (one self-contained page, every
image embedded), report.md and figures/ (the Markdown's images, referenced relatively).
The sections: the search (rewards, running best, moving average, status counts, params
against reward, strategies compared with --compare-search); the ranking and a drawing
of every slot's architecture; full training per dataset (curves, final scores, per-class
IoU, confusion matrices; the reference slots and two floors beside the searched ones -- the
best constant prediction, and the untrained network: the best searched slot's architecture
freshly initialised with the dataset's training seed, scored as the evaluate stage scores
on at most --baseline-images images of the split; a verdict per dataset, computed, on
whether the best searched slot beats it and how it compares with the references; the
papers' figures, labelled as such); quality against latency and
parameters with the Pareto front; latency per size and backend, which backend won and
by how much, beside the papers' published figures; qualitative results of the best
searched slot; provenance (git revision, parameters and their hash, machine, library
versions, time); what changed since git's HEAD (metrics and parameters, read with git:
no DVC command runs, so the stage works inside `dvc repro`).

Inputs, in the pipeline's layout under --reports, --runs and --data:
<reports>/<experiment>/search/..., rank/ (rankings.csv, metrics.json, top/<slot>.json),
train/<dataset>/<slot>/ (metrics.tsv, metrics.json), evaluate/<dataset>/<slot>/
(metrics.json, confusion_matrix.png), benchmark/latency.json (or --latency FILE);
<runs>/search/<experiment>/ (history.jsonl, summary.json), <runs>/train/<experiment>/
<dataset>/<slot>/best.pt (for the qualitative results and the untrained network's card);
<data>/<dataset> (prepared). The slots are 1..k (rank.<experiment>.<preset>.k of --params),
published and random; the untrained network's seed is train.<experiment>.<dataset>.<preset>
.seed of --params, read as the train stage reads it.

A missing input stops the stage with exit status 2 and a message naming the file and
the stage that writes it. Without a latency file the stage fails too, unless
--no-latency says to leave the latency figures out.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

from .params import ParamsError, exit_status, read_yaml, stage_parser
from .train import DATASETS, load_config

#: The ranking's reference slots, after its top k (nasseg.ranking writes top/published.json
#: and top/random.json).
REFERENCE_SLOTS = ("published", "random")


def size_arg(text: str) -> str:
    """``360x480`` (height x width), as the benchmark names its sizes."""
    if not re.fullmatch(r"\d+x\d+", text):
        raise argparse.ArgumentTypeError(f"{text!r}: expected HEIGHTxWIDTH such as 360x480")
    return text


def slots_of(params: Path, experiment: str) -> tuple[str, ...]:
    """The experiment's ranking slots at the preset of ``params``: 1..k, then the references.

    ``k`` is read as the rank stage reads it (``rank.<experiment>.<preset>.k``; the rank stage
    validates the section), without importing the ranking code.
    """
    data = read_yaml(params)
    preset = data.get("preset", "default")
    try:
        k = data["rank"][experiment][preset]["k"]
    except (KeyError, TypeError):
        raise ParamsError(f"{params}: no rank.{experiment}.{preset}.k (the ranking's number of slots)") from None
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ParamsError(f"{params}: rank.{experiment}.{preset}.k: expected a positive integer, got {k!r}")
    return (*(str(i) for i in range(1, k + 1)), *REFERENCE_SLOTS)


def baseline_images_arg(text: str) -> int | None:
    """``all`` (None) or a positive number of images."""
    if text == "all":
        return None
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive number of images or 'all'")
    return int(text)


def train_seeds(params: Path, experiment: str) -> dict[str, int]:
    """The training seed of each dataset of ``experiment`` (``train.<experiment>.<dataset>.<preset>.seed``,
    validated as the train stage validates it: absent, its default)."""
    return {ds: load_config(params, experiment, ds, []).seed for ds in DATASETS[experiment]}


def report_config(args: argparse.Namespace):   # -> nasseg.reporting.build.ReportConfig
    from nasseg.reporting.build import ReportConfig
    from nasseg.reporting.collect import RunPaths

    exp = args.experiment
    reports, runs = args.reports / exp, args.runs
    latency = None if args.no_latency else (args.latency or reports / "benchmark" / "latency.json")
    paths = RunPaths(
        history=runs / "search" / exp / "history.jsonl", search_summary=runs / "search" / exp / "summary.json",
        rank_dir=reports / "rank", training=str(reports / "train" / "{dataset}" / "{slot}"),
        evaluation=str(reports / "evaluate" / "{dataset}" / "{slot}" / "metrics.json"),
        checkpoint=str(runs / "train" / exp / "{dataset}" / "{slot}" / "best.pt"), latency=latency,
        compared=tuple(args.compare_search))
    metrics = sorted(p for p in reports.glob("**/metrics.json") if args.out.resolve() not in p.resolve().parents)
    if latency is not None:
        metrics.append(latency)
    return ReportConfig(
        experiment=exp, experiments=tuple(DATASETS), datasets=DATASETS[exp], slots=slots_of(args.params, exp),
        paths=paths, data=str(args.data / "{dataset}"), params_file=args.params, params=read_yaml(args.params),
        repo=args.repo, metrics_files=tuple(metrics), train_seeds=train_seeds(args.params, exp),
        qualitative=args.qualitative, baseline_images=args.baseline_images,
        moving_average=args.moving_average, tradeoff_size=args.tradeoff_size,
        latency_skipped="the report was made with --no-latency" if latency is None else "",
        device=args.device, progress=not args.no_progress)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("python -m stages.report", __doc__)
    parser.add_argument("--experiment", required=True, choices=tuple(DATASETS),
                        help="wacv or cvpr: the experiment to report")
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder: report.html, report.md, figures/")
    parser.add_argument("--reports", type=Path, default=Path("reports"),
                        help="the stages' metrics and plots (default: %(default)s)")
    parser.add_argument("--runs", type=Path, default=Path("runs"),
                        help="the stages' heavy outputs: search history, checkpoints (default: %(default)s)")
    parser.add_argument("--data", type=Path, default=Path("data/prepared"),
                        help="prepared datasets, one folder each (default: %(default)s)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="parameters file: the preset, the ranking's k, the sections shown (default: %(default)s)")
    parser.add_argument("--repo", type=Path, default=Path("."),
                        help="the git checkout whose revision and HEAD the report compares with (default: %(default)s)")
    parser.add_argument("--latency", type=Path, default=None,
                        help="the benchmark's latency.json (default: <reports>/<experiment>/benchmark/latency.json)")
    parser.add_argument("--no-latency", action="store_true",
                        help="leave the latency figures out (the trade-off then shows parameters only)")
    parser.add_argument("--compare-search", type=Path, action="append", default=[], metavar="DIR",
                        help="another search's output folder (history.jsonl, summary.json) to compare "
                             "strategies with; repeatable")
    parser.add_argument("--qualitative", type=int, default=3, metavar="N",
                        help="validation images shown per dataset (0: none; default: %(default)s)")
    parser.add_argument("--baseline-images", type=baseline_images_arg, default=100, metavar="N",
                        help="images of the scored split the untrained network is scored on, spread evenly "
                             "over it ('all': the whole split; default: %(default)s)")
    parser.add_argument("--moving-average", type=int, default=None, metavar="N",
                        help="window of the search reward's moving average (default: a twentieth of the "
                             "architectures, 3 to 100)")
    parser.add_argument("--tradeoff-size", type=size_arg, default=None, metavar="HxW",
                        help="input size of the latency in the trade-off plots (default: the largest measured)")
    parser.add_argument("--device", default="cpu", help="torch device for the qualitative predictions and "
                                                        "the untrained network (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.qualitative < 0 or (args.moving_average is not None and args.moving_average < 1):
        parser.error("--qualitative must be >= 0 and --moving-average >= 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from nasseg.reporting.build import make_report

        written = make_report(report_config(args), args.out)
    except Exception as exc:
        return exit_status(exc)
    print(f"report of the {args.experiment} experiment: {written['html']}, {written['markdown']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
