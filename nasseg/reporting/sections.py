"""The report's sections, built from a collected run: what a reader sees, in which order.

What: :func:`build_document` turns a :class:`~.collect.Run` and the extra inputs
(:class:`ReportInputs`: provenance, the comparison with git's HEAD, qualitative samples,
the constant-prediction and untrained-network baselines) into a
:class:`~.document.Document` of eight sections: the search, the ranking with a drawing
of every slot's architecture, full training per dataset, the accuracy / cost trade-off,
latency, qualitative results, provenance and what changed since the last commit.

Conventions: figures measured here and figures quoted from the papers are never mixed
in one row; a paper's row is styled ``published`` and says so in its first cell and its
caption. Claims in the text (which slot beats which, by how much:
:func:`against_baselines`) are computed from the numbers shown beside them, never
written in advance. Scores are shown as fractions with three or four decimals (mIoU
0.681 is the papers' 68.1); latency in milliseconds. Nothing here branches on a space's
name: a space draws its own genotypes (:meth:`~nasseg.spaces.base.SearchSpace.graph`)
and holds the papers' figures about its released architectures
(:attr:`~nasseg.spaces.base.SearchSpace.published_figures`).
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..spaces import get_space
from ..spaces.base import Genotype, PublishedFigure
from . import figures
from .architecture import draw_graph
from .baselines import ConstantBaseline, UntrainedBaseline
from .changes import Changes
from .collect import Evaluation, LatencyModel, Run, is_searched_slot
from .document import Block, Code, Document, Folded, Image, Note, Paragraph, Section, Subsection, Table
from .provenance import Provenance
from .qualitative import Samples

__all__ = ["ReportInputs", "build_document", "SECTION_IDS", "quality_keys", "higher_is_better",
           "backend_speedups", "margin", "against_baselines"]

#: The sections' anchors, in order.
SECTION_IDS = ("search", "ranking", "training", "tradeoff", "latency", "qualitative", "provenance", "changes")

_SEGMENTATION_KEYS = ("miou", "mean_acc", "fwiou", "pixel_acc")
_DEPTH_KEYS = ("rmse", "abs_rel", "log10", "delta1", "delta2", "delta3")
#: Backends that change the numbers computed (their speed is shown with their accuracy cost).
QUANTISED = ("int8", "int8_openvino")
REFERENCE = "eager"


@dataclass(frozen=True)
class ReportInputs:
    """What the report shows besides the run's own artefacts."""
    provenance: Provenance
    changes: Changes
    qualitative: Mapping[str, tuple[str, Samples]] = field(default_factory=dict)   # dataset -> (slot, samples)
    baselines: Mapping[str, ConstantBaseline] = field(default_factory=dict)        # dataset -> constant baseline
    untrained: Mapping[str, UntrainedBaseline] = field(default_factory=dict)       # dataset -> untrained network
    moving_average: int | None = None     # window; None: a twentieth of the architectures (3 to 100)
    tradeoff_size: str | None = None      # HxW; None: the largest size measured
    latency_skipped: str = ""             # why there is no latency file, when there is none


# -- formatting ---------------------------------------------------------------------------

def _f(x: float | None, digits: int = 4) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _n(x: int | float | None) -> str:
    return "—" if x is None else f"{int(x):,}"


def _gflops(x: float | None) -> str:
    return "—" if x is None else f"{x / 1e9:.2f}"


def _ms(x: float | None) -> str:
    return "—" if x is None else (f"{x:.1f}" if x >= 100 else f"{x:.2f}")


def _signed(x: float | None, digits: int = 4) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:+.{digits}f}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def quality_keys(task: str) -> tuple[str, ...]:
    return _DEPTH_KEYS if task == "depth" else _SEGMENTATION_KEYS


def higher_is_better(score: str) -> bool:
    """Whether a larger value of ``score`` is better (errors such as RMSE: no)."""
    return score not in ("rmse", "rmse_log", "abs_rel", "sq_rel", "log10")


def published_figures(kind: str, space: str) -> list[PublishedFigure]:
    """The papers' figures of one kind (``quality``, ``latency``) about ``space``'s architectures."""
    return [f for f in get_space(space).published_figures if f.kind == kind]


def _published_name(genotype: Genotype) -> str | None:
    space = get_space(genotype.space)
    return next((name for name, g in space.published.items() if g == genotype), None)


def _slot_title(run: Run, slot: str) -> str:
    s = run.slot(slot)
    if s.searched:
        return f"slot {slot} (searched, rank {slot})"
    name = _published_name(s.genotype)
    if name is not None:
        return f"slot {slot} ({run.space}/{name})"
    return f"slot {slot} ({s.source} {run.space} genotype)"


def _colours(run: Run) -> dict[str, str]:
    searched = [s for s in run.slots if is_searched_slot(s)]
    return {s: figures.slot_colour(s, searched) for s in run.slots}


def _score_of(run: Run, ds: str, slot: str) -> tuple[str, float | None]:
    """The slot's quality on ``ds``: its evaluation's score, else its training's best validation."""
    train = run.trainings[ds, slot]
    evaluation = run.evaluations.get((ds, slot))
    if evaluation is not None:
        return train.score, evaluation.scores.get(train.score)
    best = train.summary.get("best") or {}
    value = best.get(train.score)
    return train.score, float(value) if isinstance(value, (int, float)) else None


