"""Proxy training of one sampled architecture: what one search step costs.

Following the papers (see the spec, "Proxy training and reward"):

* **Stage 1** trains only the decoder, for a few epochs, on encoder features
  computed once per worker for a bounded number of training crops and kept in
  memory as contiguous tensors (the encoder is frozen in this stage, so every
  architecture reuses them); then it is validated on cached validation features.
* **Stage 2** trains the whole network (encoder restored from an in-memory copy
  of its initial weights, never re-read from disk) and validates after every
  epoch.
* The training loss is computed, as in the original, at the decoder's
  resolution: targets are nearest-downsampled to stride 4 (stage 1) or to the
  output size (stage 2); validation scores full-resolution predictions.
* Polyak averaging of the trained weights, written back after every epoch;
  auxiliary loss for the CVPR space; optional distillation from a teacher.
* **Progressive early stopping** after each validation (:class:`EarlyStopping`).

The reward is :func:`nasseg.metrics.segmentation_scores`' geometric mean of
mIoU, mean accuracy and FW-IoU on the held-out split.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import random
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeInt, PositiveInt, model_validator
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..config import Config
from ..genotypes import Genotype
from ..metrics import ConfusionMatrix
from ..models import build_segmenter, count_parameters
from ..models.encoder import RETURN_STAGES, MobileNetV2Encoder
from ..models.ops import resize_to

IGNORE_INDEX = 255


# ---------------------------------------------------------------------------
# Configuration (one frozen model per params.yaml sub-section)
# ---------------------------------------------------------------------------

class StageOneConfig(Config):
    """Decoder-only training on cached encoder features ("task0")."""
    epochs: int = Field(default=5, ge=0)
    batch_size: int = Field(default=64, gt=0)
    crop_size: int = Field(default=256, gt=0)
    resize_side: int = Field(default=300, gt=0)
    num_images: int = Field(default=4000, gt=0)
    lr: float = Field(default=3e-3, ge=0)
    grad_clip: float = Field(default=3.0, ge=0)
    polyak_decay: float = Field(default=0.9, ge=0, le=1)
    val_every: int = Field(default=5, gt=0)


class StageTwoConfig(Config):
    """Whole-network training ("task1")."""
    epochs: int = Field(default=1, ge=0)
    batch_size: int = Field(default=32, gt=0)
    crop_size: int = Field(default=350, gt=0)
    resize_side: int = Field(default=400, gt=0)
    enc_optim: Literal["sgd", "adam"] = "sgd"
    enc_lr: float = Field(default=1e-3, ge=0)
    enc_momentum: float = Field(default=0.9, ge=0)
    dec_lr: float = Field(default=3e-3, ge=0)
    enc_weight_decay: float = Field(default=1e-5, ge=0)
    dec_weight_decay: float = Field(default=0.0, ge=0)     # the original's decoder had none
    grad_clip: float = Field(default=3.0, ge=0)
    polyak_decay: float = Field(default=0.99, ge=0, le=1)
    val_every: int = Field(default=1, gt=0)


class EarlyStoppingConfig(Config):
    """Progressive early stopping; ``schedule`` maps step count -> delta multiplier."""
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

    @model_validator(mode="after")
    def _teacher_has_weights(self) -> DistillationConfig:
        if self.teacher == "checkpoint" and not self.path:
            raise ValueError("teacher: checkpoint needs 'path' to a checkpoint file")
        if self.teacher == "refinenet_lw152" and not self.path:
            raise ValueError("teacher: refinenet_lw152 needs 'path' to the authors' RefineNet-LW-152 weights file")
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
    omit_classes: tuple[NonNegativeInt, ...] = ()
    failure_reward: float = 0.0
    amp: bool = True                     # mixed precision on CUDA only
    channels_last: bool = True           # NHWC activations, on CPU and CUDA
    flops_input: tuple[PositiveInt, PositiveInt] = (512, 1024)


# ---------------------------------------------------------------------------
# Progressive early stopping
# ---------------------------------------------------------------------------

class EarlyStopping:
    """One running-average tracker per validation point (e.g. ``"s2e0"``).

    At each validation the running average m is updated with the new reward
    first; training goes on if reward > m, otherwise only if reward >
    m * (1 - U(0, delta)). delta shrinks by ``schedule[k]`` once k steps have
    been taken at that point. (The original also counted a step twice when the
    reward beat m; here every validation is one step.)

    The state is plain data, so the search can snapshot it, send it to a
    worker and replay the worker's validations in the main process.
    """

    def __init__(self, config: EarlyStoppingConfig, state: dict[str, dict] | None = None):
        self.config = config
        self.points: dict[str, dict] = copy.deepcopy(state) if state else {}

    def state_dict(self) -> dict[str, dict]:
        return copy.deepcopy(self.points)

    def record(self, point: str, reward: float) -> dict:
        """Update the tracker of ``point`` with ``reward``; return its new state."""
        p = self.points.setdefault(point, {"running": self.config.init, "delta": self.config.delta, "steps": 0})
        p["steps"] += 1
        p["delta"] *= self.config.schedule.get(p["steps"], 1.0)
        p["running"] = self.config.decay * p["running"] + (1.0 - self.config.decay) * reward
        return p

    def step(self, point: str, reward: float, rng: random.Random) -> bool:
        """Record ``reward`` at ``point``; return whether training continues."""
        p = self.record(point, reward)
        if not self.config.enabled or reward > p["running"]:
            return True
        return reward > p["running"] * (1.0 - rng.uniform(0.0, p["delta"]))


# ---------------------------------------------------------------------------
# Polyak averaging
# ---------------------------------------------------------------------------

class Polyak:
    """Exponential moving average of a module's parameters, copied back on demand."""

    def __init__(self, module: nn.Module, decay: float):
        self.decay = decay
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.average = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_mul_(self.average, self.decay)
        torch._foreach_add_(self.average, [p.detach() for p in self.params], alpha=1.0 - self.decay)

    @torch.no_grad()
    def write_back(self) -> None:
        torch._foreach_copy_(self.params, self.average)


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------

