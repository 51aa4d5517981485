"""The WACV 2020 search space: three templates, placed and repeated by a seven-layer structure.

Nekrasov et al., "Template-Based Automatic Search of Compact Semantic Segmentation
Architectures" (WACV 2020); see ``search-spaces.md`` ("WACV 2020 space", "The
controllers' decisions"). The decoder itself is
:class:`nasseg.models.wacv_decoder.TemplateDecoder`.

A genotype is written with op names and the real repeat count and stride; the
original's nested lists of indices ("legacy" notation,
``[[[op_a, op_b, agg], ...], [[a, b, template, repeats - 1, stride_power], ...]]``)
convert both ways. The flat action (44 integers) is the flattened legacy
notation, and the controller (the original's ``TemplateController``) takes its
decisions in that order. Only the first ``7 // 2`` layers may downsample: for the
others the stride is a one-way choice.
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

__all__ = ["WACV_OPS", "AGG_OPS", "WACV_NUM_POOLS", "WACV_NUM_TEMPLATES", "WACV_NUM_LAYERS",
           "WACV_MAX_REPEATS", "ENCODER_STAGES", "Template", "TemplateLayer", "WACVGenotype", "WACVSpace",
           "PUBLISHED", "PUBLISHED_FIGURES", "SPACE"]

# Ops and aggregations in the index order of the original notation.
WACV_OPS: tuple[str, ...] = (
    "sep_conv_3x3", "sep_conv_5x5", "global_average_pool", "max_pool_3x3",
    "sep_conv_5x5_dil6", "skip_connect",
)
AGG_OPS: tuple[str, ...] = ("psum", "cat")
ENCODER_STAGES = (1, 2)                # MobileNet-v2 outputs at strides 4 and 8
WACV_NUM_POOLS = len(ENCODER_STAGES)
WACV_NUM_TEMPLATES = 3
WACV_NUM_LAYERS = 7
WACV_MAX_REPEATS = 4


@dataclass(frozen=True)
class Template:
    """op_a and op_b on two inputs, joined by an aggregation."""
    op_a: str
    op_b: str
    aggregation: str


@dataclass(frozen=True)
class TemplateLayer:
    """Apply ``templates[template]`` ``repeats`` times to pool[input_a], pool[input_b]."""
    input_a: int
    input_b: int
    template: int
    repeats: int
    stride: int


@dataclass(frozen=True)
class WACVGenotype(Genotype):
    """Template decoder: the templates and the layer structure."""
    templates: tuple[Template, ...]
    layers: tuple[TemplateLayer, ...]
    num_pools: int = WACV_NUM_POOLS

    space: ClassVar[str] = "wacv"

    def __post_init__(self) -> None:
        object.__setattr__(self, "templates", tuple(self.templates))
        object.__setattr__(self, "layers", tuple(self.layers))
        check(len(self.templates) > 0, "wacv templates: at least one template needed")
        for t, tpl in enumerate(self.templates):
            check_op(tpl.op_a, WACV_OPS, f"wacv templates[{t}].op_a")
            check_op(tpl.op_b, WACV_OPS, f"wacv templates[{t}].op_b")
            check_op(tpl.aggregation, AGG_OPS, f"wacv templates[{t}].aggregation")
        check(len(self.layers) > 0, "wacv layers: at least one layer needed")
        for l, layer in enumerate(self.layers):
            where = f"wacv layers[{l}]"
            check_index(layer.input_a, self.num_pools + l, f"{where}.input_a")
            check_index(layer.input_b, self.num_pools + l, f"{where}.input_b")
            check_index(layer.template, len(self.templates), f"{where}.template")
            check(isinstance(layer.repeats, int) and 1 <= layer.repeats <= WACV_MAX_REPEATS,
                  f"{where}.repeats: {layer.repeats!r} not in [1, {WACV_MAX_REPEATS}]")
            allowed = (1, 2) if l < len(self.layers) // 2 else (1,)
            check(layer.stride in allowed,
                  f"{where}.stride: {layer.stride!r} not in {allowed} "
                  f"(only the first {len(self.layers) // 2} layers may downsample)")

    def to_legacy(self) -> list:
        """The original's nested-list notation (indices into :data:`WACV_OPS`, :data:`AGG_OPS`)."""
        templates = [[WACV_OPS.index(t.op_a), WACV_OPS.index(t.op_b), AGG_OPS.index(t.aggregation)]
                     for t in self.templates]
        structure = [[l.input_a, l.input_b, l.template, l.repeats - 1, l.stride.bit_length() - 1]
                     for l in self.layers]
        return [templates, structure]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WACVGenotype:
        return cls(templates=tuple(Template(**x) for x in d["templates"]),
                   layers=tuple(TemplateLayer(**x) for x in d["layers"]),
                   num_pools=d.get("num_pools", WACV_NUM_POOLS))


