"""Full training of one architecture, resumable at any step, on one or several processes.

:func:`run_training` builds the network a genotype describes, initialises its
encoder (``encoder_weights``), trains it for ``epochs`` epochs on the prepared
training split, validates it every ``val_every`` epochs (and after the last)
through :func:`nasseg.evaluation.evaluate` at full resolution, keeps the best
model by validation score (mIoU; RMSE for depth) and publishes, when the run
completes, ``model.pt`` (the final network), ``best.pt``, ``metrics.tsv`` and
``metrics.json`` into the output folder, all at once (a folder renamed into place).

One training step (:meth:`Trainer.step`): the process's share of the global batch
through the network (mixed precision on CUDA with ``amp``), the loss at decoder
resolution (:mod:`.losses`; the auxiliary heads skipped when ``aux_weight`` is 0),
backward, optional gradient clipping per encoder / decoder, both optimisers and
their poly schedules (:mod:`.optim`). Data loading runs in worker processes ahead
of the step (:mod:`.data`); the loss stays on the device, summed without a host
synchronisation, and is read only for the progress bar every ``log_every_steps``.

Resuming (:mod:`.checkpoint`): the whole state is written atomically at every
epoch end and every ``checkpoint_every_steps`` steps into the state folder; a run
started with a state there continues from it. Since the data order and each
sample's augmentation are functions of (seed, epoch, index), the model is seeded,
and algorithms are deterministic (``deterministic``), a run killed at any moment
and restarted ends with the same final metrics as an uninterrupted run with the
same seed (same machine and thread count).

Several processes (:mod:`.distributed`): under ``torchrun`` the global batch is
split across the processes, gradients are averaged by DistributedDataParallel,
BatchNorm statistics are those of the global batch (``bn: sync``), the loss is
normalised over the global batch, only rank 0 validates and writes files, and a
resume reads the same state.

The authors released no training code; where this follows their search code or
their other projects, and where it differs, is said in each module.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from ..checkpoint import ModelCard, save_model
from ..data import read_meta
from ..evaluation import evaluate
from ..io import atomic_directory, atomic_write_json, atomic_write_text
from ..models import PretrainedWeightsUnavailable, build_segmenter, count_parameters, load_imagenet_encoder
from ..models.weights import load_encoder_file
from ..runtime import tune_malloc
from ..spaces import space_of
from ..spaces.base import Genotype
from . import report
from .checkpoint import Progress, load_state, save_state, set_rng_state
from .config import TrainConfig
from .data import BatchPlan, SeededSamples, make_train_loader, training_sets, val_batches
from .distributed import (DistInfo, all_max, all_sum, barrier, freeze_batchnorm, prepare_model, setup, teardown,
                          unreached_parameters)
from .losses import TrainLoss
from .optim import make_optimisers, poly_schedule

__all__ = ["Trainer", "run_training", "init_encoder", "STATE_FILE", "BEST_FILE", "OUTPUTS"]

log = logging.getLogger(__name__)

STATE_FILE = "checkpoint.pt"
BEST_FILE = "best.pt"
#: What a completed run publishes into its output folder.
OUTPUTS = ("model.pt", "best.pt", "metrics.tsv", "metrics.json")


def init_encoder(encoder: nn.Module, weights: str) -> None:
    """``imagenet`` (torchvision's file; :class:`~nasseg.models.PretrainedWeightsUnavailable`
    offline without it), ``none`` (as built), or a weights file (its name in every error)."""
    if weights == "imagenet":
        try:
            load_imagenet_encoder(encoder)
        except PretrainedWeightsUnavailable as exc:
            raise PretrainedWeightsUnavailable(f"encoder_weights: imagenet: {exc}; or set encoder_weights to "
                                               "a weights file, or none (a random encoder)") from exc
    elif weights != "none":
        load_encoder_file(encoder, Path(weights))


@contextlib.contextmanager
def _deterministic(on: bool) -> Iterator[None]:
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    if on:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    else:
        torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[2], before[3]


class Trainer:
    """One training run: data, network, optimisers and the state folder it resumes from."""

    def __init__(self, config: TrainConfig, genotype: Genotype, data_dir: str | os.PathLike, *,
                 state_dir: str | os.PathLike, info: DistInfo | None = None, progress: bool = True):
        self.config = config
        self.info = info if info is not None else setup(config.device)
        self.device = self.info.device
        self.state_dir = Path(state_dir)
        self.progress_bar = progress and self.info.is_main
        space = space_of(genotype)
        if config.aux_cell and not space.has_aux_cell:
            raise ValueError(f"aux_cell: true, but the {space.name} space has no auxiliary cells; set it to false")
        if config.aux_weight > 0 and not space.has_aux_cell:
            log.warning("aux_weight %.3g has no effect: the %s space has no auxiliary heads", config.aux_weight,
                        space.name)
        if config.batch_size < self.info.world:
            raise ValueError(f"batch_size {config.batch_size} is smaller than the {self.info.world} processes "
                             "that share it")

        self.train_set, self.val_set = training_sets(data_dir, config)
        self.task = self.train_set.task
        meta = read_meta(data_dir)
        info_meta = meta if self.task == meta["task"] else meta[self.task]
        self.card = ModelCard(
            genotype=genotype, num_classes=self.train_set.num_classes, agg_size=config.agg_size,
            repeats=config.repeats, aux_cell=config.aux_cell, task=self.task, dataset=meta["dataset"],
            class_names=tuple(self.train_set.class_names),
            palette=tuple(tuple(int(v) for v in c) for c in info_meta.get("palette", ())),
            ignore_index=self.train_set.ignore_index)
        self.key = hashlib.sha256(json.dumps(
            {"config": config.fingerprint(), "genotype": genotype.to_dict(), "data": meta["fingerprint"],
             "task": self.task}, sort_keys=True).encode()).hexdigest()[:16]

        torch.manual_seed(config.seed)
        model = build_segmenter(genotype, self.card.num_classes, agg_size=config.agg_size, repeats=config.repeats,
                                aux_cell=config.aux_cell)
        init_encoder(model.encoder, config.encoder_weights)
        self.loss = TrainLoss(self.task, aux_weight=config.aux_weight if space.has_aux_cell else 0.0,
                              ignore_index=self.train_set.ignore_index, depth_loss=config.depth_loss,
                              world=self.info.world, all_sum=all_sum, all_max=all_max)
        self.params = count_parameters(model)
        self.params_without_aux = count_parameters(model, include_aux=False)
        for name in unreached_parameters(model, self.loss.uses_aux):   # e.g. aux heads at weight 0
            model.get_parameter(name).requires_grad_(False)
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        model = model.to(self.device, memory_format=self.memory_format)
        self.module = model
        self.model = prepare_model(model, self.info, config.bn)

        self.steps_per_epoch = len(self.train_set) // config.batch_size
        self.total_steps = self.steps_per_epoch * config.epochs
        self.optimisers = make_optimisers(self.module, config)
        self.schedulers = {k: poly_schedule(o, self.total_steps, config.lr_power) for k, o in self.optimisers.items()}
        self.amp = config.amp and self.device.type == "cuda"
        if config.amp and not self.amp:
            log.info("amp: mixed precision has no effect on CPU; training in float32")
        self.amp_dtype = torch.bfloat16 if self.amp and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp and self.amp_dtype == torch.float16)
        self.loss_acc = torch.zeros((), dtype=torch.float64, device=self.device)
        self.progress = Progress()

    # -- one step ------------------------------------------------------------------
    def step(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """One optimisation step on this process's share of a batch; the loss (detached)."""
        images = images.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        targets = targets.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            out = self.model(images, self.loss.uses_aux)
        loss = self.loss(out, targets)
        for opt in self.optimisers.values():
            opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.grad_clip > 0:
            for opt in self.optimisers.values():
                self.scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]],
                                               self.config.grad_clip, foreach=True)
        for opt in self.optimisers.values():
            self.scaler.step(opt)
        self.scaler.update()
        for sched in self.schedulers.values():
            sched.step()
        return loss.detach()

    def train_mode(self) -> None:
        self.model.train()
        if self.config.bn == "frozen":
            freeze_batchnorm(self.model)

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """This process's batches from where the run stands to its end, prefetched."""
        plan = BatchPlan(len(self.train_set), self.config.batch_size, self.config.seed, self.config.epochs,
                         start_epoch=self.progress.epoch, start_step=self.progress.step,
                         rank=self.info.rank, world=self.info.world)
        loader = make_train_loader(SeededSamples(self.train_set, self.config.seed), plan,
                                   workers=self.config.num_workers, pin_memory=self.device.type == "cuda")
        return iter(loader)

    def train_steps(self, epoch: int, stop: int, batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
                    bar: tqdm | None = None) -> None:
        """Run epoch ``epoch`` from ``self.progress.step`` up to step ``stop``, checkpointing
        every ``checkpoint_every_steps`` steps (the epoch's end is checkpointed after validation)."""
        every = self.config.checkpoint_every_steps
        log_every = self.config.log_every_steps
        start_time = time.perf_counter()
        for step in range(self.progress.step, stop):
            images, targets = next(batches)
            loss = self.step(images, targets)
            self.loss_acc += loss
            self.progress.step = step + 1
            if bar is not None:
                bar.update(1)
                if (step + 1) % log_every == 0 or step + 1 == stop:
                    bar.set_postfix(loss=f"{loss.item():.4f}")
            global_step = epoch * self.steps_per_epoch + step + 1
            if every and global_step % every == 0 and step + 1 < self.steps_per_epoch:
                now = time.perf_counter()
                self.progress.epoch_seconds += now - start_time
                start_time = now
                self._sync_loss()
                self.save()
        self.progress.epoch_seconds += time.perf_counter() - start_time

    def _sync_loss(self) -> None:
        """The epoch's loss so far, summed over processes, into the progress record (a collective)."""
        total = all_sum(self.loss_acc)
        self.progress.loss_sum = float(total) / self.info.world
        self.loss_acc.fill_(float(total) if self.info.is_main else 0.0)

    # -- state ------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.state_dir / STATE_FILE

    def save(self) -> None:
        if not self.info.is_main:
            return
        save_state(self.state_path, key=self.key, progress=self.progress, model=self.module.state_dict(),
                   optimisers={k: o.state_dict() for k, o in self.optimisers.items()},
                   schedulers={k: s.state_dict() for k, s in self.schedulers.items()},
                   scaler=self.scaler.state_dict())

    def restore(self) -> bool:
        """Load the state folder's training state, if any; whether there was one."""
        state = load_state(self.state_path, self.key)
        if state is None:
            return False
        self.module.load_state_dict(state["model"])
        for k, o in self.optimisers.items():
            o.load_state_dict(state["optimisers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.progress = state["progress"]
        self.loss_acc.fill_(self.progress.loss_sum * self.info.world if self.info.is_main else 0.0)
        return True

    # -- validation -----------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        cfg = self.config
        scores = evaluate(self.module, val_batches(self.val_set, cfg.val_batch_size, cfg.num_workers),
                          task=self.task, num_classes=self.card.num_classes, ignore_index=self.card.ignore_index,
                          device=self.device, flip=cfg.val_flip, scales=cfg.val_scales,
                          omit_classes=cfg.omit_classes)
        return report.scalar_scores(self.task, scores, tuple(cfg.omit_classes))

    # -- the run ------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train (or resume) to the end; returns the contents of metrics.json."""
        cfg = self.config
        if self.info.is_main:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.restore():
            log.info("resuming %s at epoch %d step %d of %d epochs x %d steps", self.state_path,
                     self.progress.epoch + 1, self.progress.step, cfg.epochs, self.steps_per_epoch)
        name = report.score_name(self.task)
        batches = self.batches() if self.progress.epoch < cfg.epochs else iter(())
        while self.progress.epoch < cfg.epochs:
            epoch = self.progress.epoch
            self.train_mode()
            with tqdm(total=self.steps_per_epoch, initial=self.progress.step, disable=not self.progress_bar,
                      desc=f"train epoch {epoch + 1}/{cfg.epochs}", unit="step", dynamic_ncols=True,
                      leave=False) as bar:
                self.train_steps(epoch, self.steps_per_epoch, batches, bar)
            start = time.perf_counter()
            self._sync_loss()
            row: dict[str, Any] = {
                "epoch": epoch + 1, "step": (epoch + 1) * self.steps_per_epoch,
                "train_loss": self.progress.loss_sum / self.steps_per_epoch,
                "lr_enc": self.schedulers["encoder"].get_last_lr()[0],
                "lr_dec": self.schedulers["decoder"].get_last_lr()[0], "val": None}
            if (epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs:
                if self.info.is_main:
                    row["val"] = self.validate()
                    best = self.progress.best
                    if report.is_better(self.task, row["val"][name], best["score"] if best else None):
                        self.progress.best = {"epoch": epoch + 1, "score": row["val"][name], "scores": row["val"]}
                        save_model(self.state_dir / BEST_FILE, self.card, self.module, epoch=epoch + 1,
                                   scores=row["val"])
                barrier(self.info)
            row["seconds"] = self.progress.epoch_seconds + time.perf_counter() - start
            log.info("epoch %d/%d: train loss %.4f%s, %.1f s", epoch + 1, cfg.epochs, row["train_loss"],
                     f", val {name} {row['val'][name]:.4f} (best {self.progress.best['score']:.4f} at epoch "
                     f"{self.progress.best['epoch']})" if row["val"] else "", row["seconds"])
            self.progress = Progress(epoch=epoch + 1, step=0, best=self.progress.best,
                                     rows=[*self.progress.rows, row])
            self.loss_acc.zero_()
            self.save()
            barrier(self.info)
        return self.summary() if self.info.is_main else {}

    def summary(self) -> dict[str, Any]:
        """metrics.json's contents (rank 0, which validates)."""
        assert self.progress.best is not None, "the last epoch always validates"
        return report.summary(task=self.task, rows=self.progress.rows, best=self.progress.best,
                              steps=self.total_steps, params=self.params,
                              params_without_aux=self.params_without_aux,
                              extra={"world_size": self.info.world, "device": self.device.type})

    def publish(self, out_dir: str | os.PathLike, summary: dict[str, Any],
                metrics_dir: str | os.PathLike | None = None) -> None:
        """Write model.pt, best.pt, metrics.tsv and metrics.json into ``out_dir`` at once (rank 0);
        with ``metrics_dir``, the two metrics files go there instead (each written atomically)."""
        if not self.info.is_main:
            return
        last = next((r for r in reversed(self.progress.rows) if r.get("val")), None)
        with atomic_directory(out_dir) as tmp:
            save_model(tmp / "model.pt", self.card, self.module, epoch=len(self.progress.rows),
                       scores=last["val"] if last else {})
            shutil.copyfile(self.state_dir / BEST_FILE, tmp / "best.pt")
            where = tmp if metrics_dir is None else Path(metrics_dir)
            where.mkdir(parents=True, exist_ok=True)
            atomic_write_text(where / "metrics.tsv", report.metrics_tsv(self.progress.rows, self.task))
            atomic_write_json(where / "metrics.json", summary)


def run_training(config: TrainConfig, genotype: Genotype, data_dir: str | os.PathLike, out_dir: str | os.PathLike,
                 *, state_dir: str | os.PathLike, metrics_dir: str | os.PathLike | None = None,
                 progress: bool = True) -> dict[str, Any]:
    """Train ``genotype`` on the prepared dataset ``data_dir`` (or resume from ``state_dir``);
    publish the outputs (:data:`OUTPUTS`) into ``out_dir`` (the metrics files into
    ``metrics_dir`` when given); return metrics.json's contents.

    Under torchrun every process calls this; only rank 0 writes.
    """
    tune_malloc()   # see nasseg.runtime
    info = setup(config.device)
    try:
        with _deterministic(config.deterministic):
            trainer = Trainer(config, genotype, data_dir, state_dir=state_dir, info=info, progress=progress)
            summary = trainer.fit()
            trainer.publish(out_dir, summary, metrics_dir)
            barrier(info)
        return summary
    finally:
        teardown(info)

