"""The configuration of a full training run: section ``train.<experiment>.<dataset>.<preset>``.

:class:`TrainConfig` holds every setting the papers' full trainings need (epochs,
batch, crops and scales, the encoder's and decoder's optimisers, poly decay,
auxiliary loss, decoder size, encoder initialisation, mixed precision, seeds,
validation) and those this re-implementation adds (resumable checkpoints every
``checkpoint_every_steps``, BatchNorm handling across processes, determinism).

The authors released no training code; the ``paper`` presets of params.yaml say,
value by value, where each one comes from (the papers, the authors' search
settings in ``src/utils/default_args.py`` and ``examples/search/search_wacv.sh``
of DrSleep/nas-segm-pytorch, or the first author's Light-Weight RefineNet and
DenseTorch configurations) and which values no available source states.

Settings that change the result are in :meth:`TrainConfig.fingerprint`; those that
do not (loader workers, checkpoint frequency, progress reporting, the device) may
change when a run resumes.
"""
from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, model_validator

from ..config import Config

__all__ = ["TrainConfig", "Optimiser", "BatchNormMode"]

Optimiser = Literal["sgd", "adam"]
#: sync: statistics over the whole global batch (torch's SyncBatchNorm on CUDA, an
#: all-reduce of the statistics on CPU, see :mod:`.distributed`); local: each process's
#: own; frozen: running statistics fixed (BatchNorm in eval mode), as the authors'
#: ``FREEZE_BN`` option.
BatchNormMode = Literal["sync", "local", "frozen"]

#: Keys that do not change what is computed, so a run may resume with other values.
NOT_IN_FINGERPRINT = frozenset({"num_workers", "checkpoint_every_steps", "log_every_steps", "device"})


class TrainConfig(Config):
    """One preset of ``train.<experiment>.<dataset>``."""
    # what is trained: segmentation, or depth (NYUD; one output channel); null: the dataset's
    # own task (meta.json)
    task: Literal["segmentation", "depth"] | None = None
    train_split: str = "train"
    val_split: str = "val"

    # schedule and batches
    epochs: int = Field(default=100, ge=1)
    batch_size: int = Field(default=16, ge=2)          # the global batch, split across processes
    # training augmentation (nasseg.data.transforms.AugmentParams)
    crop_size: int = Field(default=512, gt=0)
    resize_side: int = Field(default=1024, gt=0)
    scale_range: tuple[PositiveFloat, PositiveFloat] = (0.7, 1.4)
    resize_longer: bool = False                         # resize_side bounds the longer side
    # how images are resized and cropped (nasseg.data.transforms): torchvision (antialiased
    # bicubic, padded crops) | authors (cv2 INTER_CUBIC, crops without padding)
    transforms: Literal["torchvision", "authors"] = "torchvision"

    # optimisers: one for the encoder, one for the decoder; momentum is SGD's momentum or
    # Adam's beta1; the learning rates decay as (1 - step / steps)^lr_power over all steps
    enc_optim: Optimiser = "sgd"
    enc_lr: float = Field(default=1e-3, ge=0)
    enc_momentum: float = Field(default=0.9, ge=0, lt=1)
    enc_weight_decay: float = Field(default=1e-5, ge=0)
    dec_optim: Optimiser = "adam"
    dec_lr: float = Field(default=3e-3, ge=0)
    dec_momentum: float = Field(default=0.9, ge=0, lt=1)
    dec_weight_decay: float = Field(default=0.0, ge=0)
    lr_power: float = Field(default=0.9, ge=0)
    grad_clip: float = Field(default=0.0, ge=0)         # max gradient norm per encoder/decoder; 0: off

    # network
    agg_size: int = Field(default=64, gt=0)             # released models: 64
    repeats: int = Field(default=2, gt=0)               # released models: 2
    aux_cell: bool = False                              # CVPR space only
    aux_weight: float = Field(default=0.0, ge=0)        # CVPR auxiliary heads; 0: not run
    # imagenet (torchvision's MobileNet-v2) | none (random) | a file (the authors'
    # mbv2_voc_rflw.ckpt, an encoder state dict, or torchvision's layout)
    encoder_weights: str = "imagenet"
    bn: BatchNormMode = "sync"
    depth_loss: Literal["berhu", "l1"] = "berhu"

    # validation (nasseg.evaluation.evaluate); val_resize_side and val_crop_size null: the
    # whole image at the prepared resolution, scored there (the papers' protocol)
    val_every: int = Field(default=1, ge=1)             # epochs; the last epoch always validates
    val_resize_side: int | None = Field(default=None, gt=0)
    val_crop_size: int | None = Field(default=None, gt=0)
    val_batch_size: int = Field(default=1, ge=1)        # images of one size are batched together
    val_num_images: int | None = Field(default=None, ge=1)   # null: the whole split
    val_flip: bool = False
    val_scales: tuple[PositiveFloat, ...] = Field(default=(1.0,), min_length=1)
    # classes left out of the averaged scores (the authors' validate leaves out class 0)
    omit_classes: tuple[NonNegativeInt, ...] = ()

    # computation
    amp: bool = False                                   # mixed precision, CUDA only
    channels_last: bool = False                         # NHWC activations
    deterministic: bool = True                          # deterministic algorithms (CUDA: slower)
    device: Literal["auto", "cpu", "cuda"] = "auto"     # auto: CUDA when available
    # processes of one training (DDP): the pipeline starts the stage through torchrun when > 1,
    # and asks for that many GPUs when the device is cuda
    processes: int = Field(default=1, ge=1, le=64)
    seed: int = 0
    num_workers: int = Field(default=2, ge=0)           # data-loading processes per training process
    checkpoint_every_steps: int = Field(default=0, ge=0)   # 0: at epoch ends only
    log_every_steps: int = Field(default=10, ge=1)      # progress-bar loss refresh

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        lo, hi = self.scale_range
        if lo > hi:
            raise ValueError(f"scale_range must be [low, high] with low <= high, got {list(self.scale_range)}")
        if self.val_crop_size is not None and self.val_resize_side is None:
            raise ValueError("val_crop_size needs val_resize_side (the crop is taken after that resize); "
                             "set both, or both null for whole images")
        if len(set(self.omit_classes)) != len(self.omit_classes):
            raise ValueError(f"omit_classes lists a class twice: {list(self.omit_classes)}")
        return self

    @property
    def whole_val_images(self) -> bool:
        """Validation on whole images at the prepared resolution (no resize, no crop)."""
        return self.val_resize_side is None

    def fingerprint(self) -> str:
        """Hash of the settings a run must keep to resume (not workers, checkpoints, device)."""
        d = self.model_dump(mode="json", exclude=set(NOT_IN_FINGERPRINT))
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
