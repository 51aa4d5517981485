"""Architecture search: sample, proxy-train and score decoders; learn; record.

    python -m stages.search --experiment wacv --data data/prepared/cityscapes --out runs/search/wacv

Reads section ``search.<experiment>.<preset>`` of params.yaml (``preset`` is a
top-level key: ``default`` for the small CPU stand-in, ``paper`` for the
papers' settings); ``--set key=value`` overrides a key of that section, e.g.
``--set num_archs=50 --set proxy.stage1.epochs=2 --set devices=[cuda:0,cuda:1]``, or
written in full as ``dvc exp run -S`` does: ``--set search.wacv.default.num_archs=50``.

Writes <out>/history.jsonl (one line per architecture), <out>/checkpoint.pt
(controller and strategy state, after every update) and <out>/summary.json.
Killed at any moment, the same command resumes where it stopped; raise
num_archs (or time_limit_s) and rerun to extend a finished search.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from nasseg.data import DataError
from nasseg.models import PretrainedWeightsUnavailable
from nasseg.search.runner import SearchConfig, run_search

from .params import ParamsError, add_common_args, load_section, read_yaml, stage_parser
from .schema import SEARCH_PRESET

EXPERIMENTS = tuple(SEARCH_PRESET)


def load_config(params: Path, experiment: str, overrides: list[str]) -> SearchConfig:
    """The experiment's search config at the preset named in params.yaml (its space: the experiment)."""
    preset = read_yaml(params).get("preset", "default")
    return load_section(params, f"search.{experiment}.{preset}", SEARCH_PRESET[experiment], overrides)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("python -m stages.search", __doc__)
    parser.add_argument("--experiment", required=True, choices=EXPERIMENTS,
                        help="wacv (template space, CityScapes) or cvpr (auxiliary cells, VOC)")
    parser.add_argument("--data", type=Path, required=True, help="prepared dataset folder (with meta.json)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (resumed if it exists)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_common_args(parser)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(args.out / "search.log")])
    try:
        config = load_config(args.params, args.experiment, args.overrides)
        summary = run_search(config, args.data, args.out, progress=not args.no_progress)
    except (ParamsError, DataError, PretrainedWeightsUnavailable, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    best = summary["best_reward"]
    print(f"evaluated {summary['num_evaluated']} architectures; best reward "
          f"{best:.4f}" if best is not None else "no architecture succeeded", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
