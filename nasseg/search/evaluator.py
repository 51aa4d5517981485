"""Proxy training of one sampled architecture: what one search step costs.

Following the papers and the authors' ``src/main_search.py`` and ``src/engine/``
(DrSleep/nas-segm-pytorch):

* **Stage 1** trains only the decoder (Adam), for a few epochs, on encoder features
  cached once per worker (:mod:`nasseg.search.features`); it validates on cached
  validation features every ``val_every`` epochs.
* **Stage 2** trains the whole network (encoder: SGD or Adam; decoder: Adam),
  encoder restored from an in-memory copy of its initial weights, and validates
  after every ``val_every`` epochs.
* The loss (:mod:`nasseg.search.losses`) is computed at the decoder's resolution;
  validation scores full-resolution predictions. Gradients are clipped per
  encoder / decoder. Polyak averaging (:mod:`nasseg.search.polyak`) is written back
  after every epoch. Distillation, when configured, in the stages
  ``distillation.stages`` lists (the original: stage 1 only).
* After each validation, progressive early stopping
  (:mod:`nasseg.search.early_stopping`) decides whether training goes on.
* The architecture's own failures (:mod:`nasseg.search.failures`) become a result
  with their status and ``proxy.failure_reward``; any other error propagates.

The reward is :func:`nasseg.metrics.segmentation_scores`' geometric mean of mIoU,
mean accuracy and FW-IoU on the validation set.

Where we differ from the original, besides the caches: every training step of an
architecture and its stage-1 data order are seeded by the architecture's seed (the
same result on any worker, and on a re-run after a kill); training runs in fp32
unless ``amp`` asks for mixed precision (CUDA only; the original has none); tensors
are NHWC or NCHW, whichever :mod:`nasseg.search.kernels` measured to be faster, and
each depthwise convolution runs on the kernel measured to be fastest for its input shape
(oneDNN, sub-grids, or this project's loops: :mod:`nasseg.models.depthwise`);
stage-2 images read in this process stay decoded in memory (``data.keep_decoded_mb``);
glibc's allocator is kept from page-faulting (:func:`nasseg.runtime.tune_malloc`);
the original's ``try_except`` wrappers, which
turn any RuntimeError into a reward of 0, are replaced by the failure rule above.
"""
from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..genotypes import Genotype
from ..metrics import ConfusionMatrix
from ..models import Segmenter, build_segmenter, count_parameters
from ..models.ops import resize_to, use_depthwise_kernel
from ..runtime import tune_malloc
from ..spaces import space_of
from .config import ProxyConfig
from .data import ProxyData, downsample_labels
from .early_stopping import EarlyStopping
from .failures import ArchitectureFailure, NonFiniteLoss, Status, architecture_status, candidate, describe
from .features import Compute, FeatureCache
from .flops import estimate_flops
from .kernels import choose as choose_kernels
from .losses import IGNORE_INDEX, SegmentationLoss
from .polyak import Polyak

#: Called with every candidate network right after it is built, inside the candidate's
#: failure scope (:func:`nasseg.search.failures.candidate`): a seam to inspect or
#: instrument the network, and for tests to inject failures (a mis-sized layer, a
#: module that runs out of memory, NaN weights). Must be picklable for worker processes.
BuildHook = Callable[[Segmenter], None]


@dataclass
class ArchResult:
    """What evaluating one architecture produced (also for failures)."""
    status: Status
    reward: float
    metrics: dict[str, float] = field(default_factory=dict)
    validations: list[tuple[str, float]] = field(default_factory=list)
    params: int | None = None
    flops: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "status": self.status.value}