def margin(score: str, ours: float | None, other: float | None) -> float | None:
    """How much better ``ours`` is than ``other`` in ``score``'s units (negative: worse; None: undefined)."""
    if ours is None or other is None or not math.isfinite(ours) or not math.isfinite(other):
        return None
    return ours - other if higher_is_better(score) else other - ours


#: Margins smaller than this are ties: the scores are shown with four decimals.
TIE = 5e-5


def _versus(score: str, ours: float | None, other: float | None, what: str) -> str:
    """"beats <what> by m" / "does not beat <what>: it trails it by m" / "... they tie", in bold."""
    m = margin(score, ours, other)
    if m is None:
        return f"cannot be compared with {what} (a score is undefined)"
    if m >= TIE:
        return f"**beats** {what} **by {m:.4f}**"
    if m <= -TIE:
        return f"**does not beat** {what}: it trails it by {-m:.4f}"
    return f"**does not beat** {what}: they tie (to four decimals)"


def against_baselines(ds: str, score: str, best: tuple[str, float | None],
                      untrained: UntrainedBaseline | None, constant: ConstantBaseline | None,
                      references: Sequence[tuple[str, str, float | None]]) -> str:
    """The verdict on ``ds``: does the best searched slot (``best``: its title and score) beat the
    untrained network and the constant prediction, and how does it compare with the reference slots
    (``references``: their names, what they hold and their scores)? Every claim is computed from
    the numbers given."""
    title, value = best
    order = "higher" if higher_is_better(score) else "lower"
    text = (f"**The best searched slot on {ds} against the baselines.** {title[:1].upper() + title[1:]} scores "
            f"{score} **{_f(value)}** ({order} is better). ")
    if untrained is not None:
        u = untrained.scores.get(score)
        images = (f"{untrained.num_images} of the {untrained.total_images} images" if untrained.capped
                  else f"all {untrained.total_images} images")
        what = (f"the untrained network ({score} {_f(u)}: the same architecture, freshly initialised with the "
                f"training seed {untrained.seed}, on {images} of {untrained.split})")
        text += f"It {_versus(score, value, u, what)}. "
    else:
        text += "There is no untrained-network score to compare it with. "
    if constant is not None:
        c = constant.scores.get(score)
        text += f"It {_versus(score, value, c, f'the best constant prediction ({score} {_f(c)})')}. "
    if references:
        parts = [_versus(score, value, v, f"the {name} slot ({about}, {score} {_f(v)})").replace("**", "")
                 for name, about, v in references]
        text += "Against the references, trained the same way: it " + "; it ".join(parts) + "."
    return text.strip()


def best_searched_slot(run: Run, ds: str) -> str | None:
    """The searched slot that scored best on ``ds``."""
    scored = [(s, _score_of(run, ds, s)) for s in run.slots if is_searched_slot(s)]
    scored = [(s, name, v) for s, (name, v) in scored if v is not None]
    if not scored:
        return next((s for s in run.slots if is_searched_slot(s)), None)
    better = higher_is_better(scored[0][1])
    return max(scored, key=lambda t: t[2] if better else -t[2])[0]


# -- 1. search ----------------------------------------------------------------------------------

def search_section(run: Run, window: int | None) -> Section:
    search = run.search
    s = search.summary
    records = search.records
    if window is None:
        window = max(3, min(100, round(len(records) / 20)))
    window = max(1, min(window, len(records)))
    scored = [r for r in records if r.scored]
    best = max(scored, key=lambda r: r.reward) if scored else None
    strategies = " and ".join(search.strategies)
    text = (f"The {run.experiment} search sampled **{len(records)} architectures** of the {run.space} space "
            f"with the **{strategies}** strategy ({search.path}). ")
    if best is not None:
        text += f"Best reward **{best.reward:.4f}** (architecture {best.id}, {_n(best.params)} parameters). "
    if s.get("elapsed_s"):
        text += f"Search time {_duration(float(s['elapsed_s']))}"
        text += f", {float(s['archs_per_hour']):.0f} architectures per hour." if s.get("archs_per_hour") else "."
    blocks: list[Block] = [Paragraph(text)]
    counts = search.status_counts
    blocks.append(Table(("status", "architectures", "share"),
                        tuple((k, str(v), f"{100 * v / len(records):.0f}%") for k, v in counts.items()),
                        caption="Status counts: ok and early_stopped are scored; oom, nan and error are failures "
                                "(their reward is the failure reward).", numeric=(False, True, True)))
    blocks.append(Image(f"{run.experiment}-search-rewards", figures.search_progress(
        [r.id for r in records], [r.reward for r in records], [r.status for r in records], window=window),
        f"Reward of every sampled architecture in sampling order (crosses: failed architectures at their "
        f"failure reward), the best so far and a moving average over the last {window} architectures (failed "
        "ones left out)."))
    with_params = [r for r in scored if r.params is not None]
    if with_params:
        top_ids = {i for slot in run.ranking.slots for i in _slot_ids(run, slot.name)}
        blocks.append(Image(f"{run.experiment}-search-params", figures.params_vs_reward(
            [r.params for r in with_params], [r.reward for r in with_params], [r.status for r in with_params],
            [i for i, r in enumerate(with_params) if r.id in top_ids]),
            "Reward against parameters of each scored architecture (the search-time network); ringed: the "
            "architectures of the ranking's slots."))
    blocks += _strategy_blocks(run)
    return Section("search", "Architecture search", tuple(blocks))


