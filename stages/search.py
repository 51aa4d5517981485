"""Architecture search: sample, proxy-train and score decoders; learn; record.

    python -m stages.search --experiment wacv --data data/prepared/cityscapes --out runs/search/wacv

Reads section ``search.<experiment>.<preset>`` of params.yaml (``preset`` is a
top-level key: ``default`` for the small CPU stand-in, ``paper`` for the
papers' settings); ``--set key=value`` overrides a key of that section, e.g.
``--set num_archs=50 --set proxy.stage1.epochs=2 --set devices=[cuda:0,cuda:1]``, or
written in full as ``dvc exp run -S`` does: ``--set search.wacv.default.num_archs=50``.

While it runs, the search keeps its resumable state (history.jsonl, one line per
architecture; checkpoint.pt, the controller and strategy state; search.log) in
<state>/<fingerprint>/, where the fingerprint hashes the parameters (less the
budget and devices), the prepared data's fingerprint and the search code; <state>
defaults to .state/<out name> beside <out>. Killed at any moment, the same command
resumes where it stopped; raise num_archs (or time_limit_s) and rerun to extend a
finished search; changed parameters start a fresh search in another state folder,
and going back to earlier ones finds theirs again. One run at a time uses a state
folder: a second is refused at once, naming the first.

When the search completes it writes, each file atomically, <out>/history.jsonl and
<out>/summary.json, and <metrics>/metrics.json and <metrics>/rewards.csv (small
files for `dvc metrics` and `dvc plots`; <metrics> defaults to <out>).

An architecture that runs out of memory, whose loss becomes NaN or that cannot be
built or run is recorded with its status and the search goes on. Anything else (bad
data, a missing file, a wrong setting) stops the search at once with exit status 2
and a message naming the file or key (a bug: a traceback, exit status 1); so does
`max_consecutive_failures` failed architectures in a row. What was recorded is kept:
fix the cause and run the same command to resume.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .params import add_common_args, add_resumable_args, exit_status, load_section, read_yaml, stage_parser
from .state import code_digest, default_state_root, locked_root, state_folder

if TYPE_CHECKING:
    from nasseg.search.runner import SearchConfig

#: The keys of stages.presets.SEARCH_PRESET, which is imported only when needed (it loads
#: torch), so that a run on a locked folder is refused at once.
EXPERIMENTS = ("wacv", "cvpr")


def load_config(params: Path, experiment: str, overrides: list[str]) -> SearchConfig:
    """The experiment's search config at the preset named in params.yaml (its space: the experiment)."""
    from .presets import SEARCH_PRESET

    preset = read_yaml(params).get("preset", "default")
    return load_section(params, f"search.{experiment}.{preset}", SEARCH_PRESET[experiment], overrides)


def search(args: Any, root: Path) -> dict[str, Any]:
    """Load the parameters, find the state folder of this run in `root`, run the search."""
    # Imported here, after the caller took the lock: a second run is refused at once
    # instead of after loading torch.
    from nasseg.data import read_meta
    from nasseg.search.runner import run_search

    config = load_config(args.params, args.experiment, args.overrides)
    key = {"stage": "search", "experiment": args.experiment, "params": config.fingerprint(),
           "data": read_meta(args.data)["fingerprint"], "code": code_digest(["stages.search"])}
    state = state_folder(root, key)
    log_file = logging.FileHandler(state / "search.log")
    log_file.setFormatter(logging.getLogger().handlers[0].formatter)
    logging.getLogger().addHandler(log_file)
    logging.getLogger("stages.search").info("state folder %s", state)
    return run_search(config, args.data, args.out, state_dir=state, metrics_dir=args.metrics,
                      progress=not args.no_progress)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("python -m stages.search", __doc__)
    parser.add_argument("--experiment", required=True, choices=EXPERIMENTS,
                        help="wacv (template space, CityScapes) or cvpr (auxiliary cells, VOC)")
    parser.add_argument("--data", type=Path, required=True, help="prepared dataset folder (with meta.json)")
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder: history.jsonl and summary.json, written on completion")
    parser.add_argument("--metrics", type=Path, default=None,
                        help="folder for metrics.json and rewards.csv (default: --out)")
    add_resumable_args(parser)
    add_common_args(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        with locked_root(args.state or default_state_root(args.out)) as root:
            summary = search(args, root)
    except Exception as exc:
        return exit_status(exc)
    best = summary["best_reward"]
    counts = ", ".join(f"{n} {s}" for s, n in summary["status_counts"].items())
    print(f"evaluated {summary['num_evaluated']} architectures ({counts}); "
          + (f"best reward {best:.4f}" if best is not None else "none succeeded: see the reasons in the history"),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