class ProxyEvaluator:
    """Trains and scores architectures of one space on one device.

    Built once per worker: it loads the encoder weights and computes and caches the
    stage-1 features and the validation set (:class:`FeatureCache`).
    """

    def __init__(self, space: str, config: ProxyConfig, data: ProxyData, device: str | torch.device = "cpu",
                 *, seed: int = 0, encoder_state: dict[str, torch.Tensor] | None = None,
                 teacher: nn.Module | None = None, on_build: BuildHook | None = None):
        tune_malloc()   # in each worker process: see nasseg.runtime
        self.space = space
        self.config = config
        self.data = data
        kernels = choose_kernels(space, config, device, data.num_classes)
        self.depthwise = kernels.depthwise
        self.compute = Compute.create(device, config, kernels.memory_format)
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.compute.amp and self.compute.amp_dtype == torch.float16)
        self.cache = FeatureCache(space, config, data, self.compute, seed=seed, encoder_state=encoder_state,
                                  teacher=teacher)
        self.s2_teacher = teacher if 2 in config.distillation.stages else None
        self.train_stage2 = data.stage2_reader()
        self.loss = SegmentationLoss(config.aux_weight, config.distillation.weight)
        self.on_build = on_build

    # -- one architecture ----------------------------------------------------
    def evaluate(self, genotype: Genotype, arch_seed: int, early_stopping: EarlyStopping) -> ArchResult:
        """Train and score ``genotype``; its own failures become a result with their status."""
        start = time.perf_counter()
        timings: dict[str, float] = {}
        validations: list[tuple[str, float]] = []
        try:
            result = self._train_and_score(genotype, arch_seed, early_stopping, timings, validations)
        except ArchitectureFailure as failure:
            result = self._failed(failure.status, failure.reason, timings, validations)
        except Exception as exc:
            status = architecture_status(exc, in_candidate=False)
            if status is None:
                raise
            result = self._failed(status, describe(exc), timings, validations)
        result.timings["total_s"] = time.perf_counter() - start
        return result

    def _failed(self, status: Status, reason: str, timings: dict[str, float],
                validations: list[tuple[str, float]]) -> ArchResult:
        if self.compute.cuda:
            torch.cuda.empty_cache()
        return ArchResult(status=status, reward=self.config.failure_reward, reason=reason,
                          validations=validations, timings=timings)

    def _build(self, genotype: Genotype) -> tuple[Segmenter, int, int]:
        cfg = self.config
        with candidate():
            model = build_segmenter(genotype, self.data.num_classes, agg_size=cfg.agg_size,
                                    repeats=cfg.repeats, aux_cell=cfg.aux_cell and space_of(genotype).has_aux_cell)
            if self.on_build is not None:
                self.on_build(model)
            flops = estimate_flops(model, cfg.flops_input)
        model.encoder.load_state_dict(self.cache.encoder_state)
        use_depthwise_kernel(model, self.depthwise)
        model = model.to(self.compute.device, memory_format=self.compute.memory_format)
        return model, count_parameters(model, include_aux=False), flops

    def _train_and_score(self, genotype: Genotype, arch_seed: int, es: EarlyStopping,
                         timings: dict[str, float], validations: list[tuple[str, float]]) -> ArchResult:
        cfg = self.config
        torch.manual_seed(arch_seed)
        rng = random.Random(arch_seed)
        model, params, flops = self._build(genotype)
        scores: dict[str, float] = {}

        # Stage 1: decoder only, on cached features.
        t = time.perf_counter()
        s1 = cfg.stage1
        go_on = True
        if s1.epochs > 0:
            optim = torch.optim.Adam(model.decoder.parameters(), lr=s1.lr, weight_decay=s1.dec_weight_decay,
                                     **self.compute.adam_kernel)
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
                                             **self.compute.adam_kernel)
            dec_optim = torch.optim.Adam(model.decoder.parameters(), lr=s2.dec_lr,
                                         weight_decay=s2.dec_weight_decay, **self.compute.adam_kernel)
            polyak = Polyak(model, s2.polyak_decay)
            gen = torch.Generator().manual_seed(arch_seed)
            loader = DataLoader(self.train_stage2, batch_size=s2.batch_size, shuffle=True, drop_last=True,
                                generator=gen, num_workers=self.data.loader_workers, pin_memory=self.compute.cuda,
                                persistent_workers=self.data.loader_workers > 0)
            for epoch in range(s2.epochs):
                self._stage2_epoch(model, loader, enc_optim, dec_optim, polyak, epoch)
                polyak.write_back()
                if (epoch + 1) % s2.val_every == 0 or epoch + 1 == s2.epochs:
                    scores, go_on = self._checkpoint(model, f"s2e{epoch}", False, es, rng, timings, validations)
                    if not go_on:
                        break
        timings["stage2_s"] = time.perf_counter() - t - (timings.get("validation_s", 0.0) - v0)
        if not scores:
            raise ValueError("no validation ran: set proxy.stage1.epochs or proxy.stage2.epochs > 0")
        reward = scores["reward"]
        if not math.isfinite(reward):   # check_search_data and FeatureCache make this a bug
            raise RuntimeError(f"the reward is {reward} although {self.data.val_source} has pixels to score")
        return ArchResult(status=Status.OK if go_on else Status.EARLY_STOPPED, reward=float(reward),
                          metrics={k: float(v) for k, v in scores.items()}, validations=validations,
                          params=params, flops=flops, timings=timings)

    def _checkpoint(self, model: Segmenter, point: str, cached: bool, es: EarlyStopping, rng: random.Random,
                    timings: dict[str, float], validations: list[tuple[str, float]]) -> tuple[dict[str, float], bool]:
        """Validate at ``point``, record it, and ask early stopping whether to go on."""
        t = time.perf_counter()
        scores = self._validate(model, cached=cached)
        timings["validation_s"] = timings.get("validation_s", 0.0) + time.perf_counter() - t
        validations.append((point, scores["reward"]))
        return scores, es.step(point, scores["reward"], rng)

    # -- training loops --------------------------------------------------------
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

    def _stage1_epoch(self, model: Segmenter, optim: torch.optim.Optimizer, polyak: Polyak,
                      epoch: int, arch_seed: int) -> None:
        """One pass over the cached crops in full batches (as the original, the remainder is dropped)."""
        cache = self.cache
        model.eval()
        model.decoder.train()
        n = len(cache.s1_labels)
        bs = min(self.config.stage1.batch_size, n)
        gen = torch.Generator().manual_seed(arch_seed * 1009 + epoch)
        order = torch.randperm(n, generator=gen).to(self.compute.device)
        params = [list(model.decoder.parameters())]
        for i in range(0, n - bs + 1, bs):
            idx = order[i:i + bs]
            feats = [f.index_select(0, idx).contiguous(memory_format=self.compute.memory_format)
                     for f in cache.s1_feats]
            teacher = cache.s1_teacher.index_select(0, idx) if cache.s1_teacher is not None else None
            with candidate():
                with self.compute.autocast():
                    loss = self.loss(model.decode(feats, aux=self.loss.uses_aux), cache.s1_labels.index_select(0, idx), teacher)
                self._step(loss, params, [self.config.stage1.grad_clip], [optim], f"stage 1 epoch {epoch}")
                polyak.update()

    def _stage2_epoch(self, model: Segmenter, loader: DataLoader, enc_optim: torch.optim.Optimizer,
                      dec_optim: torch.optim.Optimizer, polyak: Polyak, epoch: int) -> None:
        clip = self.config.stage2.grad_clip
        model.train()
        params = [list(model.encoder.parameters()), list(model.decoder.parameters())]
        for image, labels in loader:
            image = self.compute.images(image)
            labels = labels.to(self.compute.device, non_blocking=True)
            teacher = None
            if self.s2_teacher is not None:
                with torch.no_grad():
                    teacher = self.s2_teacher(image)
            with candidate():
                with self.compute.autocast():
                    out = model(image, aux=self.loss.uses_aux)
                    # As the original: the labels are nearest-downsampled to the output size.
                    loss = self.loss(out, downsample_labels(labels, out.logits.shape[-2:]), teacher)
                self._step(loss, params, [clip, clip], [enc_optim, dec_optim], f"stage 2 epoch {epoch}")
                polyak.update()

    @torch.no_grad()
    def _validate(self, model: Segmenter, *, cached: bool) -> dict[str, float]:
        cache = self.cache
        model.eval()
        cm = ConfusionMatrix(self.data.num_classes, ignore_index=IGNORE_INDEX)
        bs = self.config.val_batch_size
        for i in range(0, len(cache.val_labels), bs):
            with candidate(), self.compute.autocast():
                if cached:
                    logits = model.decode([f[i:i + bs] for f in cache.val_feats])
                else:
                    logits = model(self.compute.images(cache.val_images[i:i + bs]))
            labels = cache.val_labels[i:i + bs]
            pred = resize_to(logits.float(), labels.shape[-2:]).argmax(1)
            cm.update(pred.to(torch.uint8).cpu(), labels)
        scores = cm.scores(omit_classes=self.config.omit_classes)
        return {k: float(scores[k]) for k in ("miou", "mean_acc", "fwiou", "pixel_acc", "reward")}
