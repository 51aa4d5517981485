"""Full training of one architecture on one dataset, resumable, on one or several processes.

    python -m stages.train --experiment wacv --dataset cityscapes --genotype runs/rank/wacv/top/1.json \\
        --data data/prepared/cityscapes --out runs/train/wacv/cityscapes
    torchrun --nproc_per_node 2 -m stages.train --experiment cvpr --dataset voc --genotype cvpr/arch0 \\
        --data data/prepared/voc --out runs/train/cvpr/voc

--genotype is a genotype file (a rank slot such as runs/rank/wacv/top/1.json, or
Genotype.to_json's output) or a published name (wacv/arch0, cvpr/arch1); it must
belong to the experiment's space. Datasets: wacv trains on cityscapes or camvid,
cvpr on voc or nyud (NYUD: depth, one output channel). Parameters: section
``train.<experiment>.<dataset>.<preset>`` of params.yaml, where ``preset`` is the
top-level key (default: small CPU settings for the synthetic stand-ins; paper: the
papers' settings; ci: seconds); ``--set key=value`` overrides a key of that section
(``--set epochs=2``), or in full as ``dvc exp run -S`` writes it.

While it runs, the training keeps its resumable state (checkpoint.pt: model,
optimisers, schedules, random states, position in the data; best.pt; train.log) in
<state>/<fingerprint>/, where the fingerprint hashes the parameters (less the
loader workers, checkpoint frequency and device), the genotype, the prepared
data's fingerprint and the training code; <state> defaults to .state/<out name>
beside <out>. The state is written at every epoch end and every
checkpoint_every_steps steps; killed at any moment, the same command resumes and
ends with the same results as an uninterrupted run. One run at a time uses a state
root: a second is refused at once, naming the first.

When training completes it publishes into <out>, all at once: model.pt (the final
network) and best.pt (the best validation), both model files with their card
(nasseg.checkpoint.load_model reads them), metrics.tsv (one row per epoch, for
`dvc plots`) and metrics.json (best and last validation, parameters, time); with
--metrics DIR the last two go to DIR instead (the pipeline keeps them in reports/).

Under torchrun (WORLD_SIZE > 1) the global batch_size is split over the processes
(gloo on CPU, NCCL on CUDA); BatchNorm statistics are those of the global batch
(bn: sync); only rank 0 takes the lock, validates and writes.

A bad input -- a missing data folder, a genotype file that does not parse, a missing
encoder weights file, a wrong parameter -- stops it with exit status 2 and a message
naming the file or key (a bug: a traceback, exit status 1).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .params import (ParamsError, add_common_args, add_resumable_args, exit_status, load_section, read_yaml,
                     stage_parser)
from .state import code_digest, default_state_root, fingerprint, locked_root, state_folder

if TYPE_CHECKING:
    from nasseg.training import TrainConfig

#: The datasets each experiment trains on, as the papers did (params.yaml: train.<experiment>.<dataset>;
#: the pipeline's table, workflow/pipeline.py, trains each slot on each).
DATASETS = {"wacv": ("cityscapes", "camvid"), "cvpr": ("voc", "nyud")}

log = logging.getLogger("stages.train")


def load_config(params: Path, experiment: str, dataset: str, overrides: list[str]) -> TrainConfig:
    """The training config of ``train.<experiment>.<dataset>.<preset>`` (preset: top-level key)."""
    from nasseg.training import TrainConfig

    if dataset not in DATASETS[experiment]:
        raise ParamsError(f"--dataset {dataset}: the {experiment} experiment trains on "
                          f"{' or '.join(DATASETS[experiment])}")
    preset = read_yaml(params).get("preset", "default")
    return load_section(params, f"train.{experiment}.{dataset}.{preset}", TrainConfig, overrides)


def train(args: Any, root: Path, rank: int) -> dict[str, Any]:
    """Load parameters, genotype and data description; find the state folder; train."""
    from nasseg.data import DataError, read_meta
    from nasseg.genotypes import load_genotype
    from nasseg.training import run_training

    config = load_config(args.params, args.experiment, args.dataset, args.overrides)
    genotype = load_genotype(args.genotype, space=args.experiment)
    meta = read_meta(args.data)
    if meta["dataset"] != args.dataset:
        raise DataError(f"{Path(args.data) / 'meta.json'}: a prepared {meta['dataset']} dataset, but "
                        f"--dataset is {args.dataset}")
    key = {"stage": "train", "experiment": args.experiment, "dataset": args.dataset,
           "params": config.fingerprint(), "genotype": genotype.to_dict(), "data": meta["fingerprint"],
           "code": code_digest(["stages.train"])}
    if rank == 0:
        state = state_folder(root, key)
        log_file = logging.FileHandler(state / "train.log")
        log_file.setFormatter(logging.getLogger().handlers[0].formatter)
        logging.getLogger().addHandler(log_file)
        log.info("state folder %s", state)
    else:
        state = root / fingerprint(key)
    return run_training(config, genotype, args.data, args.out, state_dir=state, metrics_dir=args.metrics,
                        progress=not args.no_progress)


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("python -m stages.train", __doc__)
    parser.add_argument("--experiment", required=True, choices=tuple(DATASETS),
                        help="wacv (template space: cityscapes, camvid) or cvpr (auxiliary cells: voc, nyud)")
    parser.add_argument("--dataset", required=True, choices=sorted({d for ds in DATASETS.values() for d in ds}),
                        help="the dataset, which picks the parameters section train.<experiment>.<dataset>")
    parser.add_argument("--genotype", required=True,
                        help="genotype file (e.g. runs/rank/wacv/top/1.json) or published name (wacv/arch0)")
    parser.add_argument("--data", type=Path, required=True, help="prepared dataset folder (with meta.json)")
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder: model.pt, best.pt, metrics.tsv, metrics.json, written on completion")
    parser.add_argument("--metrics", type=Path, default=None,
                        help="folder for metrics.tsv and metrics.json (default: --out)")
    add_resumable_args(parser)
    add_common_args(parser)
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))   # torchrun's; read before torch is imported
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s %(levelname)s %(name)s{f' [rank {rank}]' if rank else ''}: %(message)s")
    root = args.state or default_state_root(args.out)
    try:
        # Only rank 0 holds the lock (the other processes of a torchrun job share its state).
        with (locked_root(root) if rank == 0 else contextlib.nullcontext(Path(root))) as locked:
            summary = train(args, locked, rank)
    except Exception as exc:
        return exit_status(exc)
    if rank == 0:
        best, last = summary["best"], summary["last"]
        name = summary["score"]
        print(f"trained {summary['epochs']} epochs ({summary['steps']} steps, {summary['train_seconds']:.0f} s): "
              f"best {name} {best[name]} at epoch {best['epoch']}, last {last[name]}; outputs in {args.out}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
