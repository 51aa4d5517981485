"""Rank a search's architectures; write fixed slots of genotypes to train.

    python -m stages.rank --experiment wacv --history runs/search/wacv/history.jsonl --out runs/rank/wacv

Reads section ``rank.<experiment>.<preset>`` of params.yaml (``preset`` is a
top-level key, as for the search); ``--set key=value`` overrides a key of that
section (``--set k=5``, or in full: ``--set rank.wacv.default.k=5``).

The input is a search's history.jsonl, or the original code's genotypes.out
(DrSleep/nas-segm-pytorch): ``--format auto`` (the default) tells them apart by
the file name, else by the first line. Identical architectures are grouped and
ranked by their best reward over successful evaluations (ties: fewer parameters,
then the one sampled first). Written into --out, each file atomically:

* rankings.csv (one row per unique architecture, in rank order), rankings.md
  (summary and tables), metrics.json (counts and the best reward, for `dvc metrics`);
* top/1.json ... top/<k>.json, the k best architectures, and top/published.json and
  top/random.json, the reference slots; `nasseg.genotypes.load_genotype` reads each.
  top/ is replaced as a whole, so no slot of an earlier run with a larger k survives.

The number of slots is fixed by rank.k so that the pipeline's graph is static: with
fewer than k distinct successful architectures the stage fails (exit status 2),
saying how many there are; raise the search's num_archs or lower rank.k. A bad
line of the input fails the same way, naming the file and line.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .params import add_common_args, exit_status, load_section, read_yaml, stage_parser

if TYPE_CHECKING:
    from nasseg.ranking import RankConfig

EXPERIMENTS = ("wacv", "cvpr")


def load_config(params: Path, experiment: str, overrides: list[str]) -> RankConfig:
    """The experiment's rank config at the preset named in params.yaml (`published`: of its space)."""
    from .presets import RANK_PRESET

    preset = read_yaml(params).get("preset", "default")
    return load_section(params, f"rank.{experiment}.{preset}", RANK_PRESET[experiment], overrides)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("python -m stages.rank", __doc__)
    parser.add_argument("--experiment", required=True, choices=EXPERIMENTS,
                        help="wacv (template space) or cvpr (auxiliary cells): the space of the history")
    parser.add_argument("--history", type=Path, required=True,
                        help="the search's history.jsonl, or the original code's genotypes.out")
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder: rankings.csv, rankings.md, metrics.json, top/")
    parser.add_argument("--format", dest="fmt", default="auto", choices=("auto", "history", "genotypes_out"),
                        help="format of --history (default: %(default)s: by file name, else by content)")
    add_common_args(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from nasseg.ranking import rank_search

        config = load_config(args.params, args.experiment, args.overrides)
        metrics = rank_search(config, args.history, args.out, args.experiment, args.fmt)
    except Exception as exc:
        return exit_status(exc)
    print(f"{metrics['num_sampled']} sampled, {metrics['num_unique']} unique, "
          f"{metrics['num_unique_successful']} successful; best reward {metrics['best_reward']:.4f}; "
          f"slots written to {args.out / 'top'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
