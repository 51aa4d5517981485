"""What a worker computes once and keeps in memory for every architecture it trains.

* The encoder's initial weights (stage 2 of every architecture starts from them).
* Stage 1's training set: ``proxy.stage1.num_images`` augmented crops, passed once
  through the frozen encoder; their features (one tensor per encoder output, NHWC
  with ``channels_last``), their labels nearest-downsampled to the first encoder
  output (stride 4) and, when stage 1 distils, the teacher's logits.
* The validation set: the first ``proxy.val_num_images`` images and labels (whole
  batches of them with ``proxy.val_drop_last``, as the original's loader), and
  their encoder features (stage-1 validation runs the decoder on them).

:class:`Compute` holds the device, the mixed-precision setting and the memory format
that the evaluator shares.

Where we differ from the original (``populate_task0`` in ``src/engine/trainer.py`` of
DrSleep/nas-segm-pytorch): it computes the stage-1 features once per search with the
first sampled network's encoder, one image at a time; here each worker encodes in
batches of ``proxy.val_batch_size`` and also caches the validation features, and the
teacher's logits are kept in float16. The validation crops are checked for a pixel
to score (:class:`~nasseg.data.DataError` naming the split otherwise).
"""
from __future__ import annotations

import random
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ..data import DataError
from ..models.encoder import MobileNetV2Encoder
from ..spaces import get_space
from .config import ProxyConfig
from .data import ProxyData, downsample_labels
from .losses import IGNORE_INDEX


@dataclass(frozen=True)
class Compute:
    """Where and how tensors are computed: device, autocast dtype, memory format."""
    device: torch.device
    amp: bool
    amp_dtype: torch.dtype
    memory_format: torch.memory_format

    @classmethod
    def create(cls, device: str | torch.device, config: ProxyConfig,
               memory_format: torch.memory_format) -> Compute:
        """`memory_format`: see :func:`nasseg.search.kernels.memory_format`."""
        device = torch.device(device)
        amp = config.amp and device.type == "cuda"   # autocast is never used on CPU
        # bfloat16 needs no loss scaling; float16 (older GPUs) gets a GradScaler.
        dtype = torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16
        return cls(device, amp, dtype, memory_format)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def adam_kernel(self) -> dict[str, bool]:
        """Adam's implementation: fused (one kernel for all parameters: 1.9 against 6.6 ms a
        stage-2 step over the CVPR network's 2.4 M parameters, AMD EPYC, 2 threads) on CPU
        and CUDA, where torch has it; otherwise foreach. The same update."""
        return {"fused": True} if self.device.type in ("cpu", "cuda") else {"foreach": True}

    def autocast(self) -> AbstractContextManager[None]:
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp)

    def images(self, x: torch.Tensor) -> torch.Tensor:
        """A batch of images on the device, in the memory format."""
        return x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)


def load_samples(ds: Dataset, limit: int, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``limit`` samples of ``ds`` (named ``what`` in errors) stacked: images float
    N x 3 x H x W, labels uint8 N x H x W."""
    n = min(len(ds), limit)
    if n == 0:
        raise DataError(f"{what}: no samples to train or validate on")
    images, labels = zip(*(ds[i][:2] for i in range(n)))
    return torch.stack(images).contiguous(), torch.stack([torch.as_tensor(m) for m in labels]).to(torch.uint8)


class FeatureCache:
    """The encoder's initial state, stage 1's cached features and the validation set, on one device."""

    def __init__(self, space: str, config: ProxyConfig, data: ProxyData, compute: Compute, *, seed: int,
                 encoder_state: dict[str, torch.Tensor] | None, teacher: nn.Module | None):
        self.config = config
        self.compute = compute
        torch.manual_seed(seed)  # a randomly initialised encoder is the same in every worker
        self.encoder = MobileNetV2Encoder(get_space(space).encoder_stages).to(compute.device).eval()
        if encoder_state is not None:
            self.encoder.load_state_dict(encoder_state)
        self.encoder_state = {k: v.detach().clone() for k, v in self.encoder.state_dict().items()}
        # The stage-1 crops are drawn once per search, reproducibly.
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        images, labels = load_samples(data.train_stage1, config.stage1.num_images, "stage 1's training set")
        self.s1_feats = self.encode(images)
        # As the original: stage-1 labels live at the first encoder output's resolution
        # (stride 4), nearest-downsampled once.
        self.s1_labels = downsample_labels(labels, self.s1_feats[0].shape[-2:]).to(compute.device)
        self.s1_teacher: torch.Tensor | None = None
        if teacher is not None and 1 in config.distillation.stages:
            self.s1_teacher = self._teacher_logits(teacher, images)
        n_val = config.val_images_scored(len(data.val))
        if n_val == 0 and len(data.val) > 0:
            raise DataError(f"{data.val_source}: fewer meta-val images ({len(data.val)}) than "
                            f"proxy.val_batch_size {config.val_batch_size}, and proxy.val_drop_last "
                            "drops incomplete batches: lower proxy.val_batch_size or set val_drop_last: false")
        self.val_images, self.val_labels = load_samples(data.val, n_val, data.val_source)
        scored = self.val_labels < data.num_classes
        for c in config.omit_classes:
            scored &= self.val_labels != c
        if not bool(scored.any()):
            raise DataError(f"{data.val_source}: no pixel of a scored class is left in the validation "
                            f"crops (only {IGNORE_INDEX} = ignore or proxy.omit_classes); raise "
                            "data.val_crop_size or proxy.val_num_images")
        self.val_feats = self.encode(self.val_images)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features of ``images`` (in batches), one float32 tensor per encoder output."""
        outs: list[list[torch.Tensor]] = []
        bs = self.config.val_batch_size
        for i in range(0, len(images), bs):
            with self.compute.autocast():
                outs.append([f.float() for f in self.encoder(self.compute.images(images[i:i + bs]))])
        return [torch.cat(level).contiguous(memory_format=self.compute.memory_format) for level in zip(*outs)]

    @torch.no_grad()
    def _teacher_logits(self, teacher: nn.Module, images: torch.Tensor) -> torch.Tensor:
        bs = self.config.val_batch_size
        return torch.cat([teacher(images[i:i + bs].to(self.compute.device)).to(torch.float16)
                          for i in range(0, len(images), bs)])
