"""The CVPR 2019 search space: one contextual cell, and the connections of the decoder blocks.

Nekrasov et al., "Fast Neural Architecture Search of Compact Semantic Segmentation
Models via Auxiliary Cells" (CVPR 2019); see ``search-spaces.md`` ("CVPR 2019
space", "The controllers' decisions"). The decoder itself is
:class:`nasseg.models.cvpr_decoder.CVPRDecoder`.

A genotype is written with op names; the original's nested lists of indices
("legacy" notation, ``[[first_op, [a, b, op_a, op_b], ...], [[i, j], ...]]``)
convert both ways. The flat action (20 integers) is the flattened legacy
notation: ``[0, first_op]``, then ``[a, b, op_a, op_b]`` per cell layer, then the
connection pairs. The controller (the original's ``MicroController``) takes its
decisions in another order: the connections first, then the cell.

Where the original's text and code differ we follow the code: the controller
samples the first cell layer's inputs from ``range(1)``, but the published arch1
reads node 1 there, so a genotype may read any node that exists (as the
original's builder does).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

from .base import (ArchitectureGraph, Decision, Genotype, GenotypeError, GraphEdge, GraphNode, GraphPanel,
                   PublishedFigure, SearchSpace, check, check_index, check_op, pool_panel)

if TYPE_CHECKING:
    from torch import nn

__all__ = ["CVPR_OPS", "CVPR_NUM_POOLS", "CVPR_CELL_LAYERS", "CVPR_DECODER_BLOCKS", "ENCODER_STAGES",
           "CellLayer", "Connection", "CVPRGenotype", "CVPRSpace", "PUBLISHED", "PUBLISHED_FIGURES", "SPACE",
           "cell_loose_ends",
]

# Ops in the index order of the original notation.
CVPR_OPS: tuple[str, ...] = (
    "conv1x1", "conv3x3", "sep_conv_3x3", "sep_conv_5x5", "global_average_pool",
    "conv3x3_dil3", "conv3x3_dil12", "sep_conv_3x3_dil3", "sep_conv_5x5_dil6",
    "skip_connect", "none",
)
ENCODER_STAGES = (1, 2, 4, 6)          # MobileNet-v2 outputs at strides 4, 8, 16, 32
CVPR_NUM_POOLS = len(ENCODER_STAGES)   # encoder outputs feeding the decoder
CVPR_CELL_LAYERS = 3                   # layers after the cell's first op
CVPR_DECODER_BLOCKS = 3


@dataclass(frozen=True)
class CellLayer:
    """One cell layer: op_a(node[input_a]) + op_b(node[input_b])."""
    input_a: int
    input_b: int
    op_a: str
    op_b: str


@dataclass(frozen=True)
class Connection:
    """One decoder block: merges pool[input_a] and pool[input_b]."""
    input_a: int
    input_b: int


@dataclass(frozen=True)
class CVPRGenotype(Genotype):
    """Auxiliary-cell decoder: the contextual cell and the decoder connections."""
    first_op: str
    layers: tuple[CellLayer, ...]
    connections: tuple[Connection, ...]
    num_pools: int = CVPR_NUM_POOLS

    space: ClassVar[str] = "cvpr"

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "connections", tuple(self.connections))
        check_op(self.first_op, CVPR_OPS, "cvpr first_op")
        for l, layer in enumerate(self.layers, start=1):
            # Nodes that exist before layer l: x, the first op, 3 per earlier layer.
            # The controller only samples from [0, 1 + 3(l-1)), but the published
            # arch1 reads node 1 in its first layer, so the builder accepts any
            # existing node, as the original does.
            upper = 2 + 3 * (l - 1)
            check_index(layer.input_a, upper, f"cvpr layers[{l - 1}].input_a")
            check_index(layer.input_b, upper, f"cvpr layers[{l - 1}].input_b")
            check_op(layer.op_a, CVPR_OPS, f"cvpr layers[{l - 1}].op_a")
            check_op(layer.op_b, CVPR_OPS, f"cvpr layers[{l - 1}].op_b")
        check(len(self.connections) > 0, "cvpr connections: at least one decoder block needed")
        for b, conn in enumerate(self.connections):
            check_index(conn.input_a, self.num_pools + b, f"cvpr connections[{b}].input_a")
            check_index(conn.input_b, self.num_pools + b, f"cvpr connections[{b}].input_b")

    def to_legacy(self) -> list:
        """The original's nested-list notation (indices into :data:`CVPR_OPS`)."""
        cell: list = [CVPR_OPS.index(self.first_op)]
        cell += [[l.input_a, l.input_b, CVPR_OPS.index(l.op_a), CVPR_OPS.index(l.op_b)]
                 for l in self.layers]
        return [cell, [[c.input_a, c.input_b] for c in self.connections]]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CVPRGenotype:
        return cls(first_op=d["first_op"],
                   layers=tuple(CellLayer(**x) for x in d["layers"]),
                   connections=tuple(Connection(**x) for x in d["connections"]),
                   num_pools=d.get("num_pools", CVPR_NUM_POOLS))