# The published architectures (released with agg_size 64, repeats 2).
PUBLISHED: Mapping[str, WACVGenotype] = MappingProxyType({
    # legacy [[[3, 0, 1], [4, 1, 1], [3, 1, 1]],
    #         [[0, 1, 0, 0, 1], [2, 1, 2, 1, 0], [3, 1, 1, 1, 0], [1, 1, 2, 0, 0],
    #          [3, 0, 2, 0, 0], [5, 3, 2, 1, 0], [0, 5, 0, 1, 0]]]
    "arch0": WACVGenotype(
        templates=(Template("max_pool_3x3", "sep_conv_3x3", "cat"),
                   Template("sep_conv_5x5_dil6", "sep_conv_5x5", "cat"),
                   Template("max_pool_3x3", "sep_conv_5x5", "cat")),
        layers=(TemplateLayer(0, 1, template=0, repeats=1, stride=2),
                TemplateLayer(2, 1, template=2, repeats=2, stride=1),
                TemplateLayer(3, 1, template=1, repeats=2, stride=1),
                TemplateLayer(1, 1, template=2, repeats=1, stride=1),
                TemplateLayer(3, 0, template=2, repeats=1, stride=1),
                TemplateLayer(5, 3, template=2, repeats=2, stride=1),
                TemplateLayer(0, 5, template=0, repeats=2, stride=1))),
    # legacy [[[1, 1, 0], [1, 3, 0], [3, 4, 0]],
    #         [[1, 1, 0, 0, 0], [0, 1, 1, 1, 1], [3, 1, 2, 3, 0], [3, 0, 2, 2, 0],
    #          [0, 1, 2, 0, 0], [2, 1, 1, 3, 0], [4, 0, 2, 2, 0]]]
    "arch1": WACVGenotype(
        templates=(Template("sep_conv_5x5", "sep_conv_5x5", "psum"),
                   Template("sep_conv_5x5", "max_pool_3x3", "psum"),
                   Template("max_pool_3x3", "sep_conv_5x5_dil6", "psum")),
        layers=(TemplateLayer(1, 1, template=0, repeats=1, stride=1),
                TemplateLayer(0, 1, template=1, repeats=2, stride=2),
                TemplateLayer(3, 1, template=2, repeats=4, stride=1),
                TemplateLayer(3, 0, template=2, repeats=3, stride=1),
                TemplateLayer(0, 1, template=2, repeats=1, stride=1),
                TemplateLayer(2, 1, template=1, repeats=4, stride=1),
                TemplateLayer(4, 0, template=2, repeats=3, stride=1))),
})


_PAPER = "Nekrasov et al., WACV 2020 (arXiv 1904.02365)"
_README = ("the authors' README, DrSleep/nas-segm-pytorch, 'Note on the runtime of WACV 2020 models' "
           "(eval mode; it corrects the paper's figures, timed in training mode: 95.7 and 145 ms at 2048x1024)")


def _latency(arch: str, size: tuple[int, int], ms: float, std: float, params: int) -> PublishedFigure:
    return PublishedFigure("latency", arch, ms, _README, size=size, std=std, device="GTX 1080Ti",
                           num_classes=19, params=params)


#: What the paper and the authors' README publish about the released models (search-spaces.md,
#: "Published quality", "Eval-mode latency"): mIoU as fractions; latency in ms, mean +- std, of the
#: models with 19 classes in eval mode, batch 1, on one GTX 1080Ti, at height x width.
PUBLISHED_FIGURES: tuple[PublishedFigure, ...] = (
    PublishedFigure("quality", "arch0", 0.681, _PAPER, dataset="cityscapes", split="val", metric="miou"),
    PublishedFigure("quality", "arch1", 0.695, _PAPER, dataset="cityscapes", split="val", metric="miou"),
    PublishedFigure("quality", "arch0", 0.677, _PAPER, dataset="cityscapes", split="test", metric="miou"),
    PublishedFigure("quality", "arch1", 0.678, _PAPER, dataset="cityscapes", split="test", metric="miou"),
    PublishedFigure("quality", "arch0", 0.639, _PAPER, dataset="camvid", split="test", metric="miou"),
    PublishedFigure("quality", "arch1", 0.632, _PAPER, dataset="camvid", split="test", metric="miou"),
    _latency("arch0", (1024, 2048), 52.25, 0.03, 280_147),
    _latency("arch1", (1024, 2048), 97.11, 0.24, 268_235),
    _latency("arch0", (360, 480), 8.97, 0.10, 280_147),
    _latency("arch1", (360, 480), 11.51, 0.14, 268_235),
)


def _templates_panel(genotype: WACVGenotype) -> GraphPanel:
    """Each template: op a on its first input, op b on its second, joined by the aggregation."""
    nodes: list[GraphNode] = []
    edges: list[GraphEdge] = []
    for t, tpl in enumerate(genotype.templates):
        nodes += [GraphNode(f"t{t}a", f"T{t} input a", "input"), GraphNode(f"t{t}b", f"T{t} input b", "input"),
                  GraphNode(f"t{t}opa", tpl.op_a, "op"), GraphNode(f"t{t}opb", tpl.op_b, "op"),
                  GraphNode(f"t{t}agg", tpl.aggregation, "merge")]
        edges += [GraphEdge(f"t{t}a", f"t{t}opa"), GraphEdge(f"t{t}b", f"t{t}opb"),
                  GraphEdge(f"t{t}opa", f"t{t}agg"), GraphEdge(f"t{t}opb", f"t{t}agg")]
    return GraphPanel("templates", tuple(nodes), tuple(edges))


