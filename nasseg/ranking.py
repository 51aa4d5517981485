"""Ranking a search's architectures, and the fixed slots of genotypes to train.

A search samples architectures, often the same one several times (a controller that
has converged proposes its favourite again and again). This module reads what a
search recorded, groups identical genotypes, ranks them and writes:

* ``rankings.csv``: one row per unique architecture, in rank order: times sampled,
  successful evaluations, best and mean reward over them, parameters, FLOPs, the
  evaluations' ids, the count of each status, the action and the genotype (JSON);
* ``rankings.md``: a summary line and three tables: unique out of sampled (with the
  status counts), the most often sampled architectures, and the top ``k``;
* ``metrics.json``: a few scalars for ``dvc metrics``;
* ``top/1.json`` ... ``top/<k>.json``: the ``k`` best architectures, and two reference
  slots, ``top/published.json`` (the space's published genotype named by
  ``published``) and ``top/random.json`` (a random genotype of the space, drawn with
  ``random.Random(random_seed)``). Each slot is
  ``{"slot", "source", "space", "genotype", "reward", "params", "flops",
  "times_sampled", "ids"}``; :func:`nasseg.genotypes.load_genotype` reads its
  ``genotype``. A reference slot whose genotype the search also sampled carries that
  architecture's figures; otherwise reward, params and flops are null.

**Ranking.** An architecture's score is its best reward over its successful
evaluations (status ``ok`` or ``early_stopped``); ties go to fewer parameters (an
unknown count last), then to the architecture sampled first (smallest id), so the
order is deterministic. Architectures without a successful evaluation come last,
in the order first sampled, with no rank. The number of slots is fixed (``k``) so
that the pipeline's graph is static: when fewer than ``k`` distinct architectures
succeeded the ranking fails, saying how many there are, instead of writing fewer.

**Inputs.** This project's ``history.jsonl`` (:mod:`nasseg.search.store`: one JSON
object per evaluation, with ``id``, ``genotype``, ``reward``, ``status``, ``params``,
``flops``, ...), or the original implementation's ``genotypes.out``
(DrSleep/nas-segm-pytorch, ``src/main_search.py``), one line per sampled
architecture as its search loop writes it::

    reward: 0.4123, epoch: 17, params: 2710412, epoch_time: 35.1234, genotype: [[...], [...]]

``epoch`` there is the architecture's index (here its ``id``); ``params`` the
parameters of the whole search-time network (encoder and decoder, without the
auxiliary heads); the genotype the controller's nested lists
(:func:`nasseg.genotypes.genotype_from_legacy`). The authors parse that list with
``eval``; here it is read as a literal (``ast.literal_eval``), which runs no code.
Their log has no status: the authors' training turns any failure into reward 0
(``try_except``), so a failed architecture reads as an ``ok`` one scoring 0 and ranks
low, as it did for their controller; a reward that is not a finite number (``nan``)
gets the status ``error``. It has no FLOPs either: they are left empty (counting them
needs the search-time widths and input size, which the log does not record; the
training stage reports the trained networks' own), and the parameter counts are
the log's, not recomputed (the same decision: they are the figures the authors'
search saw, and reading the log needs no torch model).

Where we differ from the authors' code: their repository has no ranking step (its
helpers only parse one ``genotypes.out`` line, ``parse_geno_log``, with ``eval``);
the grouping of duplicates, the tie-breaks and the reference slots (published,
random) are ours.
"""
from __future__ import annotations

import ast
import csv
import io
import json
import logging
import math
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from .config import Config
from .errors import InputError
from .genotypes import Genotype, GenotypeError, genotype_from_dict, genotype_from_legacy
from .io import atomic_directory, atomic_write_json, atomic_write_text
from .search.failures import Status
from .spaces import get_space, space_of

log = logging.getLogger(__name__)

#: Input formats: detected, this project's search history, or the original code's log.
FORMATS: tuple[str, ...] = ("auto", "history", "genotypes_out")

