"""Drawing an architecture graph (a space's nodes and edges) with matplotlib, no graphviz.

What: :func:`layout` places the nodes of a :class:`~nasseg.spaces.base.GraphPanel` in
columns by their longest path from an input (every edge points right), ordered within
a column by the barycentre of their neighbours to cut crossings; :func:`draw_graph`
draws each panel of an :class:`~nasseg.spaces.base.ArchitectureGraph` as boxes (coloured
by node kind) and arrows (two arrows between the same pair of nodes are bent apart and
keep their labels), and returns SVG bytes.

Why here and generic: a space says *what* its genotype's graph is
(:meth:`nasseg.spaces.base.SearchSpace.graph`); how to draw any such graph is no
space's business, so nothing here looks at a space's name. Graphviz would lay out
better, but its binaries are not a Python dependency; these graphs are small (tens of
nodes) and layered, which a simple layered layout draws readably.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

from ..spaces.base import ArchitectureGraph, GraphPanel
from .figures import new_figure, svg_bytes

__all__ = ["KIND_COLOURS", "Placement", "Layout", "layout", "draw_graph"]

#: Fill colour per node kind; unknown kinds are drawn as ``op``.
KIND_COLOURS: Mapping[str, str] = {"input": "#d6e6f5", "op": "#fde7c4", "merge": "#dcefd6",
                                   "output": "#f4d3d3", "unused": "#eeeeee"}

_FONT = 8.5                 # points
_CHAR_W = 0.068             # inches per character at that size (DejaVu Sans, average)
_LINE_H = 0.16              # inches per text line
_PAD_W, _PAD_H = 0.22, 0.16  # inches around the text
_COL_GAP, _ROW_GAP = 0.8, 0.2
_VIRTUAL_H = 0.06           # the height an edge's bend takes in a column


@dataclass(frozen=True)
class Placement:
    """A node's box: centre (x, y) and size, in inches."""
    x: float
    y: float
    width: float
    height: float

    @property
    def left(self) -> float:
        return self.x - self.width / 2

    @property
    def right(self) -> float:
        return self.x + self.width / 2


@dataclass(frozen=True)
class Layout:
    """Where a panel's boxes go, and the bends of each edge (one per column it crosses)."""
    boxes: Mapping[str, Placement]
    bends: tuple[tuple[tuple[float, float], ...], ...]   # per edge of the panel, in its order


def _box_size(label: str) -> tuple[float, float]:
    lines = label.split("\n")
    return (max(len(line) for line in lines) * _CHAR_W + _PAD_W, len(lines) * _LINE_H + _PAD_H)


def _layers(panel: GraphPanel) -> dict[str, int]:
    """Column of each node: the length of its longest path from a node without inputs."""
    ids = [n.id for n in panel.nodes]
    succs: dict[str, list[str]] = defaultdict(list)
    indegree = dict.fromkeys(ids, 0)
    for e in panel.edges:
        succs[e.source].append(e.target)
        indegree[e.target] += 1
    queue = [i for i in ids if indegree[i] == 0]
    layer = dict.fromkeys(queue, 0)
    seen = 0
    while queue:
        node = queue.pop(0)
        seen += 1
        for nxt in succs[node]:
            layer[nxt] = max(layer.get(nxt, 0), layer[node] + 1)
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                queue.append(nxt)
    if seen != len(ids):
        raise ValueError(f"graph panel {panel.title!r} has a cycle; an architecture graph must be acyclic")
    return layer


def layout(panel: GraphPanel) -> Layout:
    """A layered drawing of ``panel`` (Sugiyama's scheme, simplified).

    Columns by longest path from an input; an edge that skips columns gets a bend point
    in each column it crosses, which takes part in the ordering, so that it runs between
    the boxes instead of through them; rows ordered by the barycentre of the neighbours
    in a few down and up sweeps (the panel's node order first).
    """
    layer = _layers(panel)
    columns: dict[int, list[str]] = defaultdict(list)
    for node in panel.nodes:
        columns[layer[node.id]].append(node.id)
    neighbours: dict[str, list[str]] = defaultdict(list)
    chains: list[list[str]] = []
    for i, e in enumerate(panel.edges):
        chain = [e.source]
        for c in range(layer[e.source] + 1, layer[e.target]):
            virtual = f"~{i}.{c}"
            columns[c].append(virtual)
            layer[virtual] = c
            chain.append(virtual)
        chain.append(e.target)
        chains.append(chain)
        for a, b in zip(chain, chain[1:]):
            neighbours[a].append(b)
            neighbours[b].append(a)
    order = {n: i for col in columns.values() for i, n in enumerate(col)}

    def centred(n: str) -> float:
        return order[n] - (len(columns[layer[n]]) - 1) / 2

    def sweep(cols: list[int], towards: int) -> None:
        for c in cols:
            def key(n: str) -> tuple[float, int]:
                pos = [centred(m) for m in neighbours[n] if layer[m] == c - towards]
                return (sum(pos) / len(pos) if pos else centred(n), order[n])
            columns[c].sort(key=key)
            order.update({n: i for i, n in enumerate(columns[c])})

    keys = sorted(columns)
    for _ in range(4):
        sweep(keys[1:], 1)
        sweep(keys[-2::-1], -1)
    sizes = {n.id: _box_size(n.label) for n in panel.nodes}
    boxes: dict[str, Placement] = {}
    points: dict[str, tuple[float, float]] = {}
    x = 0.0
    for c in keys:
        col = columns[c]
        width = max([sizes[n][0] for n in col if n in sizes] or [0.3])
        heights = [sizes[n][1] if n in sizes else _VIRTUAL_H for n in col]
        total = sum(heights) + _ROW_GAP * (len(col) - 1)
        y = total / 2
        for n, h in zip(col, heights):
            centre = y - h / 2
            if n in sizes:
                boxes[n] = Placement(x + width / 2, centre, *sizes[n])
            else:
                points[n] = (x + width / 2, centre)
            y -= h + _ROW_GAP
        x += width + _COL_GAP
    return Layout(boxes, tuple(tuple(points[v] for v in chain[1:-1]) for chain in chains))


