"""Initial encoder weights and distillation teachers for the proxy training.

Teachers return logits at a quarter of the input resolution (where the
students' decoders work), so that cached stage-1 teacher outputs stay small.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..genotypes import genotype_from_dict
from ..models import PretrainedWeightsUnavailable, build_segmenter, load_imagenet_encoder
from ..models.encoder import MobileNetV2Encoder
from ..models.weights import load_encoder_file
from ..serialization import safe_load
from ..spaces import get_space
from .config import DistillationConfig


def load_encoder_state(space: str, weights: str) -> dict[str, torch.Tensor] | None:
    """The search encoder's initial state (``proxy.encoder_weights``).

    ``imagenet``: torchvision's ImageNet MobileNet-v2; ``none``: random init (None);
    anything else is a file: the authors' ``mbv2_voc_rflw.ckpt`` (what their search
    starts both spaces from), this encoder's own state dict, or torchvision's layout
    (:func:`nasseg.models.weights.load_encoder_file`).
    """
    if weights == "none":
        return None
    encoder = MobileNetV2Encoder(get_space(space).encoder_stages)
    if weights == "imagenet":
        load_imagenet_encoder(encoder)
    else:
        load_encoder_file(encoder, Path(weights))
    return encoder.state_dict()


class _QuarterResolution(nn.Module):
    """Wrap a model so that it returns main logits at 1/4 of the input size."""

    def __init__(self, model: nn.Module, pick: Any):
        super().__init__()
        self.model = model
        self.pick = pick
        self.eval()  # a teacher never trains: BatchNorm statistics stay frozen

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pick(self.model(x))
        size = (max(1, x.shape[-2] // 4), max(1, x.shape[-1] // 4))
        return F.interpolate(out.float(), size=size, mode="bilinear", align_corners=False)


def load_pipeline_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """A model trained by this pipeline: ``{"genotype", "num_classes", "agg_size", "repeats", "state_dict"}``."""
    path = Path(path)
    ckpt = safe_load(path, "teacher checkpoint")
    missing = [k for k in ("genotype", "num_classes", "state_dict") if k not in ckpt]
    if missing:
        raise ValueError(f"{path}: not a nasseg checkpoint (missing {', '.join(missing)})")
    model = build_segmenter(genotype_from_dict(ckpt["genotype"]), ckpt["num_classes"],
                            agg_size=ckpt.get("agg_size", 64), repeats=ckpt.get("repeats", 2),
                            aux_cell=ckpt.get("aux_cell", False))
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval()


def load_teacher(config: DistillationConfig, num_classes: int, device: str | torch.device) -> nn.Module | None:
    """The configured teacher on ``device``, or None when distillation is off.

    ``refinenet_lw152`` (the papers' teacher) expects RGB/255 normalised with the
    ImageNet mean/std (the authors' ``prepare_img``), the same input the search feeds.
    """
    if config.teacher == "none":
        return None
    if config.teacher == "checkpoint":
        model = load_pipeline_checkpoint(config.path, device)
        if model.decoder.conv_clf.out_channels != num_classes:
            raise ValueError(f"{config.path}: teacher has {model.decoder.conv_clf.out_channels} classes, "
                             f"the data {num_classes}")
        return _QuarterResolution(model, lambda out: out)   # in eval mode: the logits
    if config.teacher == "torchvision_deeplabv3":
        if num_classes != 21:
            raise ValueError("teacher torchvision_deeplabv3 predicts the 21 VOC classes; "
                             f"the data has {num_classes}: use teacher: checkpoint instead")
        from torchvision.models.segmentation import DeepLabV3_ResNet101_Weights, deeplabv3_resnet101
        try:
            model = deeplabv3_resnet101(weights=DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1)
        except Exception as exc:
            cache = Path(torch.hub.get_dir()) / "checkpoints"
            raise PretrainedWeightsUnavailable(
                f"could not load torchvision's DeepLabV3-ResNet101 weights ({exc}); put "
                f"deeplabv3_resnet101_coco-586e9e4e.pth in {cache}, or set distillation.teacher: none") from exc
        return _QuarterResolution(model.to(device), lambda out: out["out"])
    if config.teacher == "refinenet_lw152":
        # Logits are natively at 1/4 resolution: the wrapper's resize is a no-op for sizes divisible by 4.
        from ..models.refinenet import RefineNetLW, load_refinenet_weights
        model = RefineNetLW(num_classes, layers=(3, 8, 36, 3))
        load_refinenet_weights(model, config.path)
        return _QuarterResolution(model.to(device), lambda out: out)
    raise ValueError(f"unknown teacher {config.teacher!r}")
