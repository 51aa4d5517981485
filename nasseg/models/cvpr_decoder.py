"""CVPR 2019 decoder: contextual cells merged pairwise, with auxiliary heads.

See ``../shared/spec/search-spaces.md`` ("CVPR 2019 space"). Sub-module names
follow the authors' checkpoints except the cell's node list, ``nodes`` here and
``_ops`` there (mapped in :mod:`nasseg.models.weights`).

The genotype is a :class:`nasseg.spaces.cvpr.CVPRGenotype`, whose space builds
this decoder; the protocols below state what the decoder reads of it, so that
this module does not import the space back (no import cycle).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from .ops import OPS, conv3x3, conv_bn_relu, match_sizes, resize_to


class CellLayerLike(Protocol):
    """A cell layer: op_a(node[input_a]) + op_b(node[input_b])."""
    @property
    def input_a(self) -> int: ...
    @property
    def input_b(self) -> int: ...
    @property
    def op_a(self) -> str: ...
    @property
    def op_b(self) -> str: ...


class ConnectionLike(Protocol):
    """A decoder block's two inputs in the pool."""
    @property
    def input_a(self) -> int: ...
    @property
    def input_b(self) -> int: ...


class CVPRGenotypeLike(Protocol):
    """The contextual cell and the decoder connections."""
    @property
    def first_op(self) -> str: ...
    @property
    def layers(self) -> Sequence[CellLayerLike]: ...
    @property
    def connections(self) -> Sequence[ConnectionLike]: ...
    @property
    def num_pools(self) -> int: ...