RANKINGS_CSV = "rankings.csv"
RANKINGS_MD = "rankings.md"
METRICS = "metrics.json"
TOP = "top"
#: Rows of the "most often sampled" table in rankings.md.
FREQUENT_ROWS = 10
#: Every status, in the fixed order of the per-status columns of rankings.csv.
STATUSES: tuple[str, ...] = tuple(s.value for s in Status)


class RankConfig(Config):
    """One experiment's ranking section of params.yaml (``rank.<experiment>.<preset>``)."""
    # number of slots of the best architectures, top/1.json ... top/<k>.json; the search
    # must have found at least k distinct architectures with a successful evaluation
    k: int = Field(default=3, ge=1)
    # seed of random.Random drawing the random reference architecture (top/random.json)
    random_seed: int = 0
    # the space's published genotype in top/published.json (wacv: arch0, arch1;
    # cvpr: arch0, arch1, arch2; params.yaml's presets are checked against the experiment's
    # space by stages.presets.RANK_PRESET)
    published: str = Field(default="arch0", min_length=1)


class RankError(InputError, ValueError):
    """Bad input to the ranking, or too few architectures; the message names the file."""


@dataclass(frozen=True)
class Sample:
    """One evaluation of one sampled architecture, as the search recorded it."""
    id: int
    genotype: Genotype
    reward: float
    status: str
    params: int | None
    flops: int | None
    line: int   # line of the input file

    @property
    def succeeded(self) -> bool:
        """Whether the reward is a validation score."""
        return Status(self.status).scored


@dataclass(frozen=True)
class Architecture:
    """One unique genotype and its evaluations (in input order)."""
    genotype: Genotype
    samples: tuple[Sample, ...]

    @property
    def ids(self) -> list[int]:
        return [s.id for s in self.samples]

    @property
    def first_id(self) -> int:
        return min(self.ids)

    @property
    def times_sampled(self) -> int:
        return len(self.samples)

    @property
    def successes(self) -> list[Sample]:
        return [s for s in self.samples if s.succeeded]

    @property
    def best(self) -> Sample | None:
        """The successful evaluation with the highest reward (the first such), if any."""
        scored = self.successes
        return max(scored, key=lambda s: (s.reward, -s.id)) if scored else None

    @property
    def best_reward(self) -> float | None:
        best = self.best
        return best.reward if best is not None else None

    @property
    def mean_reward(self) -> float | None:
        scored = self.successes
        return math.fsum(s.reward for s in scored) / len(scored) if scored else None

    @property
    def params(self) -> int | None:
        """The parameter count recorded with it (a failed evaluation may lack one)."""
        return next((s.params for s in self.samples if s.params is not None), None)

    @property
    def flops(self) -> int | None:
        return next((s.flops for s in self.samples if s.flops is not None), None)

    @property
    def status_counts(self) -> dict[str, int]:
        counts = Counter(s.status for s in self.samples)
        return {status: counts[status] for status in STATUSES}

    def sort_key(self) -> tuple[int, float, float, int]:
        """Successful ones first, by best reward (descending), fewer parameters, first id."""
        best = self.best_reward
        if best is None:
            return (1, 0.0, 0.0, self.first_id)
        params = float(self.params) if self.params is not None else math.inf
        return (0, -best, params, self.first_id)


@dataclass(frozen=True)
class Ranking:
    """Every evaluation of one search, grouped by genotype and ranked."""
    space: str
    source: Path
    samples: tuple[Sample, ...]
    #: unique architectures in rank order: the successful ones, then the others
    architectures: tuple[Architecture, ...]

    @property
    def ranked(self) -> list[Architecture]:
        """The architectures with at least one successful evaluation, best first."""
        return [a for a in self.architectures if a.best is not None]

    @property
    def status_counts(self) -> dict[str, int]:
        counts = Counter(s.status for s in self.samples)
        return {status: counts[status] for status in STATUSES if counts[status]}

    def find(self, genotype: Genotype) -> Architecture | None:
        return next((a for a in self.architectures if a.genotype == genotype), None)