# The published architectures (released with agg_size 64, repeats 2, aux cell off).
PUBLISHED: Mapping[str, CVPRGenotype] = MappingProxyType({
    # legacy [[8, [0, 0, 5, 2], [0, 2, 8, 8], [0, 5, 1, 4]], [[3, 3], [3, 2], [3, 0]]]
    "arch0": CVPRGenotype(
        first_op="sep_conv_5x5_dil6",
        layers=(CellLayer(0, 0, "conv3x3_dil3", "sep_conv_3x3"),
                CellLayer(0, 2, "sep_conv_5x5_dil6", "sep_conv_5x5_dil6"),
                CellLayer(0, 5, "conv3x3", "global_average_pool")),
        connections=(Connection(3, 3), Connection(3, 2), Connection(3, 0))),
    # legacy [[2, [1, 0, 3, 6], [0, 1, 2, 8], [2, 0, 6, 1]], [[2, 3], [3, 1], [4, 4]]]
    "arch1": CVPRGenotype(
        first_op="sep_conv_3x3",
        layers=(CellLayer(1, 0, "sep_conv_5x5", "conv3x3_dil12"),
                CellLayer(0, 1, "sep_conv_3x3", "sep_conv_5x5_dil6"),
                CellLayer(2, 0, "conv3x3_dil12", "conv3x3")),
        connections=(Connection(2, 3), Connection(3, 1), Connection(4, 4))),
    # legacy [[5, [0, 0, 4, 1], [3, 2, 0, 1], [5, 6, 5, 0]], [[1, 3], [4, 3], [2, 2]]]
    "arch2": CVPRGenotype(
        first_op="conv3x3_dil3",
        layers=(CellLayer(0, 0, "global_average_pool", "conv3x3"),
                CellLayer(3, 2, "conv1x1", "conv3x3"),
                CellLayer(5, 6, "conv3x3_dil3", "conv1x1")),
        connections=(Connection(1, 3), Connection(4, 3), Connection(2, 2))),
})


_PAPER = "Nekrasov et al., CVPR 2019 (arXiv 1810.10804)"

#: What the paper publishes about the released models (search-spaces.md, "Published quality"):
#: PASCAL VOC val mIoU (a fraction) and NYUD-v2 test depth RMSE (metres). It publishes no latency.
PUBLISHED_FIGURES: tuple[PublishedFigure, ...] = (
    *(PublishedFigure("quality", arch, miou, _PAPER, dataset="voc", split="val", metric="miou")
      for arch, miou in (("arch0", 0.780), ("arch1", 0.771), ("arch2", 0.773))),
    *(PublishedFigure("quality", arch, rmse, _PAPER, dataset="nyud", split="test", metric="rmse")
      for arch, rmse in (("arch0", 0.523), ("arch1", 0.526), ("arch2", 0.525))),
)


def cell_loose_ends(genotype: CVPRGenotype) -> list[int]:
    """The cell nodes whose sum is the cell's output: the first op (node 1) and each layer's
    sum node (3l + 1), less those a layer reads (as :class:`~nasseg.models.cvpr_decoder.ContextualCell`)."""
    loose = [1]
    for l, layer in enumerate(genotype.layers, start=1):
        loose = [n for n in loose if n not in (layer.input_a, layer.input_b)]
        loose.append(3 * l + 1)
    return loose


def _cell_panel(genotype: CVPRGenotype) -> GraphPanel:
    """The contextual cell: node 0 its input, 1 the first op, then per layer l the two ops
    (3l - 1, 3l) and their sum (3l + 1); the output sums the loose ends."""
    nodes = [GraphNode("n0", "cell input", "input"), GraphNode("n1", genotype.first_op, "op")]
    edges = [GraphEdge("n0", "n1")]
    for l, layer in enumerate(genotype.layers, start=1):
        a, b, total = 3 * l - 1, 3 * l, 3 * l + 1
        nodes += [GraphNode(f"n{a}", layer.op_a, "op"), GraphNode(f"n{b}", layer.op_b, "op"),
                  GraphNode(f"n{total}", f"layer {l} sum", "merge")]
        edges += [GraphEdge(f"n{layer.input_a}", f"n{a}"), GraphEdge(f"n{layer.input_b}", f"n{b}"),
                  GraphEdge(f"n{a}", f"n{total}"), GraphEdge(f"n{b}", f"n{total}")]
    nodes.append(GraphNode("out", "cell output (sum)", "output"))
    edges += [GraphEdge(f"n{n}", "out") for n in cell_loose_ends(genotype)]
    return GraphPanel("contextual cell", tuple(nodes), tuple(edges))


