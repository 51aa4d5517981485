"""The configuration of proxy training: one frozen pydantic model per params.yaml sub-section.

``search.<experiment>.<preset>.proxy`` is a :class:`ProxyConfig`; ``...data`` a
:class:`SearchDataConfig`. The defaults are the authors' CVPR search
(``src/utils/default_args.py`` of DrSleep/nas-segm-pytorch: the first entry of each
per-task list for stage 1, the second for stage 2); the ``paper`` presets of
params.yaml state every value explicitly, the WACV one from the authors'
``examples/search/search_wacv.sh``.

Where we differ from the original, by design:

* the authors' per-task argument lists (``--dec-lr 7e-3 2e-3``) become one section per
  stage; Polyak decays (hard-coded 0.9 / 0.99 in their ``main_search.py``) and the
  early-stopping constants (hard-coded in their ``TaskPerformer``) are parameters;
* distillation can also run in stage 2 (``distillation.stages``; the original
  distils in stage 1 only, which stays the default);
* mixed precision is an option (``amp``, CUDA only; off by default: the original
  trains in fp32);
* ``encoder_weights`` can be ``none`` (random encoder), for offline runs on the
  synthetic stand-ins.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from ..config import Config


class StageOneConfig(Config):
    """Decoder-only training on cached encoder features (the original's "task0")."""
    epochs: int = Field(default=5, ge=0)
    batch_size: int = Field(default=64, gt=0)
    crop_size: int = Field(default=256, gt=0)
    resize_side: int = Field(default=300, gt=0)
    num_images: int = Field(default=4000, gt=0)
    lr: float = Field(default=3e-3, ge=0)
    # Adam's weight decay on the decoder (the original's DEC_WD[0], 1e-5 since its commit 1cc6067)
    dec_weight_decay: float = Field(default=1e-5, ge=0)
    grad_clip: float = Field(default=3.0, ge=0)
    polyak_decay: float = Field(default=0.9, ge=0, le=1)
    val_every: int = Field(default=5, gt=0)


class StageTwoConfig(Config):
    """Whole-network training (the original's "task1")."""
    epochs: int = Field(default=1, ge=0)
    batch_size: int = Field(default=32, gt=0)
    crop_size: int = Field(default=350, gt=0)
    resize_side: int = Field(default=400, gt=0)
    enc_optim: Literal["sgd", "adam"] = "sgd"
    enc_lr: float = Field(default=1e-3, ge=0)
    enc_momentum: float = Field(default=0.9, ge=0)
    dec_lr: float = Field(default=3e-3, ge=0)
    enc_weight_decay: float = Field(default=1e-5, ge=0)    # the original's ENC_WD[1]
    dec_weight_decay: float = Field(default=1e-5, ge=0)    # the original's DEC_WD[1]
    grad_clip: float = Field(default=3.0, ge=0)
    polyak_decay: float = Field(default=0.99, ge=0, le=1)
    val_every: int = Field(default=1, gt=0)


class EarlyStoppingConfig(Config):
    """Progressive early stopping (see :mod:`nasseg.search.early_stopping`).

    ``schedule`` maps a tracker's step count, counted as the original counts it,
    to the factor that shrinks ``delta`` at that step.
    """
    enabled: bool = True
    init: float = 0.01
    decay: float = Field(default=0.99, ge=0, le=1)
    delta: float = Field(default=0.9, ge=0, le=1)
    schedule: dict[int, float] = Field(default_factory=lambda: {100: 0.9, 200: 0.8, 300: 0.7, 400: 0.6})


class DistillationConfig(Config):
    """Knowledge distillation: MSE between student and teacher logits."""
    # refinenet_lw152 is the papers' teacher; it and checkpoint need `path`
    teacher: Literal["none", "torchvision_deeplabv3", "checkpoint", "refinenet_lw152"] = "none"
    weight: float = Field(default=0.3, ge=0)
    path: str | None = None        # checkpoint (teacher: checkpoint) or the authors' rf_lw152 weights file
    # the stages that distil: the original distils in stage 1 only (on cached teacher outputs)
    stages: tuple[Literal[1, 2], ...] = Field(default=(1,), min_length=1)

    @model_validator(mode="after")
    def _teacher_has_weights(self) -> DistillationConfig:
        if self.teacher == "checkpoint" and not self.path:
            raise ValueError("teacher: checkpoint needs 'path' to a checkpoint file")
        if self.teacher == "refinenet_lw152" and not self.path:
            raise ValueError("teacher: refinenet_lw152 needs 'path' to the authors' RefineNet-LW-152 weights file")
        if len(set(self.stages)) != len(self.stages):
            raise ValueError(f"stages lists a stage twice: {list(self.stages)}; use [1], [2] or [1, 2]")
        return self


class ProxyConfig(Config):
    """Everything that decides how one architecture is trained and scored."""
    agg_size: int = Field(default=48, gt=0)
    repeats: int = Field(default=1, gt=0)
    aux_cell: bool = True
    aux_weight: float = Field(default=0.15, ge=0)
    encoder_weights: str = "imagenet"   # imagenet | none | a file (models.weights.load_encoder_file)
    stage1: StageOneConfig = Field(default_factory=StageOneConfig)
    stage2: StageTwoConfig = Field(default_factory=StageTwoConfig)
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    distillation: DistillationConfig = Field(default_factory=DistillationConfig)
    val_batch_size: int = Field(default=16, gt=0)
    val_num_images: int = Field(default=500, gt=0)
    # score only whole batches of val_batch_size (the first val_num_images images, cut down to
    # a multiple of the batch): the original's validation loader has drop_last=True
    val_drop_last: bool = False
    omit_classes: tuple[NonNegativeInt, ...] = ()
    failure_reward: float = 0.0
    amp: bool = False                    # mixed precision, CUDA only (the original trains in fp32)
    #: NHWC (true) or NCHW (false) activations with plain kernels; auto: the faster
    #: format, and for each depthwise conv's input shape the faster of oneDNN, sub-grids
    #: and this project's loops, on this machine, measured once and cached (nasseg.search.kernels)
    channels_last: bool | Literal["auto"] = "auto"
    flops_input: tuple[PositiveInt, PositiveInt] = (512, 1024)

    def val_images_scored(self, available: int) -> int:
        """How many of ``available`` meta-val images the reward scores: the first
        ``val_num_images``, cut down to whole batches with ``val_drop_last``."""
        n = min(available, self.val_num_images)
        return n - n % self.val_batch_size if self.val_drop_last else n


class SearchDataConfig(Config):
    """Which prepared splits the search reads, and their transforms."""
    train_split: str = "train"
    val_split: str = "val"
    meta_train_fraction: float = Field(default=0.9, gt=0, lt=1)   # used when train_split == val_split
    resize_longer: bool = False        # resize sides (per stage) bound the longer side
    scale_range: tuple[PositiveFloat, PositiveFloat] = (0.7, 1.4)
    val_resize_side: int = Field(default=1024, gt=0)
    val_crop_size: int | None = Field(default=None, gt=0)
    # how images are resized and cropped (nasseg.data.transforms): authors (cv2 INTER_CUBIC,
    # no antialiasing, crops without padding, as src/data/datasets.py) | torchvision
    # (antialiased bicubic, padded crops)
    transforms: Literal["torchvision", "authors"] = "torchvision"
    loader_workers: int = Field(default=0, ge=0)
    # with loader_workers 0: keep up to this many MiB of decoded stage-2 images in memory
    # (the transforms still run each epoch); 0: decode from disk every epoch
    keep_decoded_mb: int = Field(default=1024, ge=0)