class Sum(nn.Module):
    """Sum of two cell nodes (resized to the larger if their sizes differ)."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return _sum_resized(x, y)


def _sum_resized(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x, y = match_sizes(x, y, larger=True)
    return x + y


class ContextualCell(nn.Module):
    """The searched cell on ``channels`` channels.

    Nodes: 0 is the input, 1 the first op's output; layer l (1-based) adds
    op_a(node a) at 3l-1, op_b(node b) at 3l and their sum at 3l+1. The output
    is the sum of the "loose ends": the first op and the layer sums that no
    layer reads.
    """

    def __init__(self, genotype: CVPRGenotypeLike, channels: int, repeats: int):
        super().__init__()
        self.nodes = nn.ModuleList([OPS[genotype.first_op](channels, channels, 1, repeats)])
        self.node_inputs: list[tuple[int, ...]] = [(0,)]
        loose = [1]
        for l, layer in enumerate(genotype.layers, start=1):
            for src, op in ((layer.input_a, layer.op_a), (layer.input_b, layer.op_b)):
                if src in loose:
                    loose.remove(src)
                self.nodes.append(OPS[op](channels, channels, 1, repeats))
                self.node_inputs.append((src,))
            self.nodes.append(Sum())
            self.node_inputs.append((3 * l - 1, 3 * l))
            loose.append(3 * l + 1)
        self.loose_ends = loose

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for node, inputs in zip(self.nodes, self.node_inputs):
            feats.append(node(*(feats[i] for i in inputs)))
        out = feats[self.loose_ends[0]]
        for i in self.loose_ends[1:]:
            out = out + feats[i]
        return out


class MergeCell(nn.Module):
    """One decoder block: a cell on each input, 1x1 conv_bn_relu each, resize, sum."""

    def __init__(self, genotype: CVPRGenotypeLike, agg_size: int, repeats: int):
        super().__init__()
        self.op_1 = ContextualCell(genotype, agg_size, repeats)
        self.op_2 = ContextualCell(genotype, agg_size, repeats)
        self.agg = nn.Module()
        self.agg.branch_1 = conv_bn_relu(agg_size, agg_size, 1)
        self.agg.branch_2 = conv_bn_relu(agg_size, agg_size, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = self.agg.branch_1(self.op_1(x))
        y = self.agg.branch_2(self.op_2(y))
        return _sum_resized(x, y)


def collected_parts(feats: list[torch.Tensor | None], indices: list[int]) -> list[torch.Tensor]:
    """``feats[i]`` for i in indices, resized as the original resizes them when it
    concatenates them (by height, into the running concatenation).

    The original concatenates as it goes and resizes the running concatenation when the
    next map is taller. Bilinear resizing treats each channel on its own, so here each
    part already gathered is resized instead: the same values, without copying the
    growing concatenation once per part.
    """
    parts = [feats[indices[0]]]
    for i in indices[1:]:
        nxt = feats[i]
        height = parts[0].shape[2]
        if height > nxt.shape[2]:
            nxt = resize_to(nxt, parts[0].shape[2:])
        elif nxt.shape[2] > height:
            parts = [resize_to(p, nxt.shape[2:]) for p in parts]
        parts.append(nxt)
    return parts


def reduce_collected(feats: list[torch.Tensor | None], indices: list[int], reduce: nn.Module) -> torch.Tensor:
    """``reduce(relu(concatenation of the collected maps))``, for a ``reduce`` that starts
    with a 1x1 conv (``conv_bn_relu``, or its BatchNorm folded into the conv's bias),
    as the original computes its ``pre_clf`` input.

    Computed part by part: ReLU acts per channel, and a 1x1 conv of a concatenation is
    the sum of 1x1 convs of its parts (the same terms, summed in another order), so the
    concatenated copy and the split of its gradient are never made (measured 3 % of a
    WACV decoder training step, AMD EPYC held to AVX2).
    """
    parts = collected_parts(feats, indices)
    conv = reduce[0] if isinstance(reduce, nn.Sequential) else None
    if not (isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.stride == (1, 1)
            and conv.padding == (0, 0) and conv.groups == 1):   # not a 1x1 conv first: as the original
        return reduce(F.relu(torch.cat(parts, dim=1)))
    out, start = None, 0
    for part in parts:
        c = part.shape[1]
        y = F.conv2d(F.relu(part), conv.weight[:, start:start + c], conv.bias if out is None else None)
        out, start = (y if out is None else out + y), start + c
    for module in list(reduce)[1:]:
        out = module(out)
    return out


class CVPRDecoder(nn.Module):
    """Decoder of the CVPR 2019 space.

    ``forward`` returns ``(logits, aux_logits)``; the auxiliary heads are only
    evaluated in training mode and when ``aux`` is true (an empty list otherwise,
    e.g. when their loss weight is 0). Logits are at the resolution of the largest
    collected map (stride 4 or 8 of the input).

    Unlike the original, the 1x1 "adapt" conv of an encoder output that no block
    reads is not computed (its parameters stay, so checkpoints and parameter
    counts are unchanged): the original computed it and dropped the result.
    """

    def __init__(self, genotype: CVPRGenotypeLike, in_channels: list[int], num_classes: int,
                 agg_size: int = 64, repeats: int = 2, aux_cell: bool = False):
        super().__init__()
        if len(in_channels) != genotype.num_pools:
            raise ValueError(f"genotype expects {genotype.num_pools} encoder outputs, "
                             f"encoder gives {len(in_channels)}")
        for k, c in enumerate(in_channels, start=1):
            self.add_module(f"adapt{k}", conv_bn_relu(c, agg_size, 1))
        self.connections = [(c.input_a, c.input_b) for c in genotype.connections]
        self.cells = nn.ModuleList()
        self.aux_clfs = nn.ModuleList()
        collect: list[int] = []
        for b, (i, j) in enumerate(self.connections):
            collect = [c for c in collect if c not in (i, j)]
            self.cells.append(MergeCell(genotype, agg_size, repeats))
            head = nn.Sequential()
            if aux_cell:
                head.add_module("aux_cell", ContextualCell(genotype, agg_size, repeats))
            head.add_module("aux_clf", conv3x3(agg_size, num_classes, bias=True))
            self.aux_clfs.append(head)
            collect.append(genotype.num_pools + b)
        self.collect = collect
        #: encoder outputs that some block reads (the others' adapt convs are skipped)
        self.read_inputs = frozenset(i for conn in self.connections for i in conn
                                     if i < genotype.num_pools)
        self.pre_clf = conv_bn_relu(agg_size * len(collect), agg_size, 1)
        self.conv_clf = conv3x3(agg_size, num_classes, bias=True)

    def forward(self, feats: list[torch.Tensor], aux: bool = True,
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        pool: list[torch.Tensor | None] = [
            getattr(self, f"adapt{k}")(f) if k - 1 in self.read_inputs else None
            for k, f in enumerate(feats, start=1)]
        aux_logits = []
        for cell, head, (i, j) in zip(self.cells, self.aux_clfs, self.connections):
            out = cell(pool[i], pool[j])
            pool.append(out)
            if self.training and aux:
                aux_logits.append(head(out))
        return self.conv_clf(reduce_collected(pool, self.collect, self.pre_clf)), aux_logits