# -- reading -------------------------------------------------------------------------

def _lines(path: Path) -> list[tuple[int, str]]:
    """The non-blank lines of `path` with their numbers (from 1); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: search history not found" if not path.exists()
                                else f"{path}: not a file")
    out = []
    for n, raw in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RankError(f"{path}:{n}: not UTF-8 text ({exc})") from None
        if text.strip():
            out.append((n, text))
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _optional_count(value: Any, key: str, where: str) -> int | None:
    if value is None:
        return None
    if not _is_int(value) or value < 0:
        raise RankError(f"{where}: {key} must be a non-negative integer or null, got {value!r}")
    return value


def _check_space(genotype: Genotype, space: str | None, where: str) -> None:
    if space is not None and space_of(genotype).name != space:
        raise RankError(f"{where}: a {space_of(genotype).name} genotype; this ranking is of the "
                        f"{space} space (--experiment)")


def _check_unique_ids(samples: list[Sample], path: Path, what: str) -> None:
    seen: dict[int, int] = {}
    for s in samples:
        if s.id in seen:
            raise RankError(f"{path}:{s.line}: {what} {s.id} already on line {seen[s.id]}; "
                            "expected the record of one search, each architecture once")
        seen[s.id] = s.line


def read_history(path: str | Path, space: str | None = None) -> list[Sample]:
    """The evaluations in a search's ``history.jsonl`` (see :mod:`nasseg.search.store`).

    Blank lines are skipped; any other line that is not a valid record raises
    :class:`RankError` naming the file, the line and what is wrong. With `space`,
    every genotype must be of that space.
    """
    path = Path(path)
    samples = []
    for n, text in _lines(path):
        where = f"{path}:{n}"
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RankError(f"{where}: not valid JSON ({exc})") from None
        if not isinstance(record, dict):
            raise RankError(f"{where}: expected a JSON object (one search record), got "
                            f"{type(record).__name__}")
        missing = [k for k in ("id", "genotype", "reward", "status") if k not in record]
        if missing:
            raise RankError(f"{where}: missing key{'s' if len(missing) > 1 else ''} {', '.join(missing)}; "
                            "expected a record of a search's history.jsonl")
        if not _is_int(record["id"]):
            raise RankError(f"{where}: id must be an integer, got {record['id']!r}")
        try:
            genotype = genotype_from_dict(record["genotype"])
        except GenotypeError as exc:
            raise RankError(f"{where}: bad genotype: {exc}") from None
        _check_space(genotype, space, where)
        status = record["status"]
        if status not in STATUSES:
            raise RankError(f"{where}: unknown status {status!r}; expected one of {', '.join(STATUSES)}")
        reward = record["reward"]
        if not isinstance(reward, (int, float)) or isinstance(reward, bool):
            raise RankError(f"{where}: reward must be a number, got {reward!r}")
        if Status(status).scored and not math.isfinite(reward):
            raise RankError(f"{where}: status {status} with the reward {reward!r}: a successful "
                            "evaluation needs a finite reward")
        samples.append(Sample(id=record["id"], genotype=genotype, reward=float(reward), status=status,
                              params=_optional_count(record.get("params"), "params", where),
                              flops=_optional_count(record.get("flops"), "flops", where), line=n))
    _check_unique_ids(samples, path, "id")
    return samples


#: One line of the original code's genotypes.out (src/main_search.py).
_GENOTYPES_OUT_LINE = re.compile(
    r"^reward: (?P<reward>\S+), epoch: (?P<epoch>\d+), params: (?P<params>\d+), "
    r"epoch_time: (?P<epoch_time>\S+), genotype: (?P<genotype>\[.*\])\s*$")
GENOTYPES_OUT_LAYOUT = ("reward: <float>, epoch: <int>, params: <int>, epoch_time: <float>, "
                        "genotype: <nested list>")


def read_genotypes_out(path: str | Path, space: str) -> list[Sample]:
    """The architectures logged in the original code's ``genotypes.out``, of `space`.

    Each line is parsed with a regular expression and the genotype's list text as a
    Python literal (never ``eval``); a line that does not fit raises
    :class:`RankError` naming the file and line. Status ``ok`` (``error`` for a
    reward that is not finite), ``flops`` None: see the module docstring.
    """
    path = Path(path)
    get_space(space)   # an unknown space fails before the file is read
    samples = []
    for n, text in _lines(path):
        where = f"{path}:{n}"
        m = _GENOTYPES_OUT_LINE.match(text)
        if m is None:
            raise RankError(f"{where}: not a genotypes.out line; expected {GENOTYPES_OUT_LAYOUT!r}, "
                            f"got {text.strip()[:200]!r}")
        try:
            reward = float(m["reward"])
        except ValueError:
            raise RankError(f"{where}: reward {m['reward']!r} is not a number") from None
        try:
            nested = ast.literal_eval(m["genotype"])
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
            raise RankError(f"{where}: the genotype is not a list literal ({type(exc).__name__}: "
                            f"{exc})") from None
        if not isinstance(nested, list):
            raise RankError(f"{where}: the genotype must be a nested list, got {type(nested).__name__}")
        try:
            genotype = genotype_from_legacy(space, nested)
        except GenotypeError as exc:
            raise RankError(f"{where}: not a {space} genotype: {exc}") from None
        samples.append(Sample(id=int(m["epoch"]), genotype=genotype, reward=reward,
                              status=Status.OK.value if math.isfinite(reward) else Status.ERROR.value,
                              params=int(m["params"]), flops=None, line=n))
    _check_unique_ids(samples, path, "epoch")
    return samples


def detect_format(path: str | Path) -> str:
    """``history`` or ``genotypes_out``: by the file name, else by its first non-blank line."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return "history"
    if path.name == "genotypes.out" or path.suffix == ".out":
        return "genotypes_out"
    lines = _lines(path)
    first = lines[0][1].lstrip() if lines else ""
    if first.startswith("{"):
        return "history"
    if first.startswith("reward:"):
        return "genotypes_out"
    raise RankError(f"{path}: cannot tell its format from its name or its first line "
                    f"({first[:80]!r}); expected a search's history.jsonl (JSON lines) or the "
                    "original code's genotypes.out; pass the format (--format history|genotypes_out)")


