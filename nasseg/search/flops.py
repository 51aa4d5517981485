"""FLOPs of a candidate network, recorded with every architecture of the search.

The original records only the parameter count (``compute_params``); the FLOPs of one
eval-mode forward pass at ``proxy.flops_input`` (height, width) are ours, counted by
PyTorch's ``FlopCounterMode`` on the meta device: no memory is allocated and nothing
is computed, so counting costs milliseconds even at CityScapes resolution.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def estimate_flops(model: nn.Module, input_hw: Sequence[int]) -> int:
    """FLOPs (2 per multiply-add) of one eval-mode forward of a 1x3xHxW input."""
    meta = copy.deepcopy(model).to("meta").eval()
    x = torch.empty(1, 3, *input_hw, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(x)
    return int(counter.get_total_flops())
