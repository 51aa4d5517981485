"""Genotypes of both search spaces: frozen dataclasses with named fields.

Genotypes are stored as JSON (``to_json`` / ``genotype_from_json``) and never
``eval``'d. The authors wrote them as nested lists of indices ("legacy"
notation); :func:`genotype_from_legacy` and ``to_legacy`` convert both ways.

CVPR legacy: ``[[first_op, [a, b, op_a, op_b], ...], [[i, j], ...]]``
WACV legacy: ``[[[op_a, op_b, agg], ...], [[a, b, template, repeats - 1, stride_power], ...]]``
"""
from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from typing import Any, Literal, Union

# Op lists in the index order of the original notation.
CVPR_OPS: tuple[str, ...] = (
    "conv1x1", "conv3x3", "sep_conv_3x3", "sep_conv_5x5", "global_average_pool",
    "conv3x3_dil3", "conv3x3_dil12", "sep_conv_3x3_dil3", "sep_conv_5x5_dil6",
    "skip_connect", "none",
)
WACV_OPS: tuple[str, ...] = (
    "sep_conv_3x3", "sep_conv_5x5", "global_average_pool", "max_pool_3x3",
    "sep_conv_5x5_dil6", "skip_connect",
)
AGG_OPS: tuple[str, ...] = ("psum", "cat")

# Sizes of the searched structures (the controllers' decisions).
CVPR_NUM_POOLS = 4        # encoder outputs feeding the decoder
CVPR_CELL_LAYERS = 3      # layers after the cell's first op
CVPR_DECODER_BLOCKS = 3
WACV_NUM_POOLS = 2
WACV_NUM_TEMPLATES = 3
WACV_NUM_LAYERS = 7
WACV_MAX_REPEATS = 4

Space = Literal["cvpr", "wacv"]


class GenotypeError(ValueError):
    """A genotype that does not fit its search space; the message says which field."""


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise GenotypeError(msg)


def _op(name: Any, allowed: tuple[str, ...], where: str) -> None:
    _check(name in allowed, f"{where}: unknown op {name!r}; expected one of {', '.join(allowed)}")


def _index(value: Any, upper: int, where: str) -> None:
    _check(isinstance(value, int) and not isinstance(value, bool) and 0 <= value < upper,
           f"{where}: {value!r} is not an index in [0, {upper})")