def _canonical(genotype: Mapping[str, Any]) -> str:
    return json.dumps(genotype, sort_keys=True)


def _slot_ids(run: Run, slot: str) -> list[int]:
    g = _canonical(run.slot(slot).genotype.to_dict())
    return [r.id for r in run.search.records if _canonical(r.genotype) == g]


def _strategy_blocks(run: Run) -> list[Block]:
    groups: dict[str, list] = {}
    for search in run.searches:
        for strategy in search.strategies:
            key = strategy if strategy not in groups else f"{strategy} ({search.path.parent})"
            groups[key] = [r for r in search.records if r.strategy == strategy]
    if len(groups) < 2:
        (name,) = groups
        return [Paragraph(f"**Strategies compared:** one strategy ran ({name}). To compare strategies, "
                          "run another search (say `--set strategy.name=random` with its own `--out`) and "
                          "pass its folder to the report with `--compare-search DIR`.")]
    rows = []
    for name, records in groups.items():
        scored = [r.reward for r in records if r.scored]
        top = sorted(scored, reverse=True)[: max(1, len(scored) // 10)]
        rows.append((name, str(len(records)), str(len(scored)), _f(max(scored) if scored else None),
                     _f(sum(scored) / len(scored) if scored else None),
                     _f(sum(top) / len(top) if top else None)))
    return [Subsection("Strategies compared", (
        Table(("strategy", "evaluated", "scored", "best reward", "mean reward", "mean of the best 10%"),
              tuple(rows), numeric=(False, True, True, True, True, True),
              caption="Every search given to the report, by strategy."),
        Image(f"{run.experiment}-search-strategies", figures.strategy_comparison(
            {name: ([r.id for r in records], [r.reward if r.scored else math.nan for r in records])
             for name, records in groups.items()}),
            "Best reward so far against the number of architectures evaluated, per strategy."),
    ))]


# -- 2. ranking ----------------------------------------------------------------------------------

def ranking_section(run: Run, max_rows: int = 15) -> Section:
    m = run.ranking.metrics
    text = (f"{_n(m.get('num_sampled'))} sampled, {_n(m.get('num_unique'))} unique architectures, "
            f"{_n(m.get('num_unique_successful'))} of them with a successful evaluation; "
            f"{_n(m.get('num_sampled_more_than_once'))} sampled more than once. Architectures are ranked by "
            "their best reward (ties: fewer parameters, then sampled first).")
    slot_of = {json.dumps(s.genotype.to_dict(), sort_keys=True): s.name for s in run.ranking.slots}
    rows = []
    for r in run.ranking.rows[:max_rows]:
        key = json.dumps(r.genotype.to_dict(), sort_keys=True)
        rows.append(("—" if r.rank is None else str(r.rank), slot_of.get(key, ""), _f(r.best_reward),
                     _f(r.mean_reward), str(r.times_sampled), str(r.num_successful), _n(r.params),
                     _gflops(r.flops), " ".join(map(str, r.ids[:8])) + (" ..." if len(r.ids) > 8 else "")))
    more = len(run.ranking.rows) - len(rows)
    blocks: list[Block] = [Paragraph(text), Table(
        ("rank", "slot", "best reward", "mean reward", "sampled", "successful", "params", "GFLOPs", "ids"),
        tuple(rows), numeric=(True, False, True, True, True, True, True, True, False),
        caption=f"The ranking (rankings.csv){f', first {len(rows)} of {len(run.ranking.rows)}' if more else ''}. "
                "Parameters and FLOPs of the search-time network.")]
    slot_rows = []
    for s in run.ranking.slots:
        slot_rows.append((s.name, s.source, _slot_title(run, s.name).split("(", 1)[1].rstrip(")"),
                          _f(s.reward), _n(s.params), _gflops(s.flops), str(s.times_sampled)))
    blocks.append(Table(("slot", "source", "architecture", "search reward", "params", "GFLOPs", "times sampled"),
                        tuple(slot_rows), numeric=(False, False, False, True, True, True, True),
                        row_styles=tuple("" if s.searched else "reference" for s in run.ranking.slots),
                        caption="The slots trained in full: the search's top architectures and two references "
                                "(the published genotype and a random one of the space)."))
    space = get_space(run.space)
    for s in run.ranking.slots:
        inner: list[Block] = []
        try:
            graph = space.graph(s.genotype)
            inner.append(Image(f"{run.experiment}-arch-{s.name}", draw_graph(graph, _slot_title(run, s.name)),
                               f"The architecture of {_slot_title(run, s.name)}: each panel's boxes are "
                               "operations, inputs and merges; arrows are connections (a, b: a layer's "
                               "two inputs).", "svg"))
        except NotImplementedError as exc:
            inner.append(Note(f"{exc}; the genotype is listed below."))
        legacy = getattr(s.genotype, "to_legacy", None)
        if legacy is not None:
            inner.append(Paragraph(f"Original notation: `{json.dumps(legacy())}`"))
        inner.append(Code(json.dumps(s.genotype.to_dict(), indent=1), "json", summary="genotype (JSON)"))
        blocks.append(Subsection(_slot_title(run, s.name).capitalize(), tuple(inner)))
    return Section("ranking", "Ranking and the architectures trained", tuple(blocks))


# -- 3. training ----------------------------------------------------------------------------------

def _published_rows(space: str, dataset: str, split: str, keys: Sequence[str]) -> list[tuple[tuple[str, ...], str]]:
    rows = []
    for f in published_figures("quality", space):
        if f.dataset != dataset or f.split != split:
            continue
        cells = ["—"] * len(keys)
        if f.metric in keys:
            cells[keys.index(f.metric)] = _f(f.value, 3)
        rows.append(((f"paper: {space}/{f.arch}", f"published ({f.split})", "—", "—", "—", *cells, "—"), f.source))
    return rows


def training_section(run: Run, baselines: Mapping[str, ConstantBaseline],
                     untrained: Mapping[str, UntrainedBaseline] | None = None) -> Section:
    colours = _colours(run)
    blocks: list[Block] = [Paragraph(
        f"Every slot is trained in full on each dataset of the {run.experiment} experiment "
        f"({', '.join(run.datasets)}) with the same settings, then its best checkpoint is scored at full "
        "resolution by the evaluate stage. The published and random slots are the references: a searched "
        "architecture should beat the random one, and the published one shows what the papers' "
        "architecture reaches under the same (here: this preset's) training. Two baselines give the floor: "
        "the untrained network (the best searched slot's architecture before any training) and the best "
        "constant prediction; each dataset's verdict below is computed from the numbers in its table.")]
    untrained = untrained or {}
    for ds in run.datasets:
        blocks.append(_dataset_training(run, ds, colours, baselines.get(ds), untrained.get(ds)))
    return Section("training", "Full training", tuple(blocks))


def _dataset_training(run: Run, ds: str, colours: Mapping[str, str], baseline: ConstantBaseline | None,
                      untrained: UntrainedBaseline | None = None) -> Subsection:
    trainings = [run.trainings[ds, s] for s in run.slots]
    task, score = trainings[0].task, trainings[0].score
    evaluations = [run.evaluations.get((ds, s)) for s in run.slots]
    keys = quality_keys(task)
    present = [e for e in evaluations if e is not None]
    split = present[0].split if present else "validation"
    images = present[0].num_images if present else None
    blocks: list[Block] = [Paragraph(
        f"Task: {task}. Scored on the **{split}** split" + (f" ({images} images)" if images else "") +
        f"; the model kept is the best validation {score} ({'higher' if higher_is_better(score) else 'lower'} "
        "is better).")]
    best_slot = best_searched_slot(run, ds)
    if best_slot is not None:
        blocks.append(Paragraph(against_baselines(
            ds, score, (_slot_title(run, best_slot), _score_of(run, ds, best_slot)[1]), untrained, baseline,
            [(s, _slot_title(run, s).split("(", 1)[1].rstrip(")"), _score_of(run, ds, s)[1])
             for s in run.slots if not is_searched_slot(s)])))
    curves = {t.slot: {"score": t.column(f"val_{score}"), "loss": t.column("train_loss")} for t in trainings}
    lines: list[tuple[str, float]] = []
    dotted = []
    if untrained is not None and untrained.scores.get(score) is not None:
        lines.append((f"untrained (slot {untrained.slot}, seed {untrained.seed})", untrained.scores[score]))
        dotted.append(f"the untrained network (slot {untrained.slot}'s architecture, seed {untrained.seed}"
                      + (f", {untrained.num_images} images" if untrained.capped else "") + ")")
    if baseline is not None and baseline.scores.get(score) is not None:
        lines.append((f"constant prediction ({baseline.value})", baseline.scores[score]))
        dotted.append(f"the best constant prediction ({baseline.value})")
    blocks.append(Image(f"{run.experiment}-train-{ds}-curves", figures.training_curves(
        curves, score=score, colours=colours, baselines=lines),
        f"Validation {score} and training loss per epoch, per slot, on {ds}" +
        (f"; dotted: {' and '.join(dotted)}, scored on the {split} split, floors any trained model must beat."
         if dotted else ".")))
    rows, styles = [], []
    for t, e in zip(trainings, evaluations):
        best = t.summary.get("best") or {}
        scores = e.scores if e is not None else {k: best.get(k) for k in keys}
        rows.append((_slot_title(run, t.slot), "evaluation" if e is not None else "training (best val.)",
                     _n(t.params), str(t.summary.get("epochs", "—")),
                     f"{_f(best.get(score))} (ep. {best.get('epoch', '—')})",
                     *(_f(scores.get(k)) for k in keys),
                     f"{float(t.summary.get('train_seconds') or 0):.0f}"))
        styles.append("" if is_searched_slot(t.slot) else "reference")
    if untrained is not None:
        rows.append((f"untrained network: {_slot_title(run, untrained.slot)}, seed {untrained.seed}",
                     "baseline" + (f" ({untrained.num_images} of {untrained.total_images} images)"
                                   if untrained.capped else ""),
                     _n(run.trainings[ds, untrained.slot].params), "0", "—",
                     *(_f(untrained.scores.get(k)) for k in keys), "0"))
        styles.append("reference")
    if baseline is not None:
        rows.append((f"constant prediction: {baseline.value}", "baseline", "0", "0", "—",
                     *(_f(baseline.scores.get(k)) for k in keys), "0"))
        styles.append("reference")
    sources = set()
    for cells, source in _published_rows(run.space, ds, split, keys):
        rows.append(cells)
        styles.append("published")
        sources.add(source)
    blocks.append(Table(
        ("slot", "scores from", "params", "epochs", f"best val. {score}", *keys, "train s"), tuple(rows),
        numeric=(False, False, True, True, True, *([True] * len(keys)), True), row_styles=tuple(styles),
        caption=f"Final scores on {ds} {split}. Params: the network as it infers (no auxiliary heads). "
                + (f"The untrained network is slot {untrained.slot}'s architecture freshly initialised with the "
                   f"training seed ({untrained.seed}; every weight random, the encoder's too) and scored as the "
                   "evaluate stage scores" + (f", on {untrained.num_images} of the {untrained.total_images} images "
                                              "of the split, spread evenly over it (--baseline-images)"
                                              if untrained.capped else "") + ". " if untrained else "")
                + ("The constant prediction is chosen with the labels of the scored split. " if baseline else "")
                + (f"Published rows are the papers' figures for their architectures trained in full on the real "
                   f"data ({'; '.join(sorted(sources))}), not measured here." if sources else "")))
    if task == "segmentation" and present:
        names = list(present[0].class_names)
        ious = {e.slot: [e.per_class_iou.get(n) for n in names] for e in present}
        blocks.append(Image(f"{run.experiment}-train-{ds}-iou", figures.per_class_iou(names, ious, colours),
                            f"IoU per class on {ds} {split}, per slot (no bar: the class is in neither the "
                            "labels nor the predictions)."))
        blocks.append(Folded("IoU per class, as a table", (Table(
            ("class", *(e.slot for e in present)),
            tuple((n, *(_f(e.per_class_iou.get(n), 3) for e in present)) for n in names),
            numeric=(False, *([True] * len(present))), caption="IoU per class (— : undefined)."),)))
        best = best_searched_slot(run, ds)
        shown = [e for e in present if e.slot == best] or present[:1]
        blocks += [_confusion_image(run, ds, e) for e in shown]
        others = [e for e in present if e not in shown]
        if others:
            blocks.append(Folded(f"Confusion matrices of the other slots ({', '.join(e.slot for e in others)})",
                                 tuple(_confusion_image(run, ds, e) for e in others)))
    elif task == "depth":
        blocks.append(Paragraph("Depth has no classes: no per-class IoU or confusion matrix."))
    return Subsection(ds, tuple(blocks))


def _confusion_image(run: Run, ds: str, e: Evaluation) -> Image:
    caption = (f"Confusion matrix of {_slot_title(run, e.slot)} on {ds} {e.split}, row-normalised "
               "(rows: true class, columns: predicted class).")
    name = f"{run.experiment}-train-{ds}-confusion-{e.slot}"
    if e.confusion_png is not None:
        return Image(name, e.confusion_png.read_bytes(), caption, width=720)
    from ..reports import plot_confusion
    return Image(name, plot_confusion(e.confusion, e.class_names, title=f"{e.slot}: {ds} {e.split}"),
                 caption + " Redrawn from metrics.json.", width=720)


# -- 4. trade-off ----------------------------------------------------------------------------------

def _size_key(size: str) -> int:
    h, _, w = size.partition("x")
    return int(h) * int(w)


def tradeoff_section(run: Run, size: str | None, skipped: str) -> Section:
    colours = _colours(run)
    latency = run.latency
    if latency is not None and latency.sizes:
        size = size if size is not None else max(latency.sizes, key=_size_key)
        if size not in latency.sizes:
            raise ValueError(f"--tradeoff-size {size}: not among the measured sizes {', '.join(latency.sizes)}")
    blocks: list[Block] = [Paragraph(
        "Quality against cost for every trained architecture, per dataset: against measured latency "
        + (f"(PyTorch eager, batch 1, {size.replace('x', ' x ')} input, the median of the benchmark's repeats) "
           if latency is not None else "")
        + "and against parameters. Ringed points and the dashed line: the Pareto front, the architectures "
          "no other one beats on both cost and quality.")]
    if latency is None:
        blocks.append(Note(f"No latency measurements: {skipped}. Only the parameter trade-off is shown."))
    for ds in run.datasets:
        score = run.trainings[ds, run.slots[0]].score
        lat_points, par_points, rows = [], [], []
        for slot in run.slots:
            _, q = _score_of(run, ds, slot)
            params = run.trainings[ds, slot].params
            ms = None
            if latency is not None and size is not None:
                m = latency.model(ds, slot)
                r = m.result(size, REFERENCE) if m is not None else None
                ms = r.median_ms if r is not None else None
            if q is None:
                continue
            if ms is not None:
                lat_points.append((slot, ms, q, colours[slot]))
            if params is not None:
                par_points.append((slot, params / 1e6, q, colours[slot]))
            rows.append([slot, _f(q), _ms(ms), _n(params)])
        better = higher_is_better(score)
        for points, col in ((lat_points, 2), (par_points, 3)):
            front = {points[i][0] for i in figures.pareto_front([(c, q) for _, c, q, _ in points],
                                                                higher_is_better=better)}
            for row in rows:
                row.append("yes" if row[0] in front else "")
        panels = [(f"latency (ms, eager, {size})", lat_points)] if latency is not None else []
        panels.append(("parameters (millions)", par_points))
        blocks.append(Subsection(ds, (
            Image(f"{run.experiment}-tradeoff-{ds}", figures.tradeoff(panels, quality=score,
                                                                        higher_is_better=better),
                  f"{ds}: {score} against latency and parameters, Pareto front marked."),
            Table(("slot", score, "latency (ms)", "params", "front (latency)", "front (params)"),
                  tuple(tuple(r) for r in rows), numeric=(False, True, True, True, False, False),
                  row_styles=tuple("" if is_searched_slot(r[0]) else "reference" for r in rows)),
        )))
    return Section("tradeoff", "Trade-off: quality against latency and size", tuple(blocks))


# -- 5. latency ------------------------------------------------------------------------------------

def _speedup(m: LatencyModel, size: str, backend: str) -> float | None:
    r, ref = m.result(size, backend), m.result(size, REFERENCE)
    if r is None or not r.ok:
        return None
    if r.speedup_vs_eager is not None:
        return r.speedup_vs_eager
    if ref is not None and ref.ok and ref.median_ms and r.median_ms:
        return ref.median_ms / r.median_ms
    return None


def backend_speedups(run: Run) -> dict[tuple[str, str], tuple[float | None, int, float | None, float | None]]:
    """Per (size, backend): geometric mean of the speed-ups over eager across the models where it ran,
    the number of those models, and the smallest and largest speed-up."""
    assert run.latency is not None
    out = {}
    for size in run.latency.sizes:
        for backend in run.latency.backends:
            values = [v for m in run.latency.models if (v := _speedup(m, size, backend)) is not None and v > 0]
            geo = math.exp(sum(math.log(v) for v in values) / len(values)) if values else None
            out[size, backend] = (geo, len(values), min(values, default=None), max(values, default=None))
    return out


def _cell(m: LatencyModel, size: str, backend: str) -> str:
    r = m.result(size, backend)
    if r is None:
        return "not run"
    if r.ok:
        s = _speedup(m, size, backend)
        return _ms(r.median_ms) + ("" if backend == REFERENCE or s is None else f" ({s:.2f}x)")
    if r.status == "mismatch" and r.max_abs_diff is not None:
        return f"mismatch (max diff {r.max_abs_diff:.2g})"
    return r.status


def latency_section(run: Run, skipped: str) -> Section:
    latency = run.latency
    if latency is None:
        return Section("latency", "Latency", (Note(f"No latency measurements: {skipped}."),))
    env = latency.environment
    st = latency.settings
    env_text = ", ".join(f"{k} {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in env.items())
    blocks: list[Block] = [Paragraph(
        f"Measured by the benchmark stage ({latency.path}) in eval mode, batch 1, BatchNorm folded, auxiliary "
        f"heads removed; each figure is the median over {st.get('repeats', '?')} repeats of at least "
        f"{st.get('min_seconds', '?')} s of timed runs each, after {st.get('warmup', '?')} warm-up runs, "
        f"{st.get('threads', '?')} threads. Every backend's outputs were checked against eager before it was "
        f"timed. Environment: {env_text}.")]
    speedups = backend_speedups(run)
    verdict = []
    winners: dict[str, tuple[str, float]] = {}
    for size in latency.sizes:
        fp32 = [(b, speedups[size, b]) for b in latency.backends if b != REFERENCE and b not in QUANTISED
                and speedups[size, b][0] is not None]
        line = f"At **{size.replace('x', ' x ')}**: "
        if fp32:
            b, (geo, n, lo, hi) = max(fp32, key=lambda t: t[1][0])
            winners[size] = (b, geo)
            line += (f"the fastest fp32 backend is **{b}**, **{geo:.2f}x** faster than eager (geometric mean over "
                     f"{n} model{'s' if n != 1 else ''}" + (f", {lo:.2f}x to {hi:.2f}x" if n > 1 else "") + ")")
        else:
            line += "no fp32 backend besides eager ran"
        for q in QUANTISED:
            geo_q = speedups.get((size, q), (None,))[0]
            if geo_q is not None:
                deltas = [m.int8.delta for m in latency.models if m.int8 is not None and m.int8.delta is not None]
                line += (f"; {q}: {geo_q:.2f}x" + (f", at a mean mIoU change of {_signed(sum(deltas) / len(deltas))}"
                                                   if deltas else ""))
        verdict.append(line + ".")
    names = {b for b, _ in winners.values()}
    if len(names) == 1 and len(winners) == len(latency.sizes):
        (name,) = names
        gains = [g for _, g in winners.values()]
        head = (f"**{name}** won at every size: {min(gains):.2f}x" + (f" to {max(gains):.2f}x" if len(gains) > 1 else "")
                + " the speed of PyTorch eager (fp32). ")
    elif winners:
        head = "The fastest fp32 backend depends on the size. "
    else:
        head = "No backend besides eager ran. "
    blocks.append(Paragraph("**Which backend won.** " + head + " ".join(verdict)))
    blocks.append(Image(f"{run.experiment}-latency-speedups", figures.latency_speedups(
        latency.sizes, [b for b in latency.backends if b != REFERENCE],
        {k: v[0] for k, v in speedups.items()}),
        "Speed-up over PyTorch eager per backend and input size (geometric mean over the models; "
        "n/a: the backend ran for no model at that size)."))
    for size in latency.sizes:
        rows = []
        for m in latency.models:
            rows.append((m.label, _n(m.params_without_aux if m.params_without_aux is not None else m.params),
                         _gflops(m.flops.get(size)), *(_cell(m, size, b) for b in latency.backends)))
        failures = [f"{m.label} {r.backend}: {(r.reason or 'no reason given').strip()[:300]}"
                    for m in latency.models for r in m.results if r.size == size and not r.ok]
        blocks.append(Subsection(f"{size.replace('x', ' x ')} input", (Table(
            ("model (dataset/slot)", "params", "GFLOPs", *(f"{b} (ms)" for b in latency.backends)), tuple(rows),
            numeric=(False, True, True, *([True] * len(latency.backends))),
            row_styles=tuple("" if is_searched_slot(m.slot) else "reference" for m in latency.models),
            caption="Median milliseconds per image; in brackets the speed-up over eager. failed: the backend "
                    "could not run the model; mismatch: its outputs differ from eager's (not timed)."),
            *([Paragraph("Not timed: " + "; ".join(f"`{f}`" if "`" not in f else f for f in failures) + ".")]
              if failures else []))))
    int8 = [m for m in latency.models if m.int8 is not None]
    if int8:
        blocks.append(Subsection("int8 accuracy", (Table(
            ("model", "split", "images", "mIoU fp32", "mIoU int8", "change"),
            tuple((m.label, m.int8.split, _n(m.int8.num_images), _f(m.int8.miou_fp32), _f(m.int8.miou_int8),
                   _signed(m.int8.delta)) for m in int8 if m.int8 is not None),
            numeric=(False, False, True, True, True, True),
            caption="The int8 model's mIoU beside the fp32 model's on the same validation images."),)))
    blocks.append(_published_latency(run))
    return Section("latency", "Latency", tuple(blocks))


def _published_latency(run: Run) -> Subsection:
    assert run.latency is not None
    paper = published_figures("latency", run.space)
    if not paper:
        return Subsection("Published latency", (Paragraph(f"The papers publish no latency for the {run.space} "
                                                          "space's architectures."),))
    env = run.latency.environment
    device = env.get("gpu") or env.get("cpu") or env.get("device", "?")
    rows, styles = [], []
    ours_slot = next((s for s in run.ranking.slots if _published_name(s.genotype) is not None), None)
    ours_name = _published_name(ours_slot.genotype) if ours_slot is not None else None
    for f in paper:
        size = f"{f.size[0]}x{f.size[1]}" if f.size else "?"
        rows.append((f"paper: {run.space}/{f.arch}", size, f.device,
                     f"{f.value:.2f} ± {f.std:.2f}" if f.std is not None else f"{f.value:.2f}", "eager (PyTorch)",
                     ", ".join(x for x in (f"{f.params:,} params" if f.params else "",
                                           f"{f.num_classes} classes" if f.num_classes else "") if x) or "—"))
        styles.append("published")
        if ours_slot is None or f.arch != ours_name:
            continue
        for m in run.latency.models:
            if m.slot != ours_slot.name:
                continue
            ref = m.result(size, REFERENCE)
            best = min((r for r in m.results if r.size == size and r.ok and r.backend not in QUANTISED),
                       key=lambda r: r.median_ms or math.inf, default=None)
            if ref is None:
                rows.append((f"ours: {m.label} ({run.space}/{f.arch})", size, str(device), "not measured", "—",
                             _n(m.params_without_aux)))
                styles.append("")
                continue
            for r in [ref] + ([best] if best is not None and best is not ref else []):
                rows.append((f"ours: {m.label} ({run.space}/{f.arch})", size, str(device),
                             _ms(r.median_ms) if r.ok else r.status, r.backend,
                             f"{_n(m.params_without_aux)} params"))
                styles.append("")
    return Subsection("Published latency, beside ours", (
        Table(("architecture", "size (H x W)", "device", "latency (ms)", "backend", "network"), tuple(rows),
              numeric=(False, False, False, True, False, False), row_styles=tuple(styles),
              caption=f"Italic rows: published figures, {paper[0].source}; one GTX 1080Ti GPU, eval mode, their "
                      "network (decoder width 64). Plain rows: measured here, on this machine, for the published "
                      "architecture as this run trained it (this preset's decoder width, hence its parameter "
                      "count). Different hardware: compare ratios within one source, not absolute figures "
                      "across sources."),))


# -- 6. qualitative ----------------------------------------------------------------------------------

def qualitative_section(run: Run, qualitative: Mapping[str, tuple[str, Samples]]) -> Section:
    blocks: list[Block] = [Paragraph(
        "A few images of each dataset's scored split (spread evenly over it), their ground truth and the "
        "prediction of the best searched slot, at full resolution, in the dataset's palette (black: ignored "
        "or invalid pixels).")]
    for ds in run.datasets:
        if ds not in qualitative:
            blocks.append(Note(f"{ds}: no qualitative results (--qualitative 0)."))
            continue
        slot, samples = qualitative[ds]
        _, value = _score_of(run, ds, slot)
        score = run.trainings[ds, slot].score
        legend = list(samples.legend)
        caption = (f"{ds} {samples.split}: image, ground truth and the prediction of {_slot_title(run, slot)} "
                   f"({score} {_f(value)}).")
        if samples.depth_range is not None:
            caption += (f" Depth colours from {samples.depth_range[0]:.2f} m (bright) to "
                        f"{samples.depth_range[1]:.2f} m (dark), the range of the ground truth shown, the same scale "
                        "for truth and prediction (predictions beyond it clipped; black: no measurement).")
        image = figures.sample_grid([(s.image, s.truth, s.prediction) for s in samples.samples],
                                    ("image", "ground truth", f"prediction (slot {slot})"),
                                    [s.name for s in samples.samples], legend)
        blocks.append(Subsection(ds, (Image(f"{run.experiment}-samples-{ds}", image, caption),)))
    return Section("qualitative", "Qualitative results", tuple(blocks))


# -- 7. provenance ------------------------------------------------------------------------------------

def provenance_section(p: Provenance) -> Section:
    g = p.git
    if g.revision is not None:
        revision = f"{g.revision}" + (" (modified: tracked files differ from it)" if g.dirty else " (clean)")
        commit = f"{g.subject} ({g.date})"
    else:
        revision, commit = f"none: {g.error}", "—"
    m = p.machine
    rows = [("generated", p.generated), ("git revision", revision), ("commit", commit),
            ("parameters file", f"{p.params_file} (sha256 {p.params_sha256[:16]}...)"),
            ("preset", p.preset or "—"), ("parameters hash", f"{p.sections_hash} (this experiment's sections, "
                                                             "at the preset, below)"),
            ("processor", str(m.get("cpu", "?"))), ("vector extensions", ", ".join(m.get("vector", [])) or "—"),
            ("torch threads", str(m.get("threads", "?"))), ("python", p.python), ("platform", p.platform),
            *((f"{name}", version) for name, version in p.versions.items())]
    return Section("provenance", "Provenance", (
        Table(("what", "value"), tuple(rows), caption="Where these numbers come from."),
        Code(yaml.safe_dump(dict(p.sections), sort_keys=False, width=100), "yaml",
             summary=f"this experiment's parameters at the preset (hash {p.sections_hash})"),
    ))


# -- 8. changes ---------------------------------------------------------------------------------------

def _value(x: Any) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.6g}"
    return json.dumps(x) if isinstance(x, (list, dict)) else str(x)


def changes_section(c: Changes, max_rows: int = 80) -> Section:
    if c.baseline is None:
        return Section("changes", "What changed since the last commit", (
            Note(f"{c.reason}. Commit a run (its metrics under reports/ and params.yaml) to compare the next "
                 "one with it."),))
    g = c.baseline
    blocks: list[Block] = [Paragraph(
        f"The workspace against git's HEAD, **{g.short}** ({g.subject}, {g.date}): metrics that changed "
        f"(the equivalent of `dvc metrics diff`) in {len(c.files_compared)} committed metrics files, and "
        "this experiment's parameters that changed (`dvc params diff`).")]
    if c.reason:
        blocks.append(Note(c.reason))
    if c.files_new:
        blocks.append(Paragraph(f"New since HEAD (no baseline): {', '.join(f'`{f}`' for f in c.files_new[:20])}"
                                + (f" and {len(c.files_new) - 20} more" if len(c.files_new) > 20 else "") + "."))
    if c.metrics:
        shown = sorted(c.metrics, key=lambda ch: -abs(ch.delta or 0.0))[:max_rows] \
            if len(c.metrics) > max_rows else list(c.metrics)
        blocks.append(Table(("file", "metric", "HEAD", "workspace", "change"),
                            tuple((ch.file, ch.key, _value(ch.old), _value(ch.new), _signed(ch.delta, 4))
                                  for ch in shown),
                            numeric=(False, False, True, True, True),
                            caption=f"Metrics that differ from HEAD ({len(c.metrics)}"
                                    + (f"; the {max_rows} largest changes shown" if len(c.metrics) > max_rows
                                       else "") + ")."))
    else:
        blocks.append(Paragraph("No metric differs from HEAD."))
    if c.params:
        blocks.append(Table(("parameter", "HEAD", "workspace"),
                            tuple((ch.key, _value(ch.old), _value(ch.new)) for ch in c.params[:max_rows]),
                            caption=f"Parameters that differ from HEAD ({len(c.params)})."))
    else:
        blocks.append(Paragraph("No parameter of this experiment differs from HEAD."))
    return Section("changes", "What changed since the last commit", tuple(blocks))


# -- the document -----------------------------------------------------------------------------------------

def build_document(run: Run, inputs: ReportInputs) -> Document:
    """The whole report of ``run``."""
    p = inputs.provenance
    rev = p.git.short + (" (modified)" if p.git.dirty else "") if p.git.short else "no git revision"
    subtitle = (f"Generated {p.generated} from revision `{rev}`, preset `{p.preset}`, parameters hash "
                f"`{p.sections_hash}`.")
    sections = (
        search_section(run, inputs.moving_average),
        ranking_section(run),
        training_section(run, inputs.baselines, inputs.untrained),
        tradeoff_section(run, inputs.tradeoff_size, inputs.latency_skipped),
        latency_section(run, inputs.latency_skipped),
        qualitative_section(run, inputs.qualitative),
        provenance_section(inputs.provenance),
        changes_section(inputs.changes),
    )
    assert tuple(s.id for s in sections) == SECTION_IDS
    return Document(f"{run.experiment.upper()} experiment: search, training and speed ({run.space} space)",
                    subtitle, sections)

