"""Reading one experiment's run artefacts into typed, immutable records for the report.

What: :func:`collect_run` reads what the stages of one experiment wrote -- the
search's ``history.jsonl`` and ``summary.json``, the ranking's ``rankings.csv``,
``metrics.json`` and slot genotypes, each training's ``metrics.tsv`` and
``metrics.json``, each evaluation's ``metrics.json`` (and ``confusion_matrix.png``),
and the latency benchmark's ``latency.json`` -- into frozen dataclasses
(:class:`Run` and its parts). Every path comes in as an argument (:class:`RunPaths`):
this module knows file formats, not the pipeline's layout.

Why a separate step: the figures, tables and text of the report are then built from
plain, checked values, and a missing or malformed file fails here, once, with an
:class:`ArtefactError` that names the file and the stage that writes it, instead of
as a KeyError in the middle of a plot.
"""
from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..genotypes import genotype_from_dict
from ..spaces.base import Genotype, GenotypeError

__all__ = ["ArtefactError", "RunPaths", "SearchRecord", "SearchHistory", "RankRow", "Slot", "Ranking",
           "TrainingRun", "Evaluation", "LatencyResult", "Int8Accuracy", "LatencyModel", "Latency", "Run",
           "LATENCY_FORMAT", "STATUSES", "SCORED", "read_search", "read_ranking", "read_training", "read_evaluation",
           "read_latency", "collect_run", "is_searched_slot"]

#: The ``format`` tag of the latency benchmark's JSON.
LATENCY_FORMAT = "nasseg-latency/1"
#: Every status a search records, and those whose reward is a validation score: the values of
#: :class:`nasseg.search.failures.Status` (a test checks), written out so that reading a history
#: does not import the search code and its torch machinery.
STATUSES = ("ok", "early_stopped", "oom", "nan", "error")
SCORED = ("ok", "early_stopped")


class ArtefactError(InputError, FileNotFoundError):
    """A run artefact is missing or unreadable; the message names the file and its stage."""


def _missing(path: Path, producer: str) -> ArtefactError:
    return ArtefactError(f"{path}: not found; it is written by {producer}: run that stage first")


def _read_json(path: Path, producer: str) -> Any:
    if not path.is_file():
        raise _missing(path, producer)
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtefactError(f"{path}: unreadable ({exc}); re-run {producer}") from exc


def _get(data: Mapping[str, Any], key: str, path: Path, producer: str) -> Any:
    if not isinstance(data, Mapping) or key not in data:
        raise ArtefactError(f"{path}: no key {key!r}; is it a file of {producer}? Re-run that stage")
    return data[key]


def _float(value: Any) -> float | None:
    """A finite float, or None for null, empty and non-finite values."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _int(value: Any) -> int | None:
    x = _float(value)
    return int(x) if x is not None else None


def is_searched_slot(slot: str) -> bool:
    """Whether a ranking slot holds a searched architecture ("1".."k"), not a reference one."""
    return slot.isdigit()


# -- the search ----------------------------------------------------------------------

SEARCH_STAGE = "the search stage (python -m stages.search)"


@dataclass(frozen=True)
class SearchRecord:
    """One evaluated architecture of a search's history."""
    id: int
    reward: float
    status: str
    params: int | None
    flops: int | None
    strategy: str
    genotype: Mapping[str, Any]

    @property
    def scored(self) -> bool:
        """Whether the reward is a validation score (the status is ok or early_stopped)."""
        return self.status in SCORED


@dataclass(frozen=True)
class SearchHistory:
    """One search: its records in id order, and its summary.json (empty when absent)."""
    path: Path
    space: str
    records: tuple[SearchRecord, ...]
    summary: Mapping[str, Any] = field(default_factory=dict)

    @property
    def strategies(self) -> tuple[str, ...]:
        """The strategies its records came from, in order of first appearance."""
        return tuple(dict.fromkeys(r.strategy for r in self.records))

    @property
    def status_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.records:
            counts[r.status] = counts.get(r.status, 0) + 1
        return counts