# ---------------------------------------------------------------------------
# CVPR 2019: one contextual cell + decoder connections
# ---------------------------------------------------------------------------

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
class CVPRGenotype:
    """Auxiliary-cell decoder: the contextual cell and the decoder connections."""
    first_op: str
    layers: tuple[CellLayer, ...]
    connections: tuple[Connection, ...]
    num_pools: int = CVPR_NUM_POOLS

    space = "cvpr"

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "connections", tuple(self.connections))
        _op(self.first_op, CVPR_OPS, "cvpr first_op")
        for l, layer in enumerate(self.layers, start=1):
            # Nodes that exist before layer l: x, the first op, 3 per earlier layer.
            # The controller only samples from [0, 1 + 3(l-1)), but the published
            # arch1 reads node 1 in its first layer, so the builder accepts any
            # existing node, as the original does.
            upper = 2 + 3 * (l - 1)
            _index(layer.input_a, upper, f"cvpr layers[{l - 1}].input_a")
            _index(layer.input_b, upper, f"cvpr layers[{l - 1}].input_b")
            _op(layer.op_a, CVPR_OPS, f"cvpr layers[{l - 1}].op_a")
            _op(layer.op_b, CVPR_OPS, f"cvpr layers[{l - 1}].op_b")
        _check(len(self.connections) > 0, "cvpr connections: at least one decoder block needed")
        for b, conn in enumerate(self.connections):
            _index(conn.input_a, self.num_pools + b, f"cvpr connections[{b}].input_a")
            _index(conn.input_b, self.num_pools + b, f"cvpr connections[{b}].input_b")

    def to_legacy(self) -> list:
        cell: list = [CVPR_OPS.index(self.first_op)]
        cell += [[l.input_a, l.input_b, CVPR_OPS.index(l.op_a), CVPR_OPS.index(l.op_b)]
                 for l in self.layers]
        return [cell, [[c.input_a, c.input_b] for c in self.connections]]

    def to_dict(self) -> dict[str, Any]:
        return {"space": self.space, **asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CVPRGenotype:
        return cls(first_op=d["first_op"],
                   layers=tuple(CellLayer(**x) for x in d["layers"]),
                   connections=tuple(Connection(**x) for x in d["connections"]),
                   num_pools=d.get("num_pools", CVPR_NUM_POOLS))


# ---------------------------------------------------------------------------
# WACV 2020: three templates placed by a layer structure
# ---------------------------------------------------------------------------

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
class WACVGenotype:
    """Template decoder: the templates and the layer structure."""
    templates: tuple[Template, ...]
    layers: tuple[TemplateLayer, ...]
    num_pools: int = WACV_NUM_POOLS

    space = "wacv"

    def __post_init__(self) -> None:
        object.__setattr__(self, "templates", tuple(self.templates))
        object.__setattr__(self, "layers", tuple(self.layers))
        _check(len(self.templates) > 0, "wacv templates: at least one template needed")
        for t, tpl in enumerate(self.templates):
            _op(tpl.op_a, WACV_OPS, f"wacv templates[{t}].op_a")
            _op(tpl.op_b, WACV_OPS, f"wacv templates[{t}].op_b")
            _op(tpl.aggregation, AGG_OPS, f"wacv templates[{t}].aggregation")
        _check(len(self.layers) > 0, "wacv layers: at least one layer needed")
        for l, layer in enumerate(self.layers):
            where = f"wacv layers[{l}]"
            _index(layer.input_a, self.num_pools + l, f"{where}.input_a")
            _index(layer.input_b, self.num_pools + l, f"{where}.input_b")
            _index(layer.template, len(self.templates), f"{where}.template")
            _check(isinstance(layer.repeats, int) and 1 <= layer.repeats <= WACV_MAX_REPEATS,
                   f"{where}.repeats: {layer.repeats!r} not in [1, {WACV_MAX_REPEATS}]")
            allowed = (1, 2) if l < len(self.layers) // 2 else (1,)
            _check(layer.stride in allowed,
                   f"{where}.stride: {layer.stride!r} not in {allowed} "
                   f"(only the first {len(self.layers) // 2} layers may downsample)")

    def to_legacy(self) -> list:
        templates = [[WACV_OPS.index(t.op_a), WACV_OPS.index(t.op_b), AGG_OPS.index(t.aggregation)]
                     for t in self.templates]
        structure = [[l.input_a, l.input_b, l.template, l.repeats - 1, l.stride.bit_length() - 1]
                     for l in self.layers]
        return [templates, structure]

    def to_dict(self) -> dict[str, Any]:
        return {"space": self.space, **asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WACVGenotype:
        return cls(templates=tuple(Template(**x) for x in d["templates"]),
                   layers=tuple(TemplateLayer(**x) for x in d["layers"]),
                   num_pools=d.get("num_pools", WACV_NUM_POOLS))


Genotype = Union[CVPRGenotype, WACVGenotype]
_CLASSES: dict[str, type] = {"cvpr": CVPRGenotype, "wacv": WACVGenotype}


def genotype_from_dict(d: dict[str, Any]) -> Genotype:
    """Inverse of ``to_dict``; the ``space`` key selects the class."""
    if not isinstance(d, dict) or d.get("space") not in _CLASSES:
        raise GenotypeError(f"genotype JSON needs 'space' in {sorted(_CLASSES)}, got {d!r:.200}")
    body = {k: v for k, v in d.items() if k != "space"}
    try:
        return _CLASSES[d["space"]].from_dict(body)
    except (KeyError, TypeError) as exc:
        raise GenotypeError(f"malformed {d['space']} genotype: {exc}") from exc


def genotype_from_json(text: str) -> Genotype:
    """Parse a genotype written by ``to_json``."""
    return genotype_from_dict(json.loads(text))


def genotype_from_legacy(space: Space, nested: list) -> Genotype:
    """Convert the authors' nested-list notation into a typed genotype."""
    try:
        if space == "cvpr":
            cell, conns = nested
            first, *layers = cell
            _index(first, len(CVPR_OPS), "cvpr legacy first op")
            cell_layers = []
            for i, (a, b, oa, ob) in enumerate(layers):
                _index(oa, len(CVPR_OPS), f"cvpr legacy layer {i} op_a")
                _index(ob, len(CVPR_OPS), f"cvpr legacy layer {i} op_b")
                cell_layers.append(CellLayer(a, b, CVPR_OPS[oa], CVPR_OPS[ob]))
            return CVPRGenotype(CVPR_OPS[first], tuple(cell_layers),
                                tuple(Connection(i, j) for i, j in conns))
        if space == "wacv":
            templates, structure = nested
            tpls = []
            for t, (oa, ob, agg) in enumerate(templates):
                _index(oa, len(WACV_OPS), f"wacv legacy template {t} op_a")
                _index(ob, len(WACV_OPS), f"wacv legacy template {t} op_b")
                _index(agg, len(AGG_OPS), f"wacv legacy template {t} aggregation")
                tpls.append(Template(WACV_OPS[oa], WACV_OPS[ob], AGG_OPS[agg]))
            layers = []
            for l, (a, b, t, rep, sp) in enumerate(structure):
                _index(sp, 2, f"wacv legacy layer {l} stride power")
                layers.append(TemplateLayer(a, b, t, rep + 1, 2 ** sp))
            return WACVGenotype(tuple(tpls), tuple(layers))
    except (TypeError, ValueError) as exc:
        if isinstance(exc, GenotypeError):
            raise
        raise GenotypeError(f"malformed {space} legacy genotype {nested!r}: {exc}") from exc
    raise GenotypeError(f"unknown search space {space!r}; expected 'cvpr' or 'wacv'")


def random_genotype(space: Space, rng: random.Random) -> Genotype:
    """Draw uniformly from the controllers' decision ranges (see the spec)."""
    if space == "cvpr":
        conns = [[rng.randrange(CVPR_NUM_POOLS + b), rng.randrange(CVPR_NUM_POOLS + b)]
                 for b in range(CVPR_DECODER_BLOCKS)]
        cell: list = [rng.randrange(len(CVPR_OPS))]
        for l in range(1, CVPR_CELL_LAYERS + 1):
            upper = 1 + 3 * (l - 1)
            cell.append([rng.randrange(upper), rng.randrange(upper),
                         rng.randrange(len(CVPR_OPS)), rng.randrange(len(CVPR_OPS))])
        return genotype_from_legacy("cvpr", [cell, conns])
    if space == "wacv":
        templates = [[rng.randrange(len(WACV_OPS)), rng.randrange(len(WACV_OPS)),
                      rng.randrange(len(AGG_OPS))] for _ in range(WACV_NUM_TEMPLATES)]
        structure = [[rng.randrange(WACV_NUM_POOLS + l), rng.randrange(WACV_NUM_POOLS + l),
                      rng.randrange(WACV_NUM_TEMPLATES), rng.randrange(WACV_MAX_REPEATS),
                      rng.randrange(2) if l < WACV_NUM_LAYERS // 2 else 0]
                     for l in range(WACV_NUM_LAYERS)]
        return genotype_from_legacy("wacv", [templates, structure])
    raise GenotypeError(f"unknown search space {space!r}; expected 'cvpr' or 'wacv'")


# The published architectures, in the original notation (from the papers' code).
_PUBLISHED: dict[tuple[str, str], list] = {
    ("cvpr", "arch0"): [[8, [0, 0, 5, 2], [0, 2, 8, 8], [0, 5, 1, 4]], [[3, 3], [3, 2], [3, 0]]],
    ("cvpr", "arch1"): [[2, [1, 0, 3, 6], [0, 1, 2, 8], [2, 0, 6, 1]], [[2, 3], [3, 1], [4, 4]]],
    ("cvpr", "arch2"): [[5, [0, 0, 4, 1], [3, 2, 0, 1], [5, 6, 5, 0]], [[1, 3], [4, 3], [2, 2]]],
    ("wacv", "arch0"): [[[3, 0, 1], [4, 1, 1], [3, 1, 1]],
                        [[0, 1, 0, 0, 1], [2, 1, 2, 1, 0], [3, 1, 1, 1, 0], [1, 1, 2, 0, 0],
                         [3, 0, 2, 0, 0], [5, 3, 2, 1, 0], [0, 5, 0, 1, 0]]],
    ("wacv", "arch1"): [[[1, 1, 0], [1, 3, 0], [3, 4, 0]],
                        [[1, 1, 0, 0, 0], [0, 1, 1, 1, 1], [3, 1, 2, 3, 0], [3, 0, 2, 2, 0],
                         [0, 1, 2, 0, 0], [2, 1, 1, 3, 0], [4, 0, 2, 2, 0]]],
}


def published_genotype(space: Space, name: str) -> Genotype:
    """One of the papers' published genotypes: cvpr arch0-2, wacv arch0-1."""
    key = (space, name)
    if key not in _PUBLISHED:
        known = ", ".join(f"{s}/{n}" for s, n in _PUBLISHED)
        raise KeyError(f"no published genotype {space}/{name}; known: {known}")
    return genotype_from_legacy(space, _PUBLISHED[key])