def read_samples(path: str | Path, space: str, fmt: str = "auto") -> list[Sample]:
    """The evaluations in `path`, read as `fmt` (``auto``: :func:`detect_format`)."""
    if fmt not in FORMATS:
        raise RankError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt == "auto":
        fmt = detect_format(path)
    return read_history(path, space) if fmt == "history" else read_genotypes_out(path, space)


# -- ranking -------------------------------------------------------------------------

def rank_samples(samples: Sequence[Sample], space: str, source: str | Path) -> Ranking:
    """Group `samples` by genotype and order them (see the module docstring)."""
    groups: dict[Genotype, list[Sample]] = {}
    for s in samples:
        groups.setdefault(s.genotype, []).append(s)
    archs = sorted((Architecture(g, tuple(group)) for g, group in groups.items()),
                   key=Architecture.sort_key)
    return Ranking(space=space, source=Path(source), samples=tuple(samples), architectures=tuple(archs))


def _status_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {status}" for status, n in counts.items()) or "none"


def _slot(name: str, source: str, genotype: Genotype, arch: Architecture | None) -> dict[str, Any]:
    return {"slot": name, "source": source, "space": genotype.space, "genotype": genotype.to_dict(),
            "reward": arch.best_reward if arch is not None else None,
            "params": arch.params if arch is not None else None,
            "flops": arch.flops if arch is not None else None,
            "times_sampled": arch.times_sampled if arch is not None else 0,
            "ids": arch.ids if arch is not None else []}


