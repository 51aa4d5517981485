"""Making one experiment's report: read the run, compute what it lacks, build and write the document.

What: :func:`make_report` puts the steps together -- :func:`~.collect.collect_run` reads
the artefacts, :mod:`.baselines` adds two floors per dataset -- the best constant
prediction, and the best searched slot's network untrained (freshly initialised with
the dataset's training seed, scored as the evaluate stage scores) --
:mod:`.qualitative` predicts a few images with the best searched slot of each dataset,
:mod:`.provenance` and :mod:`.changes` say where the numbers come from and what moved
since git's HEAD, :func:`~.sections.build_document` lays it all out and
:func:`~.render.write_report` writes the HTML page, the Markdown and its figures.

Every location is an argument (:class:`ReportConfig`); the pipeline's layout lives in
the stage (``stages/report.py``).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .baselines import ConstantBaseline, UntrainedBaseline, constant_depth, constant_segmentation, untrained_network
from .changes import compare_with_head
from .collect import TRAIN_STAGE, ArtefactError, Run, RunPaths, collect_run
from .document import Document
from .provenance import collect_provenance, experiment_params
from .qualitative import Samples, qualitative_samples
from .render import write_report
from .sections import ReportInputs, best_searched_slot, build_document

__all__ = ["ReportConfig", "make_report", "build_report"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportConfig:
    """What one report is made of, and where everything is."""
    experiment: str
    experiments: tuple[str, ...]            # every experiment of params.yaml (to pick this one's sections)
    datasets: tuple[str, ...]               # the datasets the experiment trains on
    slots: tuple[str, ...]                  # the ranking's slots, in order
    paths: RunPaths
    data: str                               # prepared dataset folder, a format string with {dataset}
    params_file: Path
    params: Mapping[str, Any]
    repo: Path = Path(".")
    metrics_files: tuple[Path, ...] = ()    # compared with git's HEAD
    train_seeds: Mapping[str, int] = field(default_factory=dict)   # dataset -> its training's seed
    qualitative: int = 3                    # images per dataset (0: none)
    baseline_images: int | None = 100       # images the untrained network is scored on (None: all)
    moving_average: int | None = None     # None: chosen from the number of architectures
    tradeoff_size: str | None = None
    latency_skipped: str = ""
    device: str = "cpu"
    progress: bool = True

    def data_dir(self, dataset: str) -> Path:
        return Path(self.data.format(dataset=dataset))


def _split_of(run: Run, ds: str, config: ReportConfig) -> str:
    """The split the dataset's evaluations scored (else the prepared data's val or test split)."""
    for slot in run.slots:
        e = run.evaluations.get((ds, slot))
        if e is not None and e.split:
            return e.split
    from ..data import read_meta
    lists = read_meta(config.data_dir(ds)).get("lists", {})
    return next((s for s in ("val", "test") if s in lists), next(iter(lists), "val"))


def _baseline(run: Run, ds: str, config: ReportConfig) -> ConstantBaseline | None:
    evaluation = next((e for s in run.slots if (e := run.evaluations.get((ds, s))) is not None), None)
    task = run.trainings[ds, run.slots[0]].task
    if task == "segmentation":
        if evaluation is None or evaluation.confusion is None:
            return None
        return constant_segmentation(evaluation.confusion, evaluation.class_names)
    return constant_depth(config.data_dir(ds), _split_of(run, ds, config))


def _untrained(run: Run, ds: str, config: ReportConfig) -> UntrainedBaseline | None:
    """The best searched slot's network on ``ds``, untrained, scored as its evaluation was."""
    slot = best_searched_slot(run, ds)
    if slot is None:
        return None
    if ds not in config.train_seeds:
        raise ValueError(f"no training seed for {ds}: the untrained network is initialised with it")
    checkpoint = config.paths.checkpoint_file(ds, slot)
    if not checkpoint.is_file():
        raise ArtefactError(f"{checkpoint}: not found; it is written by {TRAIN_STAGE}: run that stage first "
                            "(the untrained baseline rebuilds its network from the model card)")
    evaluation = run.evaluations.get((ds, slot))
    split = evaluation.split if evaluation is not None and evaluation.split else _split_of(run, ds, config)
    log.info("untrained baseline of %s on %s %s (seed %d, at most %s images)", checkpoint, ds, split,
             config.train_seeds[ds], config.baseline_images or "all")
    return untrained_network(checkpoint, config.data_dir(ds), split, config.train_seeds[ds], slot=slot,
                             flip=evaluation.flip if evaluation is not None else False,
                             scales=evaluation.scales if evaluation is not None else (1.0,),
                             max_images=config.baseline_images, device=config.device)


def build_report(config: ReportConfig) -> Document:
    """Read the run and build its report (nothing is written)."""
    from tqdm.auto import tqdm

    run = collect_run(config.experiment, config.datasets, config.slots, config.paths)
    baselines = {}
    for ds in run.datasets:
        b = _baseline(run, ds, config)
        if b is not None:
            baselines[ds] = b
    untrained = {}
    for ds in tqdm(run.datasets, desc="untrained baseline", unit="dataset", disable=not config.progress):
        u = _untrained(run, ds, config)
        if u is not None:
            untrained[ds] = u
    qualitative: dict[str, tuple[str, Samples]] = {}
    if config.qualitative > 0:
        for ds in tqdm(run.datasets, desc="qualitative", unit="dataset", disable=not config.progress):
            slot = best_searched_slot(run, ds)
            if slot is None:
                continue
            checkpoint = config.paths.checkpoint_file(ds, slot)
            if not checkpoint.is_file():
                raise ArtefactError(f"{checkpoint}: not found; it is written by {TRAIN_STAGE}: run that stage "
                                    "first (or pass --qualitative 0)")
            log.info("qualitative results of %s on %s: %d images", checkpoint, ds, config.qualitative)
            qualitative[ds] = (slot, qualitative_samples(checkpoint, config.data_dir(ds), _split_of(run, ds, config),
                                                         config.qualitative, device=config.device))
    provenance = collect_provenance(config.repo, config.params_file, config.params, config.experiment,
                                    config.experiments)
    changes = compare_with_head(config.repo, config.metrics_files, config.params_file,
                                lambda p: experiment_params(p, config.experiment, config.experiments))
    inputs = ReportInputs(provenance=provenance, changes=changes, qualitative=qualitative, baselines=baselines,
                          untrained=untrained,
                          moving_average=config.moving_average, tradeoff_size=config.tradeoff_size,
                          latency_skipped=config.latency_skipped)
    return build_document(run, inputs)


def make_report(config: ReportConfig, out: str | Path) -> dict[str, Path]:
    """Build the report of ``config`` and write it into ``out``; return the files written."""
    return write_report(build_report(config), out)