def read_search(history: Path, summary: Path | None = None) -> SearchHistory:
    """A search's history.jsonl and, when it exists, the summary.json beside it.

    A record's strategy is its own ``strategy`` key when it has one, else the summary's
    ``strategy``, else ``"unknown"``.
    """
    history = Path(history)
    summary = Path(summary) if summary is not None else history.with_name("summary.json")
    info: Mapping[str, Any] = _read_json(summary, SEARCH_STAGE) if summary.is_file() else {}
    if not history.is_file():
        raise _missing(history, SEARCH_STAGE)
    default_strategy = str(info.get("strategy") or "unknown")
    records = []
    space = str(info.get("space") or "")
    for n, line in enumerate(history.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{history}:{n}"
        try:
            row = json.loads(line)
            status = str(row["status"])
            if status not in STATUSES:
                raise ValueError(f"unknown status {status!r}; expected one of {', '.join(STATUSES)}")
            reward = _float(row["reward"])
            genotype = row["genotype"]
            space = space or str(genotype.get("space", ""))
            records.append(SearchRecord(
                id=int(row["id"]), reward=reward if reward is not None else math.nan, status=status,
                params=_int(row.get("params")), flops=_int(row.get("flops")),
                strategy=str(row.get("strategy") or default_strategy), genotype=genotype))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ArtefactError(f"{where}: not a search record ({type(exc).__name__}: {exc}); "
                                f"expected a history.jsonl of {SEARCH_STAGE}") from None
    if not records:
        raise ArtefactError(f"{history}: no records; the search evaluated no architecture")
    return SearchHistory(history, space, tuple(sorted(records, key=lambda r: r.id)), info)


# -- the ranking -----------------------------------------------------------------------

RANK_STAGE = "the rank stage (python -m stages.rank)"


@dataclass(frozen=True)
class RankRow:
    """One unique architecture of rankings.csv (rank None: no successful evaluation)."""
    rank: int | None
    times_sampled: int
    num_successful: int
    best_reward: float | None
    mean_reward: float | None
    params: int | None
    flops: int | None
    best_id: int | None
    ids: tuple[int, ...]
    genotype: Genotype


@dataclass(frozen=True)
class Slot:
    """One genotype slot the pipeline trains: "1".."k" (searched), "published", "random"."""
    name: str
    source: str
    genotype: Genotype
    reward: float | None
    params: int | None
    flops: int | None
    times_sampled: int

    @property
    def searched(self) -> bool:
        return is_searched_slot(self.name)


@dataclass(frozen=True)
class Ranking:
    """rankings.csv in rank order, metrics.json, and the slots in pipeline order."""
    rows: tuple[RankRow, ...]
    metrics: Mapping[str, Any]
    slots: tuple[Slot, ...]


def _genotype(data: Any, where: str, producer: str) -> Genotype:
    try:
        return genotype_from_dict(data)
    except (GenotypeError, TypeError, KeyError) as exc:
        raise ArtefactError(f"{where}: bad genotype ({exc}); re-run {producer}") from None


def read_ranking(rank_dir: Path, slots: Sequence[str]) -> Ranking:
    """``rankings.csv``, ``metrics.json`` and ``top/<slot>.json`` for each of ``slots``."""
    rank_dir = Path(rank_dir)
    csv_path = rank_dir / "rankings.csv"
    if not csv_path.is_file():
        raise _missing(csv_path, RANK_STAGE)
    rows = []
    with csv_path.open(newline="") as fh:
        for n, row in enumerate(csv.DictReader(fh), start=2):
            where = f"{csv_path}:{n}"
            try:
                rows.append(RankRow(
                    rank=_int(row["rank"]), times_sampled=int(row["times_sampled"]),
                    num_successful=int(row["num_successful"]), best_reward=_float(row["best_reward"]),
                    mean_reward=_float(row["mean_reward"]), params=_int(row["params"]),
                    flops=_int(row["flops"]), best_id=_int(row["best_id"]),
                    ids=tuple(int(i) for i in row["ids"].split()),
                    genotype=_genotype(json.loads(row["genotype"]), where, RANK_STAGE)))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise ArtefactError(f"{where}: not a rankings.csv row ({type(exc).__name__}: {exc}); "
                                    f"re-run {RANK_STAGE}") from None
    metrics = _read_json(rank_dir / "metrics.json", RANK_STAGE)
    out = []
    for name in slots:
        path = rank_dir / "top" / f"{name}.json"
        data = _read_json(path, RANK_STAGE)
        out.append(Slot(name=name, source=str(data.get("source", name)),
                        genotype=_genotype(_get(data, "genotype", path, RANK_STAGE), str(path), RANK_STAGE),
                        reward=_float(data.get("reward")), params=_int(data.get("params")),
                        flops=_int(data.get("flops")), times_sampled=int(data.get("times_sampled") or 0)))
    return Ranking(tuple(rows), metrics, tuple(out))


# -- training and evaluation -------------------------------------------------------------

TRAIN_STAGE = "the train stage (python -m stages.train)"
EVALUATE_STAGE = "the evaluate stage (python -m stages.evaluate)"


@dataclass(frozen=True)
class TrainingRun:
    """One slot trained on one dataset: the per-epoch rows of metrics.tsv and metrics.json."""
    dataset: str
    slot: str
    task: str
    score: str                                   # the validation score that picked best.pt
    epochs: tuple[Mapping[str, float | None], ...]
    summary: Mapping[str, Any]

    def column(self, name: str) -> tuple[list[float], list[float]]:
        """(epochs, values) of a metrics.tsv column, leaving out epochs without a value."""
        xs, ys = [], []
        for row in self.epochs:
            if row.get(name) is not None and row.get("epoch") is not None:
                xs.append(float(row["epoch"]))   # type: ignore[arg-type]
                ys.append(float(row[name]))      # type: ignore[arg-type]
        return xs, ys

    @property
    def params(self) -> int | None:
        """Parameters of the network as it infers (without auxiliary heads)."""
        return _int(self.summary.get("params_without_aux", self.summary.get("params")))


def read_training(folder: Path, dataset: str, slot: str) -> TrainingRun:
    """``metrics.tsv`` and ``metrics.json`` of one training (the train stage's --metrics folder)."""
    folder = Path(folder)
    summary = _read_json(folder / "metrics.json", TRAIN_STAGE)
    tsv = folder / "metrics.tsv"
    if not tsv.is_file():
        raise _missing(tsv, TRAIN_STAGE)
    lines = [line.split("\t") for line in tsv.read_text().splitlines() if line.strip()]
    if not lines:
        raise ArtefactError(f"{tsv}: empty; re-run {TRAIN_STAGE}")
    header, *body = lines
    epochs = tuple({k: _float(v) for k, v in zip(header, row)} for row in body)
    task = str(_get(summary, "task", folder / "metrics.json", TRAIN_STAGE))
    score = str(summary.get("score") or ("rmse" if task == "depth" else "miou"))
    return TrainingRun(dataset, slot, task, score, epochs, summary)


@dataclass(frozen=True)
class Evaluation:
    """One evaluate stage's metrics.json: the scalar scores, per-class IoU, confusion matrix."""
    dataset: str
    slot: str
    task: str
    split: str
    num_images: int | None
    scores: Mapping[str, float | None]
    class_names: tuple[str, ...] = ()
    per_class_iou: Mapping[str, float | None] = field(default_factory=dict)
    confusion: tuple[tuple[int, ...], ...] | None = None
    confusion_png: Path | None = None
    flip: bool = False                           # the test-time settings it was scored with
    scales: tuple[float, ...] = (1.0,)


#: Keys of an evaluation's metrics.json that are not scores.
_INFO_KEYS = frozenset({"task", "checkpoint", "data", "split", "space", "dataset", "flip", "scales",
                        "num_images", "per_class_iou", "per_class_acc", "class_names", "confusion_matrix"})


def read_evaluation(metrics: Path, dataset: str, slot: str) -> Evaluation:
    """An evaluate stage's metrics.json, and confusion_matrix.png when it is beside it."""
    metrics = Path(metrics)
    data = _read_json(metrics, EVALUATE_STAGE)
    task = str(_get(data, "task", metrics, EVALUATE_STAGE))
    scores = {k: _float(v) for k, v in data.items()
              if k not in _INFO_KEYS and (isinstance(v, (int, float)) or v is None) and not isinstance(v, bool)}
    png = metrics.with_name("confusion_matrix.png")
    matrix = data.get("confusion_matrix")
    return Evaluation(
        dataset=dataset, slot=slot, task=task, split=str(data.get("split", "")),
        num_images=_int(data.get("num_images")), scores=scores,
        class_names=tuple(data.get("class_names", ())),
        per_class_iou={str(k): _float(v) for k, v in (data.get("per_class_iou") or {}).items()},
        confusion=tuple(tuple(int(v) for v in row) for row in matrix) if matrix else None,
        confusion_png=png if png.is_file() else None, flip=bool(data.get("flip", False)),
        scales=tuple(float(x) for x in data.get("scales") or (1.0,)))


# -- latency ------------------------------------------------------------------------------

BENCHMARK_STAGE = "the benchmark stage (python -m stages.benchmark)"


@dataclass(frozen=True)
class LatencyResult:
    """One backend at one input size: status ok / failed / mismatch; seconds per run if ok."""
    size: str
    height: int
    width: int
    backend: str
    status: str
    reason: str | None
    max_abs_diff: float | None
    stats: Mapping[str, float] | None
    speedup_vs_eager: float | None

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.stats is not None and _float(self.stats.get("median")) is not None

    @property
    def median_ms(self) -> float | None:
        return 1000.0 * float(self.stats["median"]) if self.ok and self.stats is not None else None


@dataclass(frozen=True)
class Int8Accuracy:
    """The int8 backend's accuracy beside fp32 on a few validation images."""
    split: str
    num_images: int | None
    miou_fp32: float | None
    miou_int8: float | None
    delta: float | None


@dataclass(frozen=True)
class LatencyModel:
    """One benchmarked checkpoint: its figures at every size and backend."""
    label: str
    dataset: str
    slot: str
    checkpoint: str
    num_classes: int | None
    params: int | None
    params_without_aux: int | None
    flops: Mapping[str, float]
    results: tuple[LatencyResult, ...]
    int8: Int8Accuracy | None

    def result(self, size: str, backend: str) -> LatencyResult | None:
        return next((r for r in self.results if r.size == size and r.backend == backend), None)


@dataclass(frozen=True)
class Latency:
    """The benchmark's latency.json: environment, settings and every model's results."""
    path: Path
    environment: Mapping[str, Any]
    settings: Mapping[str, Any]
    models: tuple[LatencyModel, ...]

    @property
    def sizes(self) -> tuple[str, ...]:
        """Sizes as ``HxW``, in the settings' order (else first appearance)."""
        listed = [f"{h}x{w}" for h, w in self.settings.get("sizes", [])]
        seen = [r.size for m in self.models for r in m.results]
        return tuple(dict.fromkeys([*listed, *seen]))

    @property
    def backends(self) -> tuple[str, ...]:
        listed = list(self.settings.get("backends", []))
        seen = [r.backend for m in self.models for r in m.results]
        return tuple(dict.fromkeys([*listed, *seen]))

    def model(self, dataset: str, slot: str) -> LatencyModel | None:
        return next((m for m in self.models if m.dataset == dataset and m.slot == slot), None)


def read_latency(path: Path) -> Latency:
    """The benchmark stage's latency.json (format ``nasseg-latency/1``)."""
    path = Path(path)
    data = _read_json(path, BENCHMARK_STAGE)
    if not isinstance(data, Mapping) or data.get("format") != LATENCY_FORMAT:
        found = data.get("format") if isinstance(data, Mapping) else type(data).__name__
        raise ArtefactError(f"{path}: format {found!r}, expected {LATENCY_FORMAT!r}; re-run {BENCHMARK_STAGE}")
    models = []
    for i, m in enumerate(_get(data, "models", path, BENCHMARK_STAGE)):
        where = f"{path}: models[{i}]"
        try:
            results = tuple(LatencyResult(
                size=str(r["size"]), height=int(r["height"]), width=int(r["width"]), backend=str(r["backend"]),
                status=str(r["status"]), reason=r.get("reason"), max_abs_diff=_float(r.get("max_abs_diff")),
                stats=dict(r["stats"]) if r.get("stats") else None,
                speedup_vs_eager=_float(r.get("speedup_vs_eager"))) for r in m["results"])
            q = m.get("int8")
            int8 = Int8Accuracy(str(q.get("split", "")), _int(q.get("num_images")), _float(q.get("miou_fp32")),
                                _float(q.get("miou_int8")), _float(q.get("delta"))) if q else None
            models.append(LatencyModel(
                label=str(m["label"]), dataset=str(m["dataset"]), slot=str(m["slot"]),
                checkpoint=str(m.get("checkpoint", "")), num_classes=_int(m.get("num_classes")),
                params=_int(m.get("params")), params_without_aux=_int(m.get("params_without_aux")),
                flops={str(k): float(v) for k, v in (m.get("flops") or {}).items() if _float(v) is not None},
                results=results, int8=int8))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ArtefactError(f"{where}: malformed ({type(exc).__name__}: {exc}); re-run "
                                f"{BENCHMARK_STAGE}") from None
    return Latency(path, dict(data.get("environment") or {}), dict(data.get("settings") or {}), tuple(models))


# -- one experiment ---------------------------------------------------------------------------

@dataclass(frozen=True)
class RunPaths:
    """Where one experiment's artefacts are (the pipeline's layout is the caller's business).

    ``training(ds, slot)`` / ``evaluation(ds, slot)`` / ``checkpoint(ds, slot)`` are
    format strings with ``{dataset}`` and ``{slot}``.
    """
    history: Path
    search_summary: Path
    rank_dir: Path
    training: str
    evaluation: str
    checkpoint: str
    latency: Path | None
    compared: tuple[Path, ...] = ()   # more search folders (history.jsonl, summary.json), to compare

    def training_dir(self, dataset: str, slot: str) -> Path:
        return Path(self.training.format(dataset=dataset, slot=slot))

    def evaluation_file(self, dataset: str, slot: str) -> Path:
        return Path(self.evaluation.format(dataset=dataset, slot=slot))

    def checkpoint_file(self, dataset: str, slot: str) -> Path:
        return Path(self.checkpoint.format(dataset=dataset, slot=slot))


@dataclass(frozen=True)
class Run:
    """Everything the report shows of one experiment."""
    experiment: str
    space: str
    datasets: tuple[str, ...]
    searches: tuple[SearchHistory, ...]           # the experiment's search first, then the compared ones
    ranking: Ranking
    trainings: Mapping[tuple[str, str], TrainingRun]
    evaluations: Mapping[tuple[str, str], Evaluation | None]
    latency: Latency | None
    paths: RunPaths

    @property
    def search(self) -> SearchHistory:
        return self.searches[0]

    @property
    def slots(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.ranking.slots)

    def slot(self, name: str) -> Slot:
        return next(s for s in self.ranking.slots if s.name == name)


def collect_run(experiment: str, datasets: Sequence[str], slots: Sequence[str], paths: RunPaths) -> Run:
    """Read every artefact of ``experiment``; raise :class:`ArtefactError` for a missing one.

    An evaluation of a depth dataset may be absent (its training's best validation is
    shown instead); a segmentation one must be there (the per-class IoU and the
    confusion matrix come from it). ``paths.latency`` None skips the latency figures.
    """
    search = read_search(paths.history, paths.search_summary)
    compared = tuple(read_search(Path(d) / "history.jsonl", Path(d) / "summary.json") for d in paths.compared)
    ranking = read_ranking(paths.rank_dir, slots)
    trainings: dict[tuple[str, str], TrainingRun] = {}
    evaluations: dict[tuple[str, str], Evaluation | None] = {}
    for ds in datasets:
        for slot in slots:
            run = read_training(paths.training_dir(ds, slot), ds, slot)
            trainings[ds, slot] = run
            file = paths.evaluation_file(ds, slot)
            if file.is_file() or run.task != "depth":
                evaluations[ds, slot] = read_evaluation(file, ds, slot)
            else:
                evaluations[ds, slot] = None
    latency = read_latency(paths.latency) if paths.latency is not None else None
    return Run(experiment=experiment, space=search.space or ranking.slots[0].genotype.space,
               datasets=tuple(datasets), searches=(search, *compared), ranking=ranking, trainings=trainings,
               evaluations=evaluations, latency=latency, paths=paths)