def make_slots(ranking: Ranking, config: RankConfig) -> dict[str, dict[str, Any]]:
    """The slot files' contents by slot name: "1" ... str(k), "published", "random".

    Raises :class:`RankError` when fewer than ``k`` architectures succeeded, or when
    the space has no published genotype called ``config.published``.
    """
    ranked = ranking.ranked
    if len(ranked) < config.k:
        raise RankError(
            f"{ranking.source}: {len(ranked)} unique architecture{'s' if len(ranked) != 1 else ''} "
            f"with a successful evaluation (of {len(ranking.architectures)} unique, "
            f"{len(ranking.samples)} sampled; {_status_text(ranking.status_counts)}), fewer than "
            f"rank.k = {config.k}: the {config.k} slots are fixed so that the pipeline's graph is "
            "static. Raise the search's num_archs (and rerun it: it resumes) or lower rank.k")
    space = get_space(ranking.space)
    try:
        published = space.published_genotype(config.published)
    except KeyError as exc:
        raise RankError(f"published: {exc.args[0]}") from None
    drawn = space.random_genotype(random.Random(config.random_seed))
    slots = {str(i): _slot(str(i), "search", a.genotype, a) for i, a in enumerate(ranked[: config.k], 1)}
    slots["published"] = _slot("published", "published", published, ranking.find(published))
    slots["random"] = _slot("random", "random", drawn, ranking.find(drawn))
    return slots


# -- writing -------------------------------------------------------------------------

def _action(genotype: Genotype) -> list[int]:
    return list(get_space(genotype.space).encode(genotype))


