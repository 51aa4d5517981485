"""Segmenter = MobileNet-v2 encoder + searched decoder, and its builder.

The genotype's search space (:mod:`nasseg.spaces`) says which encoder stages to
return and builds the decoder; this module knows no space by name.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..spaces import SPACES, space_of
from ..spaces.base import Genotype
from .encoder import MobileNetV2Encoder


class TrainOutput(NamedTuple):
    """What a segmenter returns while its decoder trains.

    ``logits``: the main logits at decoder resolution. ``aux_logits``: the CVPR
    auxiliary heads' logits, one map per decoder block at that block's
    resolution (empty for the WACV space, which has no auxiliary heads).
    """
    logits: torch.Tensor
    aux_logits: tuple[torch.Tensor, ...]


class Segmenter(nn.Module):
    """Encoder + decoder, with the state-dict layout ``encoder.*`` / ``decoder.*``.

    The output's type follows the decoder's mode (``model.train()`` /
    ``model.eval()`` set it; the search's stage 1 trains the decoder alone):

    * eval mode: a tensor, the main logits **at decoder resolution**, as the
      original: that of the largest map the decoder collects (stride 4 of the
      input for cvpr arch0 and both wacv models, 8 for cvpr arch1/arch2).
      Upsample them to the label size outside the model.
    * train mode: a :class:`TrainOutput` ``(logits, aux_logits)``, in both spaces.

    The original returned ``(logits, aux)`` from CVPR decoders in both modes and a
    bare tensor from WACV decoders; callers tested the type.
    """

    def __init__(self, genotype: Genotype, encoder: MobileNetV2Encoder, decoder: nn.Module):
        super().__init__()
        self.genotype = genotype
        self.encoder = encoder
        self.decoder = decoder

    @property
    def space(self) -> str:
        return self.genotype.space

    def forward(self, x: torch.Tensor, aux: bool = True) -> TrainOutput | torch.Tensor:
        """Logits (see the class docstring); ``aux=False`` skips the auxiliary heads in
        train mode (``aux_logits`` is then empty), e.g. when their loss weight is 0."""
        return self.decode(self.encoder(x), aux)

    def decode(self, feats: list[torch.Tensor], aux: bool = True) -> TrainOutput | torch.Tensor:
        """The decoder alone, on encoder features (e.g. cached ones); output as :meth:`forward`."""
        out = self.decoder(feats, aux)
        # The CVPR decoder returns (logits, aux); the WACV decoder the logits alone.
        logits, aux = out if isinstance(out, tuple) else (out, [])
        return TrainOutput(logits, tuple(aux)) if self.decoder.training else logits


def build_segmenter(genotype: Genotype, num_classes: int, *, agg_size: int = 64,
                    repeats: int = 2, aux_cell: bool = False) -> Segmenter:
    """Build the network that ``genotype`` describes.

    Released models use ``agg_size=64, repeats=2, aux_cell=False``; the CVPR
    search used ``agg_size=48, repeats=1, aux_cell=True``. ``aux_cell`` only
    exists in spaces with ``has_aux_cell`` (CVPR).
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    space = space_of(genotype)
    if aux_cell and not space.has_aux_cell:
        with_aux = ", ".join(name for name, s in SPACES.items() if s.has_aux_cell)
        raise ValueError(f"aux_cell exists only in spaces with auxiliary cells ({with_aux}); "
                         f"the {space.name} decoder has none")
    encoder = MobileNetV2Encoder(space.encoder_stages)
    decoder = space.build_decoder(genotype, encoder.out_channels, num_classes,
                                  agg_size=agg_size, repeats=repeats, aux_cell=aux_cell)
    return Segmenter(genotype, encoder, decoder)


def count_parameters(model: nn.Module, *, include_aux: bool = True) -> int:
    """Number of parameters; ``include_aux=False`` leaves out the auxiliary heads."""
    return sum(p.numel() for name, p in model.named_parameters()
               if include_aux or ".aux_clfs." not in f".{name}")
