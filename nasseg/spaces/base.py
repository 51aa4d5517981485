"""The contract between a search space and the code that searches it and builds its models.

A search space (one module per space under :mod:`nasseg.spaces`) owns everything
that is specific to it: its genotype type, its op lists, the categorical
*decisions* a controller takes to sample a genotype, the flat *action* encoding of
a genotype (what the controllers, strategies and search history store), the
encoder stages its decoder reads, the decoder builder and its published
genotypes, and the drawing of a genotype as a graph (:meth:`SearchSpace.graph`,
plain nodes and edges that :mod:`nasseg.reporting.architecture` lays out without
knowing the space). The controllers, strategies, proxy training, the segmenter and
the report only talk to :class:`SearchSpace`, so adding a space needs no change
outside its own module and one line in the registry (:mod:`nasseg.spaces`).

Written for this project: the original code (DrSleep/nas-segm-pytorch) has one
controller class, decoder and genotype list per space and no common interface.

This module imports neither the registry nor a space module, so both import it
without forming an import cycle, and it does not import torch (a decoder is only
built by :meth:`SearchSpace.build_decoder`, which imports its model code when
called).
"""
from __future__ import annotations

import dataclasses
import json
import random
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from ..errors import InputError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["ArchitectureGraph", "Decision", "Genotype", "GenotypeError", "GraphEdge", "GraphNode", "GraphPanel",
           "PublishedFigure", "SearchSpace", "check", "check_index", "check_op"]


class GenotypeError(InputError, ValueError):
    """A genotype, action or space name that does not fit; the message says which field."""


def check(cond: bool, msg: str) -> None:
    """Raise :class:`GenotypeError` with ``msg`` unless ``cond``."""
    if not cond:
        raise GenotypeError(msg)


def check_op(name: Any, allowed: tuple[str, ...], where: str) -> None:
    """``name`` must be one of the ops ``allowed`` at ``where``."""
    check(name in allowed, f"{where}: unknown op {name!r}; expected one of {', '.join(allowed)}")


def check_index(value: Any, upper: int, where: str) -> None:
    """``value`` must be an int (not a bool) in ``[0, upper)``."""
    check(isinstance(value, int) and not isinstance(value, bool) and 0 <= value < upper,
          f"{where}: {value!r} is not an index in [0, {upper})")


@dataclass(frozen=True)
class Decision:
    """One categorical choice of a controller.

    ``position`` is the index it fills in the flattened action; ``size`` the
    number of values (``size == 1`` is a one-way choice, always 0: it still takes
    an LSTM step but has no head); ``kind`` groups decisions that share an
    embedding table (ENAS-style feedback); ``head`` names the linear layer that
    scores it (decisions with the same head must have the same size).
    """
    position: int
    size: int
    kind: str
    head: str


@dataclass(frozen=True)
class GraphNode:
    """A box of an architecture drawing.

    ``kind`` says how it is drawn: ``input`` (an encoder output, a cell's input),
    ``op`` (an operation), ``merge`` (a sum, an aggregation, a block merging two
    inputs), ``output`` (what the graph returns) or ``unused`` (an input nothing reads).
    """
    id: str
    label: str
    kind: str = "op"


@dataclass(frozen=True)
class GraphEdge:
    """An arrow from node ``source`` to node ``target``, with an optional short label."""
    source: str
    target: str
    label: str = ""


@dataclass(frozen=True)
class GraphPanel:
    """One drawing of a genotype: a titled directed acyclic graph."""
    title: str
    nodes: tuple[GraphNode, ...]
    edges: tuple[GraphEdge, ...]

    def __post_init__(self) -> None:
        ids = [n.id for n in self.nodes]
        if len(set(ids)) != len(ids):
            raise ValueError(f"graph panel {self.title!r}: node ids must be distinct, got {ids}")
        for e in self.edges:
            if e.source not in ids or e.target not in ids:
                raise ValueError(f"graph panel {self.title!r}: edge {e.source} -> {e.target} names an "
                                 "unknown node")


@dataclass(frozen=True)
class ArchitectureGraph:
    """A genotype drawn as one or more panels (a cell and the decoder that places it, say)."""
    panels: tuple[GraphPanel, ...]