def _float(value: float | None, digits: int = 6) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def rankings_csv(ranking: Ranking) -> str:
    """rankings.csv: one row per unique architecture, in rank order."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["rank", "times_sampled", "num_successful", "best_reward", "mean_reward", "params",
                     "flops", "first_id", "best_id", "ids", *(f"status_{s}" for s in STATUSES),
                     "action", "genotype"])
    for i, a in enumerate(ranking.architectures, start=1):
        best = a.best
        writer.writerow([
            i if best is not None else "", a.times_sampled, len(a.successes), _float(a.best_reward),
            _float(a.mean_reward), "" if a.params is None else a.params, "" if a.flops is None else a.flops,
            a.first_id, "" if best is None else best.id, " ".join(map(str, a.ids)),
            *a.status_counts.values(), " ".join(map(str, _action(a.genotype))),
            json.dumps(a.genotype.to_dict(), sort_keys=False)])
    return buf.getvalue()


def _md_ids(ids: list[int], limit: int = 6) -> str:
    shown = ", ".join(map(str, ids[:limit]))
    return shown + (f", ... ({len(ids)})" if len(ids) > limit else "")


def _md_params(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


def _md_flops(value: int | None) -> str:
    return "" if value is None else f"{value / 1e9:.2f} G"


def _md_action(genotype: Genotype) -> str:
    return "`" + " ".join(map(str, _action(genotype))) + "`"


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def rankings_md(ranking: Ranking, config: RankConfig, source_format: str) -> str:
    """rankings.md: a summary line and three tables (unique/sampled, most often sampled, top k)."""
    n, u, ranked = len(ranking.samples), len(ranking.architectures), ranking.ranked
    lines = [f"# Ranking of the {ranking.space} search", "",
             f"**{n} sampled, {u} unique** ({len(ranked)} with a successful evaluation); statuses: "
             f"{_status_text(ranking.status_counts)}. Source: `{ranking.source.name}` ({source_format}).",
             "", "## Unique architectures out of all sampled", ""]
    repeated = [a for a in ranking.architectures if a.times_sampled > 1]
    rows = [["sampled", str(n)], ["unique", str(u)],
            ["unique, sampled more than once", str(len(repeated))],
            ["unique, with a successful evaluation", str(len(ranked))]]
    rows += [[f"status {status}", str(count)] for status, count in ranking.status_counts.items()]
    lines += _md_table(["", "count"], rows)
    lines += ["", "## Most often sampled", ""]
    if repeated:
        frequent = sorted(repeated, key=lambda a: (-a.times_sampled, a.first_id))[:FREQUENT_ROWS]
        rank_of = {a.genotype: i for i, a in enumerate(ranked, start=1)}
        lines += _md_table(
            ["times sampled", "successful", "rank", "best reward", "mean reward", "params", "ids", "action"],
            [[str(a.times_sampled), str(len(a.successes)), str(rank_of.get(a.genotype, "")),
              _float(a.best_reward, 4), _float(a.mean_reward, 4), _md_params(a.params), _md_ids(a.ids),
              _md_action(a.genotype)] for a in frequent])
    else:
        lines.append("Every architecture was sampled once.")
    lines += ["", f"## Top {config.k} by best reward", "",
              "Ties: fewer parameters first, then the architecture sampled first. Slot i is "
              "`top/<i>.json`.", ""]
    lines += _md_table(
        ["slot", "best reward", "mean reward", "times sampled", "params", "FLOPs", "ids", "action"],
        [[str(i), _float(a.best_reward, 4), _float(a.mean_reward, 4), str(a.times_sampled),
          _md_params(a.params), _md_flops(a.flops), _md_ids(a.ids), _md_action(a.genotype)]
         for i, a in enumerate(ranked[: config.k], start=1)])
    lines += ["", f"Reference slots: `top/published.json` ({ranking.space}/{config.published}) and "
              f"`top/random.json` (a random {ranking.space} genotype, seed {config.random_seed}).", ""]
    return "\n".join(lines)


def rank_search(config: RankConfig, history: str | Path, out_dir: str | Path, space: str,
                fmt: str = "auto") -> dict[str, Any]:
    """Read a search's record, rank it and write the outputs into `out_dir`; return the metrics.

    `history` is a ``history.jsonl`` or a ``genotypes.out`` (`fmt`: ``auto``,
    ``history`` or ``genotypes_out``) of the `space` space. Everything is computed
    before anything is written; each file is written atomically, and ``top/`` as a
    whole (:func:`nasseg.io.atomic_directory`), so no slot of an earlier run with a
    larger ``k`` survives. Raises :class:`RankError` (a ValueError) or
    FileNotFoundError, naming the file, on bad input or too few successful architectures.
    """
    history, out = Path(history), Path(out_dir)
    source_format = detect_format(history) if fmt == "auto" else fmt
    samples = read_samples(history, space, source_format)
    ranking = rank_samples(samples, space, history)
    slots = make_slots(ranking, config)
    csv_text = rankings_csv(ranking)
    md_text = rankings_md(ranking, config, source_format)
    best = ranking.ranked[0]
    metrics = {"num_sampled": len(ranking.samples), "num_unique": len(ranking.architectures),
               "num_unique_successful": len(ranking.ranked),
               "num_sampled_more_than_once": sum(a.times_sampled > 1 for a in ranking.architectures),
               "best_reward": best.best_reward, "best_params": best.params,
               **{f"status_{k}": v for k, v in ranking.status_counts.items()}}
    with atomic_directory(out / TOP) as top:
        for name, slot in slots.items():
            atomic_write_json(top / f"{name}.json", slot)
    atomic_write_text(out / RANKINGS_CSV, csv_text)
    atomic_write_text(out / RANKINGS_MD, md_text)
    atomic_write_json(out / METRICS, metrics)
    log.info("%s: %d sampled, %d unique, %d successful; wrote %d slots to %s", history, len(samples),
             len(ranking.architectures), len(ranking.ranked), config.k, out / TOP)
    return metrics
