"""WACV 2020 decoder: three templates placed and repeated by a layer structure.

See ``../shared/spec/search-spaces.md`` ("WACV 2020 space"). Each layer's
modules are a flat list ``[op_a, op_b, aggregation] * repeats``; the list is
called ``layers`` here and ``_ops`` in the authors' checkpoints.

The genotype is a :class:`nasseg.spaces.wacv.WACVGenotype`, whose space builds
this decoder; the protocols below state what the decoder reads of it, so that
this module does not import the space back (no import cycle).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from .cvpr_decoder import reduce_collected
from .ops import AGG_OPS, OPS, conv3x3, conv_bn_relu


class TemplateLike(Protocol):
    """op_a and op_b on two inputs, joined by an aggregation."""
    @property
    def op_a(self) -> str: ...
    @property
    def op_b(self) -> str: ...
    @property
    def aggregation(self) -> str: ...


class TemplateLayerLike(Protocol):
    """A template applied ``repeats`` times with ``stride`` to two pool entries."""
    @property
    def input_a(self) -> int: ...
    @property
    def input_b(self) -> int: ...
    @property
    def template(self) -> int: ...
    @property
    def repeats(self) -> int: ...
    @property
    def stride(self) -> int: ...


class WACVGenotypeLike(Protocol):
    """The templates and the layer structure."""
    @property
    def templates(self) -> Sequence[TemplateLike]: ...
    @property
    def layers(self) -> Sequence[TemplateLayerLike]: ...
    @property
    def num_pools(self) -> int: ...


class TemplateDecoder(nn.Module):
    """Decoder of the WACV 2020 space; ``forward`` returns the logits.

    Logits are at the resolution of the largest collected map (stride 4 of the
    input for the published models; strided layers can make it coarser).
    """

    def __init__(self, genotype: WACVGenotypeLike, in_channels: list[int], num_classes: int,
                 agg_size: int = 64, repeats: int = 2):
        super().__init__()
        if len(in_channels) != genotype.num_pools:
            raise ValueError(f"genotype expects {genotype.num_pools} encoder outputs, "
                             f"encoder gives {len(in_channels)}")
        channels = list(in_channels)
        n_layers = len(genotype.layers)
        self.layers = nn.ModuleList()
        self.plan: list[tuple[int, int, int]] = []  # (input_a, input_b, repeats) per layer
        collect: list[int] = []
        for l, layer in enumerate(genotype.layers):
            tpl = genotype.templates[layer.template]
            # Early layers resize to the smaller input (they may downsample), later ones up.
            larger = l >= n_layers // 2
            mods = nn.ModuleList()
            for r in range(layer.repeats):
                if r == 0:
                    a_in, b_in = channels[layer.input_a], channels[layer.input_b]
                    a_out, b_out = a_in * layer.stride, b_in * layer.stride
                else:
                    # op a reads what op b read last time; op b the previous output.
                    a_in = a_out = b_in
                    b_in = b_out = agg_out
                mods.append(OPS[tpl.op_a](a_in, a_out, layer.stride, repeats))
                mods.append(OPS[tpl.op_b](b_in, b_out, layer.stride, repeats))
                agg_out = max(a_out, b_out)
                mods.append(AGG_OPS[tpl.aggregation](a_out, b_out, agg_out, larger))
            self.layers.append(mods)
            self.plan.append((layer.input_a, layer.input_b, layer.repeats))
            collect = [c for c in collect if c not in (layer.input_a, layer.input_b)]
            collect.append(genotype.num_pools + l)
            channels.append(agg_out)
        self.collect = collect
        self.pre_clf = conv_bn_relu(sum(channels[i] for i in collect), agg_size, 1)
        self.conv_clf = conv3x3(agg_size, num_classes, bias=True)

    def forward(self, feats: list[torch.Tensor], aux: bool = True) -> torch.Tensor:
        """The logits; ``aux`` is accepted for a uniform call (this decoder has no auxiliary heads)."""
        pool = list(feats)
        for mods, (a, b, reps) in zip(self.layers, self.plan):
            x, y = pool[a], pool[b]
            for r in range(reps):
                op_a, op_b, agg = mods[3 * r: 3 * r + 3]
                out = agg(op_a(x), op_b(y))
                x, y = y, out
            pool.append(out)
        return self.conv_clf(reduce_collected(pool, self.collect, self.pre_clf))
