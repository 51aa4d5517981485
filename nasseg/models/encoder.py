"""MobileNet-v2 (width 1.0) encoder returning the outputs of chosen stages.

Encoder contract (as in segmentation_models_pytorch): ``out_channels`` lists the
channels of the returned maps, and ``forward`` returns that list of maps.

Module names (``layer1`` for the stem, ``layer{s+2}`` for stage s, each block's
``conv`` Sequential) follow the authors' checkpoints. Unlike torchvision's
MobileNetV2, the t=1 block keeps its 1x1 expansion conv; :func:`imagenet_state_dict`
maps torchvision's ImageNet weights onto this layout losslessly.
"""
from __future__ import annotations

import torch
from torch import nn

from .ops import DepthwiseConv2d

# Stages as (expansion t, out channels c, blocks n, first stride s).
MOBILENET_V2_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32


class InvertedResidual(nn.Module):
    """1x1 expand -> BN -> ReLU6 -> 3x3 depthwise -> BN -> ReLU6 -> 1x1 project -> BN (+ input)."""

    def __init__(self, c_in: int, c_out: int, stride: int, expansion: int):
        super().__init__()
        hidden = c_in * expansion
        self.use_residual = stride == 1 and c_in == c_out
        self.conv = nn.Sequential(
            nn.Conv2d(c_in, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            # an nn.Conv2d whose implementation can be chosen per input shape (the proxy
            # training measures which is fastest: nasseg.search.kernels)
            DepthwiseConv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2Encoder(nn.Module):
    """MobileNet-v2 truncated after the last returned stage."""

    def __init__(self, return_stages: tuple[int, ...]):
        super().__init__()
        if not return_stages or list(return_stages) != sorted(set(return_stages)):
            raise ValueError(f"return_stages must be increasing stage indices, got {return_stages}")
        if return_stages[-1] >= len(MOBILENET_V2_STAGES) or return_stages[0] < 0:
            raise ValueError(f"return_stages must lie in [0, {len(MOBILENET_V2_STAGES)})")
        self.return_stages = tuple(return_stages)
        self.out_channels = [MOBILENET_V2_STAGES[s][1] for s in self.return_stages]
        self.layer1 = nn.Sequential(
            nn.Conv2d(3, STEM_CHANNELS, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(STEM_CHANNELS),
            nn.ReLU6(inplace=True),
        )
        c_in = STEM_CHANNELS
        for stage, (t, c, n, s) in enumerate(MOBILENET_V2_STAGES[: self.return_stages[-1] + 1]):
            blocks = [InvertedResidual(c_in if i == 0 else c, c, s if i == 0 else 1, t) for i in range(n)]
            self.add_module(f"layer{stage + 2}", nn.Sequential(*blocks))
            c_in = c

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.layer1(x)
        outs = []
        for stage in range(self.return_stages[-1] + 1):
            x = getattr(self, f"layer{stage + 2}")(x)
            if stage in self.return_stages:
                outs.append(x)
        return outs


def imagenet_state_dict(torchvision_state: dict[str, torch.Tensor],
                        encoder: MobileNetV2Encoder) -> dict[str, torch.Tensor]:
    """Map torchvision ``mobilenet_v2`` weights onto ``encoder``'s state-dict keys.

    torchvision numbers blocks globally (``features.k``) and drops the 1x1
    expansion conv of the t=1 block; here it is set to an identity conv with a
    pass-through BN (running_var = 1 - eps), exact in eval mode and lossless
    since the ReLU6 after it sees the stem's ReLU6 output.
    """
    tv = torchvision_state
    out: dict[str, torch.Tensor] = {}

    def take(dst: str, src: str) -> None:
        for suffix in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            key = f"{src}.{suffix}"
            if key in tv:
                out[f"{dst}.{suffix}"] = tv[key].clone()

    take("layer1.0", "features.0.0")
    take("layer1.1", "features.0.1")
    feature = 1
    for stage, (t, _c, n, _s) in enumerate(MOBILENET_V2_STAGES[: encoder.return_stages[-1] + 1]):
        for block in range(n):
            dst = f"layer{stage + 2}.{block}.conv"
            src = f"features.{feature}.conv"
            if t == 1:
                hidden = STEM_CHANNELS
                bn = getattr(encoder, f"layer{stage + 2}")[block].conv[1]
                out[f"{dst}.0.weight"] = torch.eye(hidden).reshape(hidden, hidden, 1, 1)
                out[f"{dst}.1.weight"] = torch.ones(hidden)
                out[f"{dst}.1.bias"] = torch.zeros(hidden)
                out[f"{dst}.1.running_mean"] = torch.zeros(hidden)
                out[f"{dst}.1.running_var"] = torch.full((hidden,), 1.0 - bn.eps)
                out[f"{dst}.1.num_batches_tracked"] = torch.tensor(0)
                take(f"{dst}.3", f"{src}.0.0")
                take(f"{dst}.4", f"{src}.0.1")
                take(f"{dst}.6", f"{src}.1")
                take(f"{dst}.7", f"{src}.2")
            else:
                take(f"{dst}.0", f"{src}.0.0")
                take(f"{dst}.1", f"{src}.0.1")
                take(f"{dst}.3", f"{src}.1.0")
                take(f"{dst}.4", f"{src}.1.1")
                take(f"{dst}.6", f"{src}.2")
                take(f"{dst}.7", f"{src}.3")
            feature += 1
    return out