@dataclass(frozen=True)
class PublishedFigure:
    """One number a paper published about one of a space's released architectures (``arch``).

    ``kind`` is ``quality`` (``dataset``/``split``/``metric``: e.g. cityscapes val miou as a
    fraction, RMSE in metres) or ``latency`` (``size`` as height x width, ``value`` in
    milliseconds, ``std`` its spread, measured on ``device`` for the network of ``params``
    parameters with ``num_classes`` outputs). ``source`` says where it is published. The
    report shows these beside its own measurements, always labelled as the papers'.
    """
    kind: str
    arch: str
    value: float
    source: str
    dataset: str = ""
    split: str = ""
    metric: str = ""
    size: tuple[int, int] | None = None
    std: float | None = None
    device: str = ""
    num_classes: int | None = None
    params: int | None = None


class Genotype(ABC):
    """Base of every space's genotype.

    Subclasses are frozen dataclasses with named fields and readable op names
    (checked at registration), and set ``space`` to their space's name. The dict
    and JSON forms record that name, so :func:`nasseg.genotypes.genotype_from_dict`
    finds the class in the registry.
    """

    space: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        """Plain data: ``{"space": name, **fields}`` (nested dataclasses as dicts)."""
        return {"space": self.space, **dataclasses.asdict(self)}  # type: ignore[call-overload]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=False)

    @classmethod
    @abstractmethod
    def from_dict(cls, d: dict[str, Any]) -> Genotype:
        """Inverse of :meth:`to_dict`, given the fields without the ``space`` key."""


G = TypeVar("G", bound=Genotype)


class SearchSpace(ABC, Generic[G]):
    """A decoder search space: what a controller samples and how it becomes a model.

    Attributes a space sets (as class attributes or in ``__init__``):

    - ``name``: the registry key, equal to ``genotype_type.space``;
    - ``genotype_type``: its frozen-dataclass :class:`Genotype` subclass;
    - ``encoder_stages``: the MobileNet-v2 stages (0-based) whose outputs the
      decoder reads, in order; the controller runs one unsampled step per output;
    - ``has_aux_cell``: whether :meth:`build_decoder` accepts ``aux_cell=True``
      (auxiliary cells in the auxiliary heads, CVPR 2019);
    - ``published``: published genotypes by name (may be empty);
    - ``published_figures``: what the papers report about them (quality, latency; may be empty).

    A space implements :attr:`decisions`, :meth:`encode`, :meth:`_decode` and
    :meth:`build_decoder`; sampling, ranges and the action length follow from the
    decisions. Every decision's range depends only on its position, never on
    earlier choices, which lets a controller score a batch of actions in one pass.
    """

    name: str
    genotype_type: type[G]
    encoder_stages: tuple[int, ...]
    has_aux_cell: bool = False
    published: Mapping[str, G] = MappingProxyType({})
    published_figures: tuple[PublishedFigure, ...] = ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    # -- decisions and the action layout ----------------------------------------

    @property
    @abstractmethod
    def decisions(self) -> tuple[Decision, ...]:
        """The controller's decisions, in sampling order (not necessarily action order)."""

    @property
    def num_pools(self) -> int:
        """Number of encoder outputs the decoder reads."""
        return len(self.encoder_stages)

    @cached_property
    def action_length(self) -> int:
        """Length of a flat action: up to the last decision's position. Positions
        that no decision fills are constants (always 0)."""
        return 1 + max(d.position for d in self.decisions)

    @cached_property
    def action_ranges(self) -> tuple[int, ...]:
        """Number of valid values at each action position (1 = constant 0)."""
        ranges = [1] * self.action_length
        for d in self.decisions:
            ranges[d.position] = d.size
        return tuple(ranges)

    @abstractmethod
    def encode(self, genotype: Genotype) -> tuple[int, ...]:
        """The genotype as a flat action (no range check: published genotypes may
        lie outside the controller's ranges)."""

    def decode(self, action: Sequence[int]) -> G:
        """The genotype of a flat action; inverse of :meth:`encode`."""
        values = [int(v) for v in action]
        check(len(values) == self.action_length,
              f"{self.name} action needs {self.action_length} integers, got {len(values)}")
        return self._decode(values)

    @abstractmethod
    def _decode(self, action: list[int]) -> G:
        """:meth:`decode` of an action of the right length."""

    def random_action(self, rng: random.Random) -> tuple[int, ...]:
        """Uniform over every decision's range, drawn in action order (one-way
        choices draw nothing): what an untrained search proposes."""
        return tuple(rng.randrange(r) if r > 1 else 0 for r in self.action_ranges)

    def random_genotype(self, rng: random.Random) -> G:
        """The genotype of :meth:`random_action`."""
        return self.decode(self.random_action(rng))

    # -- genotypes ---------------------------------------------------------------

    def own(self, genotype: Genotype) -> G:
        """``genotype`` itself if it is of this space, else :class:`GenotypeError`."""
        if not isinstance(genotype, self.genotype_type):
            raise GenotypeError(f"{self.name} space: expected a {self.genotype_type.__name__}, "
                                f"got {genotype!r:.200}")
        return genotype

    def from_legacy(self, nested: list) -> G:
        """A genotype from the original code's nested-list notation. Only the
        papers' spaces have one; others raise :class:`GenotypeError`."""
        raise GenotypeError(f"the {self.name} space has no legacy (nested-list) notation")

    def published_genotype(self, name: str) -> G:
        """A published genotype by name; KeyError lists the known ones."""
        if name not in self.published:
            known = ", ".join(f"{self.name}/{n}" for n in self.published) or "none"
            raise KeyError(f"no published genotype {self.name}/{name}; known: {known}")
        return self.published[name]

    def graph(self, genotype: Genotype) -> ArchitectureGraph:
        """``genotype`` as nodes and edges, for drawing (its cells and their connections).

        The papers' spaces implement it; a space that does not raises
        NotImplementedError and the report shows its genotype as text instead.
        """
        raise NotImplementedError(f"the {self.name} space does not describe its genotypes as graphs")

    # -- models ------------------------------------------------------------------

    @abstractmethod
    def build_decoder(self, genotype: Genotype, in_channels: list[int], num_classes: int, *,
                      agg_size: int, repeats: int, aux_cell: bool) -> nn.Module:
        """The decoder of ``genotype`` on encoder outputs with ``in_channels``.

        Its ``forward(feats, aux=True)`` maps the encoder's list of maps to
        logits, or to ``(logits, aux_logits)`` when it has auxiliary heads
        (evaluated in training mode only, and only when ``aux`` is true: the
        proxy passes false when their loss weight is 0; a decoder without heads
        ignores it). ``aux_cell`` is True only for a space with ``has_aux_cell``
        (:func:`nasseg.models.build_segmenter` checks).
        """