def _decoder_panel(genotype: CVPRGenotype) -> GraphPanel:
    """The decoder: the encoder outputs, each block merging two pool entries through a cell
    each, and the concatenation of the blocks that no later block reads."""
    return pool_panel("decoder", ENCODER_STAGES[:genotype.num_pools],
                      [(f"block {b + 1}\ncell + cell", c.input_a, c.input_b)
                       for b, c in enumerate(genotype.connections)])


class CVPRSpace(SearchSpace[CVPRGenotype]):
    """The CVPR 2019 space; search-time decoder widths: agg_size 48, repeats 1, aux cell on."""

    name = "cvpr"
    genotype_type = CVPRGenotype
    encoder_stages = ENCODER_STAGES
    has_aux_cell = True
    published = PUBLISHED
    published_figures = PUBLISHED_FIGURES

    @cached_property
    def decisions(self) -> tuple[Decision, ...]:
        """3 blocks x two inputs from range(4 + b); the first op; per cell layer l,
        two inputs from range(1 + 3(l-1)) and two ops. Every op choice shares one
        head, each input choice has its own."""
        out: list[Decision] = []
        conn_start = 2 + 4 * CVPR_CELL_LAYERS
        for b in range(CVPR_DECODER_BLOCKS):
            for i in range(2):
                out.append(Decision(conn_start + 2 * b + i, CVPR_NUM_POOLS + b, "conn", f"conn{b}_{i}"))
        out.append(Decision(1, len(CVPR_OPS), "op", "op"))
        for l in range(1, CVPR_CELL_LAYERS + 1):
            base = 2 + 4 * (l - 1)
            upper = 1 + 3 * (l - 1)
            for i in range(2):
                out.append(Decision(base + i, upper, "cell_input", f"cell{l}_{i}"))
            for i in range(2):
                out.append(Decision(base + 2 + i, len(CVPR_OPS), "op", "op"))
        return tuple(out)

    def encode(self, genotype: Genotype) -> tuple[int, ...]:
        cell, conns = self.own(genotype).to_legacy()
        first, *layers = cell
        flat = [0, first]
        for layer in layers:
            flat += layer
        for conn in conns:
            flat += conn
        return tuple(flat)

    def _decode(self, action: list[int]) -> CVPRGenotype:
        check(action[0] == 0, f"cvpr action[0] is the cell's fixed input and must be 0, got {action[0]}")
        cell: list = [action[1]]
        for l in range(CVPR_CELL_LAYERS):
            cell.append(action[2 + 4 * l: 6 + 4 * l])
        start = 2 + 4 * CVPR_CELL_LAYERS
        conns = [action[start + 2 * b: start + 2 * b + 2] for b in range(CVPR_DECODER_BLOCKS)]
        return self.from_legacy([cell, conns])

    def from_legacy(self, nested: list) -> CVPRGenotype:
        try:
            cell, conns = nested
            first, *layers = cell
            check_index(first, len(CVPR_OPS), "cvpr legacy first op")
            cell_layers = []
            for i, (a, b, oa, ob) in enumerate(layers):
                check_index(oa, len(CVPR_OPS), f"cvpr legacy layer {i} op_a")
                check_index(ob, len(CVPR_OPS), f"cvpr legacy layer {i} op_b")
                cell_layers.append(CellLayer(a, b, CVPR_OPS[oa], CVPR_OPS[ob]))
            return CVPRGenotype(CVPR_OPS[first], tuple(cell_layers),
                                tuple(Connection(i, j) for i, j in conns))
        except (TypeError, ValueError) as exc:
            if isinstance(exc, GenotypeError):
                raise
            raise GenotypeError(f"malformed cvpr legacy genotype {nested!r}: {exc}") from exc

    def graph(self, genotype: Genotype) -> ArchitectureGraph:
        """Two panels: the contextual cell, and the decoder blocks with their connections."""
        g = self.own(genotype)
        return ArchitectureGraph((_cell_panel(g), _decoder_panel(g)))

    def build_decoder(self, genotype: Genotype, in_channels: list[int], num_classes: int, *,
                      agg_size: int, repeats: int, aux_cell: bool) -> nn.Module:
        from ..models.cvpr_decoder import CVPRDecoder  # torch only when a model is built
        return CVPRDecoder(self.own(genotype), in_channels, num_classes,
                           agg_size=agg_size, repeats=repeats, aux_cell=aux_cell)


SPACE = CVPRSpace()