def _structure_panel(genotype: WACVGenotype) -> GraphPanel:
    """The encoder outputs, each layer (its template, repeats, stride) reading two pool entries,
    and the concatenation of the layers that no later layer reads."""
    return pool_panel("decoder structure", ENCODER_STAGES[:genotype.num_pools],
                      [(f"layer {l + 1}: T{layer.template} x{layer.repeats}"
                        + (f"\nstride {layer.stride}" if layer.stride > 1 else ""), layer.input_a, layer.input_b)
                       for l, layer in enumerate(genotype.layers)])


class WACVSpace(SearchSpace[WACVGenotype]):
    """The WACV 2020 space (no auxiliary heads)."""

    name = "wacv"
    genotype_type = WACVGenotype
    encoder_stages = ENCODER_STAGES
    published = PUBLISHED
    published_figures = PUBLISHED_FIGURES

    @cached_property
    def decisions(self) -> tuple[Decision, ...]:
        """Per template: op a, op b (one shared op head), aggregation; per layer l:
        two inputs from range(2 + l), template, repeats - 1, stride power (a
        one-way choice from layer 7 // 2 on). In action order."""
        out: list[Decision] = []
        for t in range(WACV_NUM_TEMPLATES):
            out.append(Decision(3 * t, len(WACV_OPS), "op", "op"))
            out.append(Decision(3 * t + 1, len(WACV_OPS), "op", "op"))
            out.append(Decision(3 * t + 2, len(AGG_OPS), "agg", "agg"))
        for l in range(WACV_NUM_LAYERS):
            base = 3 * WACV_NUM_TEMPLATES + 5 * l
            for i in range(2):
                out.append(Decision(base + i, WACV_NUM_POOLS + l, "input", f"input{l}_{i}"))
            out.append(Decision(base + 2, WACV_NUM_TEMPLATES, "template", "template"))
            out.append(Decision(base + 3, WACV_MAX_REPEATS, "repeats", "repeats"))
            out.append(Decision(base + 4, 2 if l < WACV_NUM_LAYERS // 2 else 1, "stride", "stride"))
        return tuple(out)

    def encode(self, genotype: Genotype) -> tuple[int, ...]:
        return tuple(v for group in self.own(genotype).to_legacy() for item in group for v in item)

    def _decode(self, action: list[int]) -> WACVGenotype:
        k = 3 * WACV_NUM_TEMPLATES
        templates = [action[3 * t: 3 * t + 3] for t in range(WACV_NUM_TEMPLATES)]
        structure = [action[k + 5 * l: k + 5 * l + 5] for l in range(WACV_NUM_LAYERS)]
        return self.from_legacy([templates, structure])

    def from_legacy(self, nested: list) -> WACVGenotype:
        try:
            templates, structure = nested
            tpls = []
            for t, (oa, ob, agg) in enumerate(templates):
                check_index(oa, len(WACV_OPS), f"wacv legacy template {t} op_a")
                check_index(ob, len(WACV_OPS), f"wacv legacy template {t} op_b")
                check_index(agg, len(AGG_OPS), f"wacv legacy template {t} aggregation")
                tpls.append(Template(WACV_OPS[oa], WACV_OPS[ob], AGG_OPS[agg]))
            layers = []
            for l, (a, b, t, rep, sp) in enumerate(structure):
                check_index(sp, 2, f"wacv legacy layer {l} stride power")
                layers.append(TemplateLayer(a, b, t, rep + 1, 2 ** sp))
            return WACVGenotype(tuple(tpls), tuple(layers))
        except (TypeError, ValueError) as exc:
            if isinstance(exc, GenotypeError):
                raise
            raise GenotypeError(f"malformed wacv legacy genotype {nested!r}: {exc}") from exc

    def graph(self, genotype: Genotype) -> ArchitectureGraph:
        """Two panels: the templates, and the layer structure that places and repeats them."""
        g = self.own(genotype)
        return ArchitectureGraph((_templates_panel(g), _structure_panel(g)))

    def build_decoder(self, genotype: Genotype, in_channels: list[int], num_classes: int, *,
                      agg_size: int, repeats: int, aux_cell: bool) -> nn.Module:
        """``aux_cell`` is always False here (``has_aux_cell`` is False)."""
        from ..models.wacv_decoder import TemplateDecoder  # torch only when a model is built
        return TemplateDecoder(self.own(genotype), in_channels, num_classes,
                               agg_size=agg_size, repeats=repeats)


SPACE = WACVSpace()