def pool_panel(title: str, encoder_stages: Sequence[int], steps: Sequence[tuple[str, int, int]]) -> GraphPanel:
    """A decoder as a graph panel: the encoder outputs (pool entries 0..n-1; one no step reads is
    drawn as unused), each step (pool entry n + s) reading two pool entries, and the
    concatenation of the steps' outputs that no later step reads -- the shape both spaces'
    decoders share. ``steps``: (label, input a, input b) each."""
    read = {i for _, a, b in steps for i in (a, b)}
    nodes = [GraphNode(f"p{k}", f"encoder stage {stage}" + ("" if k in read else "\n(unused)"),
                       "input" if k in read else "unused")
             for k, stage in enumerate(encoder_stages)]
    edges: list[GraphEdge] = []
    for s, (label, a, b) in enumerate(steps):
        node = f"p{len(encoder_stages) + s}"
        nodes.append(GraphNode(node, label, "merge"))
        edges += [GraphEdge(f"p{a}", node, "a"), GraphEdge(f"p{b}", node, "b")]
    nodes.append(GraphNode("out", "concat, 1x1, 3x3\n-> classes", "output"))
    edges += [GraphEdge(f"p{k}", "out") for k in unread_outputs(len(encoder_stages), [(a, b) for _, a, b in steps])]
    return GraphPanel(title, tuple(nodes), tuple(edges))


def unread_outputs(first: int, inputs: Sequence[tuple[int, int]]) -> list[int]:
    """The outputs no later step reads, in order: step ``s`` (pool index ``first + s``) reads the
    two pool entries ``inputs[s]``. What both spaces' decoders concatenate at their end."""
    unread: list[int] = []
    for step, pair in enumerate(inputs):
        unread = [u for u in unread if u not in pair]
        unread.append(first + step)
    return unread
