"""Light-Weight RefineNet with a ResNet backbone (Nekrasov et al., BMVC 2018).

The distillation teacher of the papers (RefineNet-LW-152 trained on VOC).
Module names reproduce the authors' ``rf_lw152`` state-dict keys exactly, so
that their released checkpoint loads strictly:

    conv1, bn1, layer1..layer4 (torchvision-style bottlenecks, ``downsample.0/1``),
    p_ims1d2_outl{1..4}_dimred, adapt_stage{2..4}_b2_joint_varout_dimred,
    mflow_conv_g{1..4}_pool.0.{1..4}_outvar_dimred,
    mflow_conv_g{1..3}_b3_joint_varout_dimred, clf_conv

Input: RGB scaled to [0, 1], then ImageNet mean/std normalised (the authors'
``prepare_img`` and the search's ``NORMALISE_PARAMS``), i.e. what the search
feeds. Output: logits at 1/4 of the input resolution (the ``layer1`` grid).
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..serialization import safe_load
from .weights import WeightsError, check_state_dict, strip_module_prefix, unwrap_state_dict

_WEIGHTS_HINT = (
    "Download the authors' RefineNet-LW-152 PASCAL VOC checkpoint (the 'rf_lw152' / '152_voc' model "
    "linked from DrSleep/light-weight-refinenet and DrSleep/nas-segm-pytorch on GitHub; "
    "non-commercial licence) and point distillation.path at it")


def _conv1x1(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, bias=False)


class CRPBlock(nn.Module):
    """Chained residual pooling: ``n_stages`` x (5x5 max-pool -> 1x1 conv), each summed into the output."""

    def __init__(self, in_planes: int, out_planes: int, n_stages: int = 4):
        super().__init__()
        self.n_stages = n_stages
        for i in range(n_stages):
            # Names start with a digit ("1_outvar_dimred") as in the authors' checkpoint.
            self.add_module(f"{i + 1}_outvar_dimred", _conv1x1(in_planes if i == 0 else out_planes, out_planes))
        self.maxpool = nn.MaxPool2d(kernel_size=5, stride=1, padding=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top = x
        for i in range(self.n_stages):
            top = getattr(self, f"{i + 1}_outvar_dimred")(self.maxpool(top))
            x = top + x
        return x


class Bottleneck(nn.Module):
    """ResNet v1 bottleneck (stride on the 3x3 conv), key layout as torchvision's."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        # BN momentum 0.95 as in the teacher file (model_lw_v2.py); irrelevant in eval mode.
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=0.95)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, momentum=0.95)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4, momentum=0.95)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    # The authors upsample with nn.Upsample(bilinear, align_corners=True).
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=True)


class RefineNetLW(nn.Module):
    """ResNet bottleneck backbone + light-weight refinement; ``layers=(3, 8, 36, 3)`` is ResNet-152."""

    def __init__(self, num_classes: int, layers: Sequence[int] = (3, 8, 36, 3)):
        super().__init__()
        self.inplanes = 64
        self.do = nn.Dropout(p=0.5)
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        # Registration order follows the authors' so state-dict key order matches too.
        self.p_ims1d2_outl1_dimred = _conv1x1(2048, 512)
        self.mflow_conv_g1_pool = nn.Sequential(CRPBlock(512, 512, 4))
        self.mflow_conv_g1_b3_joint_varout_dimred = _conv1x1(512, 256)
        self.p_ims1d2_outl2_dimred = _conv1x1(1024, 256)
        self.adapt_stage2_b2_joint_varout_dimred = _conv1x1(256, 256)
        self.mflow_conv_g2_pool = nn.Sequential(CRPBlock(256, 256, 4))
        self.mflow_conv_g2_b3_joint_varout_dimred = _conv1x1(256, 256)
        self.p_ims1d2_outl3_dimred = _conv1x1(512, 256)
        self.adapt_stage3_b2_joint_varout_dimred = _conv1x1(256, 256)
        self.mflow_conv_g3_pool = nn.Sequential(CRPBlock(256, 256, 4))
        self.mflow_conv_g3_b3_joint_varout_dimred = _conv1x1(256, 256)
        self.p_ims1d2_outl4_dimred = _conv1x1(256, 256)
        self.adapt_stage4_b2_joint_varout_dimred = _conv1x1(256, 256)
        self.mflow_conv_g4_pool = nn.Sequential(CRPBlock(256, 256, 4))
        self.clf_conv = nn.Conv2d(256, num_classes, kernel_size=3, stride=1, padding=1, bias=True)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion))
        modules = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * Bottleneck.expansion
        modules += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        l1 = self.layer1(x)
        l2 = self.layer2(l1)
        l3 = self.layer3(l2)
        l4 = self.layer4(l3)
        # Dropout on the two deepest features, as in the teacher file (a no-op in eval mode).
        l4 = self.do(l4)
        l3 = self.do(l3)

        x4 = self.relu(self.p_ims1d2_outl1_dimred(l4))
        x4 = self.mflow_conv_g1_pool(x4)
        x4 = _up(self.mflow_conv_g1_b3_joint_varout_dimred(x4), l3)

        x3 = self.adapt_stage2_b2_joint_varout_dimred(self.p_ims1d2_outl2_dimred(l3))
        x3 = self.mflow_conv_g2_pool(F.relu(x3 + x4))
        x3 = _up(self.mflow_conv_g2_b3_joint_varout_dimred(x3), l2)

        x2 = self.adapt_stage3_b2_joint_varout_dimred(self.p_ims1d2_outl3_dimred(l2))
        x2 = self.mflow_conv_g3_pool(F.relu(x2 + x3))
        x2 = _up(self.mflow_conv_g3_b3_joint_varout_dimred(x2), l1)

        x1 = self.adapt_stage4_b2_joint_varout_dimred(self.p_ims1d2_outl4_dimred(l1))
        x1 = self.mflow_conv_g4_pool(F.relu(x1 + x2))
        return self.clf_conv(x1)


def load_refinenet_weights(model: RefineNetLW, path_or_state_dict: str | os.PathLike | Mapping) -> None:
    """Load the authors' ``rf_lw*`` weights into ``model``, strictly.

    Accepts a file path or a state dict, keys with or without ``module.``
    (DataParallel), possibly wrapped in a checkpoint dict. Anything that does
    not match raises :class:`WeightsError` listing missing, unexpected and
    mismatched keys; a silent partial load would give a useless teacher.
    ``num_batches_tracked`` may be absent (checkpoints from torch 0.4.0).
    """
    if isinstance(path_or_state_dict, Mapping):
        source, where = path_or_state_dict, "state dict"
    else:
        path = Path(path_or_state_dict)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: RefineNet-LW weights not found. {_WEIGHTS_HINT}.")
        where = str(path)
        source = safe_load(path, "RefineNet-LW weights file")
    if not isinstance(source, Mapping):
        raise WeightsError(f"{where}: expected a state dict, got {type(source).__name__}")
    mapped = strip_module_prefix(unwrap_state_dict(source))
    target = model.state_dict()
    check_state_dict(target, mapped,
                     f"{where} does not match RefineNet-LW (is it the authors' rf_lw152 file for "
                     f"{model.clf_conv.out_channels} classes?)",
                     optional=lambda k: k.endswith("num_batches_tracked"))
    for k in target:
        if k.endswith("num_batches_tracked") and k not in mapped:
            mapped[k] = target[k]
    model.load_state_dict(mapped, strict=True)