class NonFiniteLoss(FloatingPointError):
    """The training loss became NaN or infinite."""


@dataclass
class ArchResult:
    """What evaluating one architecture produced (also for failures)."""
    status: str                         # ok | early_stopped | oom | nan | error
    reward: float
    metrics: dict[str, float] = field(default_factory=dict)
    validations: list[tuple[str, float]] = field(default_factory=list)
    params: int | None = None
    flops: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def classify_failure(exc: BaseException) -> tuple[str, str]:
    """Map an exception to a (status, reason) pair for the history."""
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" (at {frame.filename.rsplit('/', 1)[-1]}:{frame.lineno})" if frame else ""
    text = f"{type(exc).__name__}: {exc}"[:500] + where
    if isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower():
        return "oom", text
    if isinstance(exc, NonFiniteLoss):
        return "nan", text
    return "error", text


# ---------------------------------------------------------------------------
# Data held by a worker
# ---------------------------------------------------------------------------

def _unpack(sample: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(sample, dict):
        return sample["image"], sample["mask"]
    image, mask = sample[:2]
    return image, mask


def _stack(ds: Dataset, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = min(len(ds), limit)
    if n == 0:
        raise ValueError("empty dataset: nothing to train or validate on")
    images, masks = zip(*(_unpack(ds[i]) for i in range(n)))
    return torch.stack(images).contiguous(), torch.stack([torch.as_tensor(m) for m in masks]).to(torch.uint8)


@dataclass
class ProxyData:
    """Datasets yielding ``{"image": float[3,H,W], "mask": int[H,W]}`` (or tuples).

    ``train_stage1`` and ``val`` are read once (bounded by the config) and kept
    in memory; ``train_stage2`` is iterated by a DataLoader every stage-2 epoch.
    """
    train_stage1: Dataset
    train_stage2: Dataset
    val: Dataset
    num_classes: int
    loader_workers: int = 0


# ---------------------------------------------------------------------------
# The evaluator (one per worker)
# ---------------------------------------------------------------------------

class ProxyEvaluator:
    """Trains and scores architectures of one space on one device.

    Built once per worker: it loads the encoder weights, computes and caches
    the stage-1 features and the validation set, and keeps the encoder's
    initial state in memory for stage 2.
    """

    def __init__(self, space: str, config: ProxyConfig, data: ProxyData, device: str | torch.device = "cpu",
                 *, seed: int = 0, encoder_state: dict[str, torch.Tensor] | None = None,
                 teacher: nn.Module | None = None):
        self.space = space
        self.config = config
        self.data = data
        self.device = torch.device(device)
        self.seed = seed
        self.cuda = self.device.type == "cuda"
        self.amp = config.amp and self.cuda
        # bfloat16 needs no loss scaling; float16 (older GPUs) gets a GradScaler.
        self.amp_dtype = (torch.bfloat16 if self.amp and torch.cuda.is_bf16_supported() else torch.float16)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        # channels_last pays on CPU too (oneDNN): ~1.6x per stage-1 step in benchmarks/search_step.py.
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        torch.manual_seed(seed)  # a randomly initialised encoder is the same in every worker
        self.encoder = MobileNetV2Encoder(RETURN_STAGES[space]).to(self.device).eval()
        if encoder_state is not None:
            self.encoder.load_state_dict(encoder_state)
        self.encoder_state = {k: v.detach().clone() for k, v in self.encoder.state_dict().items()}
        self.teacher = teacher
        # The stage-1 crops are drawn once per search, reproducibly.
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        self._cache_stage1()
        self.val_images, self.val_masks = _stack(data.val, config.val_num_images)
        self.val_feats = self._encode(self.val_images)

    # -- caches ------------------------------------------------------------
    @torch.no_grad()
    def _encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        outs: list[list[torch.Tensor]] = []
        bs = self.config.val_batch_size
        for i in range(0, len(images), bs):
            x = images[i:i + bs].to(self.device).contiguous(memory_format=self.memory_format)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
                outs.append([f.float() for f in self.encoder(x)])
        return [torch.cat(level).contiguous(memory_format=self.memory_format) for level in zip(*outs)]

    @torch.no_grad()
    def _cache_stage1(self) -> None:
        images, masks = _stack(self.data.train_stage1, self.config.stage1.num_images)
        self.s1_feats = self._encode(images)
        # As the original: stage-1 targets live at the first encoder output's
        # resolution (stride 4), nearest-downsampled once.
        self.s1_masks = _nearest(masks, self.s1_feats[0].shape[-2:]).to(self.device)
        self.s1_teacher = None
        if self.teacher is not None:
            logits = []
            for i in range(0, len(images), self.config.val_batch_size):
                x = images[i:i + self.config.val_batch_size].to(self.device)
                logits.append(self.teacher(x).to(torch.float16))
            self.s1_teacher = torch.cat(logits)

    # -- one architecture ----------------------------------------------------
    def evaluate(self, genotype: Genotype, arch_seed: int, early_stopping: EarlyStopping) -> ArchResult:
        """Train and score ``genotype``; failures become a result with a status."""
        start = time.perf_counter()
        timings: dict[str, float] = {}
        validations: list[tuple[str, float]] = []
        try:
            result = self._evaluate(genotype, arch_seed, early_stopping, timings, validations)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # recorded with its status and reason, never a silent 0
            status, reason = classify_failure(exc)
            if self.cuda:
                torch.cuda.empty_cache()
            result = ArchResult(status=status, reward=self.config.failure_reward, reason=reason,
                                validations=validations, timings=timings)
        result.timings["total_s"] = time.perf_counter() - start
        return result

    def _evaluate(self, genotype: Genotype, arch_seed: int, es: EarlyStopping,
                  timings: dict[str, float], validations: list[tuple[str, float]]) -> ArchResult:
        cfg = self.config
        torch.manual_seed(arch_seed)
        rng = random.Random(arch_seed)
        model = build_segmenter(genotype, self.data.num_classes, agg_size=cfg.agg_size,
                                repeats=cfg.repeats, aux_cell=cfg.aux_cell and genotype.space == "cvpr")
        params = count_parameters(model, include_aux=False)
        flops = estimate_flops(model, cfg.flops_input)
        model.encoder.load_state_dict(self.encoder_state)
        model = model.to(self.device, memory_format=self.memory_format)
        scores: dict[str, float] = {}

        # Stage 1: decoder only, on cached features.
        t = time.perf_counter()
        s1 = cfg.stage1
        go_on = True
        if s1.epochs > 0:
            optim = torch.optim.Adam(model.decoder.parameters(), lr=s1.lr, foreach=True)
            polyak = Polyak(model.decoder, s1.polyak_decay)
            for epoch in range(s1.epochs):
                self._stage1_epoch(model, optim, polyak, epoch, arch_seed)
                polyak.write_back()
                if (epoch + 1) % s1.val_every == 0 or epoch + 1 == s1.epochs:
                    scores, go_on = self._checkpoint(model, f"s1e{epoch}", True, es, rng, timings, validations)
                    if not go_on:
                        break
        timings["stage1_s"] = time.perf_counter() - t - timings.get("validation_s", 0.0)

        # Stage 2: the whole network.
        t = time.perf_counter()
        v0 = timings.get("validation_s", 0.0)
        s2 = cfg.stage2
        if go_on and s2.epochs > 0:
            enc_params = list(model.encoder.parameters())
            if s2.enc_optim == "sgd":
                enc_optim: torch.optim.Optimizer = torch.optim.SGD(
                    enc_params, lr=s2.enc_lr, momentum=s2.enc_momentum, weight_decay=s2.enc_weight_decay)
            else:
                enc_optim = torch.optim.Adam(enc_params, lr=s2.enc_lr, weight_decay=s2.enc_weight_decay,
                                             foreach=True)
            dec_optim = torch.optim.Adam(model.decoder.parameters(), lr=s2.dec_lr,
                                         weight_decay=s2.dec_weight_decay, foreach=True)
            polyak = Polyak(model, s2.polyak_decay)
            gen = torch.Generator().manual_seed(arch_seed)
            loader = DataLoader(self.data.train_stage2, batch_size=s2.batch_size, shuffle=True, drop_last=True,
                                generator=gen, num_workers=self.data.loader_workers, pin_memory=self.cuda,
                                persistent_workers=self.data.loader_workers > 0)
            if len(loader) == 0:
                raise ValueError(f"stage 2: {len(self.data.train_stage2)} training images, fewer than "
                                 f"batch_size {s2.batch_size}; lower stage2.batch_size")
            for epoch in range(s2.epochs):
                self._stage2_epoch(model, loader, enc_optim, dec_optim, polyak, epoch)
                polyak.write_back()
                if (epoch + 1) % s2.val_every == 0 or epoch + 1 == s2.epochs:
                    scores, go_on = self._checkpoint(model, f"s2e{epoch}", False, es, rng, timings, validations)
                    if not go_on:
                        break
        timings["stage2_s"] = time.perf_counter() - t - (timings.get("validation_s", 0.0) - v0)
        if not scores:
            raise ValueError("no validation ran: set stage1.epochs or stage2.epochs > 0")
        reward = scores["reward"]
        if not math.isfinite(reward):
            raise NonFiniteLoss(f"reward is {reward} (no valid validation pixels?)")
        return ArchResult(status="ok" if go_on else "early_stopped", reward=float(reward),
                          metrics={k: float(v) for k, v in scores.items()}, validations=validations,
                          params=params, flops=flops, timings=timings)

    def _checkpoint(self, model: nn.Module, point: str, cached: bool, es: EarlyStopping, rng: random.Random,
                    timings: dict[str, float], validations: list[tuple[str, float]]) -> tuple[dict[str, float], bool]:
        """Validate at ``point``, record it, and ask early stopping whether to go on."""
        t = time.perf_counter()
        scores = self._validate(model, cached=cached)
        timings["validation_s"] = timings.get("validation_s", 0.0) + time.perf_counter() - t
        validations.append((point, scores["reward"]))
        return scores, es.step(point, scores["reward"], rng)

    # -- training loops --------------------------------------------------------
    def _loss(self, out: Any, mask: torch.Tensor, teacher: torch.Tensor | None) -> torch.Tensor:
        """Cross-entropy (+ auxiliary, + distillation) at the target's resolution."""
        logits, aux = out if isinstance(out, tuple) else (out, [])
        size = mask.shape[-2:]
        target = mask.long()
        loss = F.cross_entropy(resize_to(logits, size), target, ignore_index=IGNORE_INDEX)
        if self.config.aux_weight > 0:
            for a in aux:
                loss = loss + self.config.aux_weight * F.cross_entropy(resize_to(a, size), target, ignore_index=IGNORE_INDEX)
        if teacher is not None and self.config.distillation.weight > 0:
            loss = loss + self.config.distillation.weight * F.mse_loss(
                resize_to(logits, teacher.shape[-2:]).float(), teacher.float())
        return loss

    def _step(self, loss: torch.Tensor, params: Sequence[Sequence[nn.Parameter]], clips: Sequence[float],
              optims: Sequence[torch.optim.Optimizer], where: str) -> None:
        if not torch.isfinite(loss):
            raise NonFiniteLoss(f"training loss became {loss.item()} in {where}")
        for o in optims:
            o.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        for o in optims:
            self.scaler.unscale_(o)   # clip the true gradients (no-op without float16 scaling)
        for group, clip in zip(params, clips):
            if clip > 0:
                nn.utils.clip_grad_norm_(group, clip)
        for o in optims:
            self.scaler.step(o)
        self.scaler.update()

    def _stage1_epoch(self, model: nn.Module, optim: torch.optim.Optimizer, polyak: Polyak,
                      epoch: int, arch_seed: int) -> None:
        s1 = self.config.stage1
        model.decoder.train()
        n = len(self.s1_masks)
        gen = torch.Generator().manual_seed(arch_seed * 1009 + epoch)
        order = torch.randperm(n, generator=gen).to(self.device)
        params = [list(model.decoder.parameters())]
        for i in range(0, n, s1.batch_size):
            idx = order[i:i + s1.batch_size]
            if len(idx) < 2:   # BatchNorm needs more than one sample
                continue
            feats = [f.index_select(0, idx).contiguous(memory_format=self.memory_format) for f in self.s1_feats]
            teacher = self.s1_teacher.index_select(0, idx) if self.s1_teacher is not None else None
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
                out = model.decoder(feats)
                loss = self._loss(out, self.s1_masks.index_select(0, idx), teacher)
            self._step(loss, params, [s1.grad_clip], [optim], f"stage 1 epoch {epoch}")
            polyak.update()

    def _stage2_epoch(self, model: nn.Module, loader: DataLoader, enc_optim: torch.optim.Optimizer,
                      dec_optim: torch.optim.Optimizer, polyak: Polyak, epoch: int) -> None:
        s2 = self.config.stage2
        model.train()
        params = [list(model.encoder.parameters()), list(model.decoder.parameters())]
        for batch in loader:
            image, mask = _unpack(batch)
            image = image.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
            mask = mask.to(self.device, non_blocking=True)
            teacher = None
            if self.teacher is not None:
                with torch.no_grad():
                    teacher = self.teacher(image)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
                out = model(image)
                # As the original: the target is nearest-downsampled to the output size.
                logits = out[0] if isinstance(out, tuple) else out
                loss = self._loss(out, _nearest(mask, logits.shape[-2:]), teacher)
            self._step(loss, params, [s2.grad_clip, s2.grad_clip], [enc_optim, dec_optim], f"stage 2 epoch {epoch}")
            polyak.update()

    @torch.no_grad()
    def _validate(self, model: nn.Module, *, cached: bool) -> dict[str, float]:
        model.eval()
        cm = ConfusionMatrix(self.data.num_classes, ignore_index=IGNORE_INDEX)
        bs = self.config.val_batch_size
        for i in range(0, len(self.val_masks), bs):
            mask = self.val_masks[i:i + bs]
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
                if cached:
                    logits = _main_logits(model.decoder([f[i:i + bs] for f in self.val_feats]))
                else:
                    x = self.val_images[i:i + bs].to(self.device).contiguous(memory_format=self.memory_format)
                    logits = model(x)
            pred = resize_to(logits.float(), mask.shape[-2:]).argmax(1)
            cm.update(pred.to(torch.uint8).cpu(), mask)
        scores = cm.scores(omit_classes=self.config.omit_classes)
        return {k: float(scores[k]) for k in ("miou", "mean_acc", "fwiou", "pixel_acc", "reward")}


def _main_logits(out: Any) -> torch.Tensor:
    """The CVPR decoder returns (logits, aux); the WACV decoder just logits."""
    return out[0] if isinstance(out, tuple) else out


def _nearest(mask: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour resize of an N x H x W label tensor (dtype kept)."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    out = F.interpolate(mask[:, None].float(), size=tuple(size), mode="nearest")[:, 0]
    return out.to(mask.dtype)


def estimate_flops(model: nn.Module, input_hw: Sequence[int]) -> int | None:
    """FLOPs (2 per multiply-add) of one eval-mode forward, counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode
    meta = copy.deepcopy(model).to("meta").eval()
    x = torch.empty(1, 3, *input_hw, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(x)
    return int(counter.get_total_flops())