def _extent(boxes: Mapping[str, Placement]) -> tuple[float, float, float, float]:
    return (min(p.left for p in boxes.values()), max(p.right for p in boxes.values()),
            min(p.y - p.height / 2 for p in boxes.values()), max(p.y + p.height / 2 for p in boxes.values()))


def _ports(panel: GraphPanel, lay: Layout) -> tuple[list[float], list[float]]:
    """The y of each edge's start on its source's right side and end on its target's left side:
    the edges of one side spread over it in the order of where they come from or go to."""
    out: dict[str, list[tuple[float, int]]] = defaultdict(list)
    into: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for i, (e, bends) in enumerate(zip(panel.edges, lay.bends)):
        nxt = bends[0][1] if bends else lay.boxes[e.target].y
        prev = bends[-1][1] if bends else lay.boxes[e.source].y
        out[e.source].append((-nxt, i))
        into[e.target].append((-prev, i))
    starts, ends = [0.0] * len(panel.edges), [0.0] * len(panel.edges)
    for side, result in ((out, starts), (into, ends)):
        for node, items in side.items():
            box = lay.boxes[node]
            step = min(0.14, 0.8 * box.height / max(1, len(items)))
            for k, (_, i) in enumerate(sorted(items)):
                result[i] = box.y - (k - (len(items) - 1) / 2) * step
    return starts, ends


def _curve(points: list[tuple[float, float]]) -> tuple[list[tuple[float, float]], list[int]]:
    """A smooth path through ``points`` (left to right), horizontal at each point: cubic
    Bezier segments with their control points half-way across each gap."""
    from matplotlib.path import Path

    verts, codes = [points[0]], [Path.MOVETO]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        half = (x1 - x0) / 2
        verts += [(x0 + half, y0), (x1 - half, y1), (x1, y1)]
        codes += [Path.CURVE4] * 3
    return verts, codes


def draw_graph(graph: ArchitectureGraph, title: str = "") -> bytes:
    """SVG bytes of ``graph``: its panels stacked, each titled, one inch per data unit."""
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch
    from matplotlib.path import Path

    margin, title_h = 0.25, 0.35
    placed = [(panel, layout(panel)) for panel in graph.panels]
    extents = [_extent(lay.boxes) for _, lay in placed]
    heights = [(y1 - y0) + 2 * margin + title_h for _, _, y0, y1 in extents]
    width = max(x1 - x0 for x0, x1, _, _ in extents) + 2 * margin
    top = 0.35 if title else 0.0
    fig_h = sum(heights) + top
    fig = new_figure(width, fig_h)
    if title:
        fig.text(0.5, 1 - 0.18 / fig_h, title, ha="center", va="center", fontsize=10.5, weight="bold")
    y_top = fig_h - top
    for (panel, lay), (x0, x1, y0, y1), h in zip(placed, extents, heights):
        ax = fig.add_axes((0, (y_top - h) / fig_h, 1, h / fig_h))
        ax.set_xlim(x0 - margin, x0 - margin + width)
        ax.set_ylim(y0 - margin, y0 - margin + h)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.text(x0 - margin + 0.08, y0 - margin + h - title_h / 2, panel.title, fontsize=9.5, weight="bold",
                ha="left", va="center", color="#2f5d8a")
        y_top -= h
        kinds = {n.id: n.kind for n in panel.nodes}
        for node in panel.nodes:
            p = lay.boxes[node.id]
            ax.add_patch(FancyBboxPatch((p.left, p.y - p.height / 2), p.width, p.height,
                                        boxstyle="round,pad=0,rounding_size=0.06", linewidth=0.8,
                                        edgecolor="#555555", linestyle="--" if node.kind == "unused" else "-",
                                        facecolor=KIND_COLOURS.get(node.kind, KIND_COLOURS["op"]), zorder=2))
            ax.text(p.x, p.y, node.label, ha="center", va="center", fontsize=_FONT, zorder=3, linespacing=1.05)
        starts, ends = _ports(panel, lay)
        for e, bends, y_start, y_end in zip(panel.edges, lay.bends, starts, ends):
            src, dst = lay.boxes[e.source], lay.boxes[e.target]
            verts, codes = _curve([(src.right, y_start), *bends, (dst.left, y_end)])
            colour = "#9a9a9a" if kinds[e.source] == "unused" else "#3b4452"
            ax.add_patch(FancyArrowPatch(path=Path(verts, codes), arrowstyle="-|>", mutation_scale=8,
                                         linewidth=0.8, color=colour, zorder=1))
            if e.label:
                ax.text(dst.left - 0.13, y_end + 0.045, e.label, fontsize=6.5, ha="center", va="bottom",
                        color="#2f5d8a", zorder=4)
    return svg_bytes(fig)
