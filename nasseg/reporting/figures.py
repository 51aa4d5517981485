"""The report's plots: search progress, training curves, per-class IoU, trade-offs, latency, samples.

What: each function takes plain values (from :mod:`nasseg.reporting.collect`) and returns
an encoded image (PNG bytes; the architecture drawings, :mod:`.architecture`, are SVG).
:func:`pareto_front` marks the points no other point beats on both axes.

How: matplotlib on an Agg canvas (``Figure`` + ``FigureCanvasAgg``), never pyplot, so no
display is needed and no global matplotlib state changes (as :mod:`nasseg.reports`).
Outputs are deterministic for the same inputs (no creation dates, fixed SVG ids), so an
unchanged run re-renders to the same bytes.
"""
from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["new_figure", "png_bytes", "svg_bytes", "slot_colour", "moving_average", "running_best",
           "pareto_front", "search_progress", "params_vs_reward", "strategy_comparison", "training_curves",
           "per_class_iou", "tradeoff", "latency_speedups", "sample_grid"]

#: Colours of the reference slots; searched slots take the tab10 colours in order.
REFERENCE_COLOURS: Mapping[str, str] = {"published": "#7b3fa0", "random": "#8c8c8c"}
_TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#17becf", "#bcbd22", "#e377c2", "#8c564b")
#: Colours of the dotted baseline lines, in order.
BASELINE_COLOURS = ("#b5381b", "#444444", "#2a6f97")
STATUS_COLOURS: Mapping[str, str] = {"ok": "#1f77b4", "early_stopped": "#17becf", "oom": "#d62728",
                                     "nan": "#ff7f0e", "error": "#7f7f7f"}


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` x ``height`` inches on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    """PNG bytes of ``fig`` (no software/date metadata)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def svg_bytes(fig: Figure) -> bytes:
    """SVG bytes of ``fig``: text as paths (no fonts needed), fixed ids, no date."""
    from matplotlib import rc_context

    buf = io.BytesIO()
    with rc_context({"svg.hashsalt": "nasseg-report", "svg.fonttype": "path"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()


def slot_colour(slot: str, searched: Sequence[str] = ()) -> str:
    """A fixed colour per slot: the references their own, searched slots tab10 by position."""
    if slot in REFERENCE_COLOURS:
        return REFERENCE_COLOURS[slot]
    index = list(searched).index(slot) if slot in searched else (int(slot) - 1 if slot.isdigit() else 0)
    return _TAB10[index % len(_TAB10)]


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` values (NaN values skipped)."""
    x = np.asarray(values, dtype=float)
    out = np.full(x.shape, np.nan)
    for i in range(len(x)):
        part = x[max(0, i - window + 1): i + 1]
        part = part[np.isfinite(part)]
        if part.size:
            out[i] = part.mean()
    return out


def running_best(values: Sequence[float]) -> np.ndarray:
    """Best (highest) value so far; NaN until the first finite one."""
    out, best = [], -math.inf
    for v in values:
        if v is not None and math.isfinite(v):
            best = max(best, v)
        out.append(best if best > -math.inf else math.nan)
    return np.asarray(out)


def pareto_front(points: Sequence[tuple[float, float]], *, higher_is_better: bool = True) -> list[int]:
    """Indices of the points on the Pareto front of (cost, quality): lower cost and better quality.

    A point is on the front when no other point has a cost no higher and a quality no
    worse, with one of them strictly better. Sorted by cost.
    """
    sign = 1.0 if higher_is_better else -1.0
    front = []
    for i, (c, q) in enumerate(points):
        dominated = any((c2 <= c and sign * q2 >= sign * q) and (c2 < c or sign * q2 > sign * q)
                        for j, (c2, q2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _grid(ax: Axes) -> None:
    ax.grid(True, color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)


def _integer_x(ax: Axes) -> None:
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def search_progress(ids: Sequence[int], rewards: Sequence[float], statuses: Sequence[str], *,
                    window: int, title: str = "") -> bytes:
    """Reward per sampled architecture (coloured by status), running best and moving average."""
    fig = new_figure(9.0, 3.6)
    ax = fig.add_subplot()
    x = np.asarray(ids, dtype=float)
    y = np.asarray(rewards, dtype=float)
    scored = np.asarray([s in ("ok", "early_stopped") for s in statuses])
    for status in dict.fromkeys(statuses):
        mask = np.asarray([s == status for s in statuses])
        ax.scatter(x[mask], np.nan_to_num(y[mask]), s=14, color=STATUS_COLOURS.get(status, "#444444"),
                   marker="o" if status in ("ok", "early_stopped") else "x", label=f"{status} ({int(mask.sum())})",
                   zorder=3)
    scored_y = np.where(scored, y, np.nan)
    ax.step(x, running_best(scored_y), where="post", color="#2ca02c", linewidth=1.6, label="best so far")
    ax.plot(x, moving_average(scored_y, window), color="#ff7f0e", linewidth=1.4,
            label=f"moving average ({window})")
    ax.set_xlabel("architecture (id, in sampling order)")
    _integer_x(ax)
    ax.set_ylabel("reward")
    if title:
        ax.set_title(title, fontsize=10)
    _grid(ax)
    ax.legend(fontsize=8, loc="lower right", ncol=2)
    fig.tight_layout()
    return png_bytes(fig)


def params_vs_reward(params: Sequence[float], rewards: Sequence[float], statuses: Sequence[str],
                     highlight: Sequence[int] = ()) -> bytes:
    """Reward against parameters of each scored architecture; ``highlight``: indices to ring."""
    fig = new_figure(6.4, 3.8)
    ax = fig.add_subplot()
    p = np.asarray(params, dtype=float) / 1e6
    r = np.asarray(rewards, dtype=float)
    for status in dict.fromkeys(statuses):
        mask = np.asarray([s == status for s in statuses])
        ax.scatter(p[mask], r[mask], s=16, color=STATUS_COLOURS.get(status, "#444444"), label=status, zorder=3)
    if len(highlight):
        idx = list(highlight)
        ax.scatter(p[idx], r[idx], s=90, facecolors="none", edgecolors="#d62728", linewidths=1.4,
                   label="ranked top", zorder=4)
    ax.set_xlabel("parameters (millions, search-time network)")
    ax.set_ylabel("reward")
    _grid(ax)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return png_bytes(fig)


def strategy_comparison(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]]) -> bytes:
    """Best reward so far against architectures evaluated, one line per strategy (or search)."""
    fig = new_figure(7.2, 3.6)
    ax = fig.add_subplot()
    for i, (name, (_, rewards)) in enumerate(curves.items()):
        best = running_best(rewards)
        ax.step(np.arange(1, len(best) + 1), best, where="post", color=_TAB10[i % len(_TAB10)], linewidth=1.6,
                label=name)
    ax.set_xlabel("architectures evaluated")
    _integer_x(ax)
    ax.set_ylabel("best reward so far")
    _grid(ax)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return png_bytes(fig)


def training_curves(curves: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]], *,
                    score: str, colours: Mapping[str, str],
                    baselines: Sequence[tuple[str, float]] = ()) -> bytes:
    """Two panels per dataset: the validation ``score`` and the training loss per epoch, per slot.

    ``curves[slot]`` maps ``"score"`` and ``"loss"`` to (epochs, values); ``baselines``
    (label, score) are drawn as dotted horizontal lines on the score panel.
    """
    fig = new_figure(10.0, 3.4)
    ax1, ax2 = fig.subplots(1, 2)
    for slot, c in curves.items():
        for ax, key in ((ax1, "score"), (ax2, "loss")):
            xs, ys = c.get(key, ((), ()))
            if len(xs):
                ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.4, color=colours[slot], label=slot)
    for (label, value), colour in zip(baselines, BASELINE_COLOURS):
        ax1.axhline(value, color=colour, linestyle=":", linewidth=1.4, label=label)
    ax1.set_ylabel(f"validation {score}" + (" (lower is better)" if score == "rmse" else ""))
    ax2.set_ylabel("training loss")
    for ax in (ax1, ax2):
        ax.set_xlabel("epoch")
        _integer_x(ax)
        _grid(ax)
        ax.legend(fontsize=7.5)
    fig.tight_layout()
    return png_bytes(fig)


def per_class_iou(class_names: Sequence[str], values: Mapping[str, Sequence[float | None]],
                  colours: Mapping[str, str]) -> bytes:
    """Grouped bars: IoU per class, one bar per slot (an undefined IoU: no bar, marked n/a)."""
    n, k = len(class_names), max(1, len(values))
    fig = new_figure(max(7.0, 0.1 + n * (0.14 * k + 0.18)), 3.6)
    ax = fig.add_subplot()
    width = 0.8 / k
    x = np.arange(n)
    for i, (slot, ious) in enumerate(values.items()):
        y = np.asarray([np.nan if v is None else v for v in ious], dtype=float)
        ax.bar(x + (i - (k - 1) / 2) * width, np.nan_to_num(y), width, color=colours[slot], label=slot)
    ax.set_xticks(x, labels=list(class_names), rotation=60, ha="right", fontsize=8)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_ylim(0, 1)
    ax.set_ylabel("IoU")
    _grid(ax)
    ax.legend(fontsize=8, ncol=min(k, 5))
    fig.tight_layout()
    return png_bytes(fig)


def tradeoff(panels: Sequence[tuple[str, Sequence[tuple[str, float, float, str]]]], *, quality: str,
             higher_is_better: bool) -> bytes:
    """Quality against cost, one panel per cost (latency, parameters), Pareto front marked.

    ``panels``: (x-axis label, [(point label, cost, quality, colour)]). The front of each
    panel is drawn as a step line through its points, which are ringed.
    """
    fig = new_figure(5.0 * len(panels) + 0.6, 3.9)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (xlabel, points) in zip(axes, panels):
        if not points:
            ax.text(0.5, 0.5, "no measurements", ha="center", va="center", transform=ax.transAxes)
            ax.set_xlabel(xlabel)
            continue
        front = pareto_front([(c, q) for _, c, q, _ in points], higher_is_better=higher_is_better)
        for i, (label, c, q, colour) in enumerate(points):
            ax.scatter([c], [q], s=46, color=colour, zorder=3, edgecolors="black" if i in front else "none",
                       linewidths=1.2)
            ax.annotate(label, (c, q), textcoords="offset points", xytext=(5, 4), fontsize=7.5)
        fx = [points[i][1] for i in front]
        fy = [points[i][2] for i in front]
        ax.step(fx, fy, where="post", color="#d62728", linewidth=1.1, linestyle="--", label="Pareto front",
                zorder=2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(quality + (" (lower is better)" if not higher_is_better else ""))
        _grid(ax)
        ax.legend(fontsize=8, loc="best")
        ax.margins(x=0.15, y=0.12)
    fig.tight_layout()
    return png_bytes(fig)


def latency_speedups(sizes: Sequence[str], backends: Sequence[str],
                     speedups: Mapping[tuple[str, str], float | None]) -> bytes:
    """Grouped bars: speed-up over eager per backend (geometric mean over models) at each size."""
    fig = new_figure(max(6.0, 1.2 + 1.3 * len(sizes) * max(1, len(backends)) * 0.35), 3.4)
    ax = fig.add_subplot()
    k = max(1, len(backends))
    width = 0.8 / k
    x = np.arange(len(sizes))
    for i, backend in enumerate(backends):
        y = [speedups.get((s, backend)) for s in sizes]
        bars = ax.bar(x + (i - (k - 1) / 2) * width, [v or 0.0 for v in y], width, label=backend,
                      color=_TAB10[i % len(_TAB10)])
        for bar, v in zip(bars, y):
            ax.text(bar.get_x() + bar.get_width() / 2, (v or 0.0) + 0.03, "n/a" if v is None else f"{v:.2f}x",
                    ha="center", va="bottom", fontsize=7)
    ax.axhline(1.0, color="#444444", linewidth=0.8, linestyle=":")
    ax.set_xticks(x, labels=[s.replace("x", " x ") for s in sizes])
    ax.set_xlabel("input size (height x width)")
    ax.set_ylabel("speed-up over eager")
    top = max([v for v in speedups.values() if v is not None] or [1.0])
    ax.set_ylim(0, top * 1.15)
    _grid(ax)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return png_bytes(fig)


def sample_grid(rows: Sequence[Sequence[np.ndarray]], column_titles: Sequence[str],
                row_titles: Sequence[str], legend: Sequence[tuple[str, Any]] = ()) -> bytes:
    """Images in a grid (rows of HxWx3 uint8), titled, with an optional colour legend below."""
    n_rows, n_cols = len(rows), len(column_titles)
    h, w = rows[0][0].shape[:2]
    cell_w = 3.2
    cell_h = cell_w * h / w
    legend_h = 0.3 + 0.22 * math.ceil(len(legend) / 6) if legend else 0.0
    fig = new_figure(cell_w * n_cols + 0.4, (cell_h + 0.3) * n_rows + 0.3 + legend_h)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for r, images in enumerate(rows):
        for c, image in enumerate(images):
            ax = axes[r][c]
            ax.imshow(image, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(column_titles[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(row_titles[r], fontsize=7.5)
    if legend:
        from matplotlib.patches import Patch
        handles = [Patch(facecolor=np.asarray(colour) / 255.0, edgecolor="#555555", label=name)
                   for name, colour in legend]
        fig.legend(handles=handles, loc="lower center", ncol=6, fontsize=7.5, frameon=False)
    fig.tight_layout(rect=(0, legend_h / fig.get_figheight(), 1, 1))
    return png_bytes(fig)
