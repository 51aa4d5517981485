"""Workers that train sampled architectures: in-process, or one process per device.

``devices: [cpu]`` (or a single GPU) runs the work in the search process.
``devices: [cuda:0, cuda:1]`` -- the papers' two-GPU search -- starts one
worker process per device; each builds its own :class:`ProxyEvaluator`
(data, cached features, encoder) once and then trains whatever proposal it
is handed, while the search process keeps the controller.
"""
from __future__ import annotations

import logging
import queue
import traceback
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, PositiveFloat

from ..config import Config
from ..genotypes import genotype_from_dict
from .proxy import EarlyStopping, ProxyData, ProxyEvaluator

log = logging.getLogger(__name__)


class SearchDataConfig(Config):
    """Which prepared splits the search reads, and their transforms."""
    train_split: str = "train"
    val_split: str = "val"
    meta_train_fraction: float = Field(default=0.9, gt=0, lt=1)   # used when train_split == val_split
    resize_longer: bool = False        # resize sides (per stage) bound the longer side
    scale_range: tuple[PositiveFloat, PositiveFloat] = (0.7, 1.4)
    val_resize_side: int = Field(default=1024, gt=0)
    val_crop_size: int | None = Field(default=None, gt=0)
    loader_workers: int = Field(default=0, ge=0)


def check_devices(devices: tuple[str, ...]) -> None:
    """Fail early, naming the setting, when a listed device does not exist."""
    for dev in devices:
        d = torch.device(dev)
        if d.type == "cuda":
            count = torch.cuda.device_count()
            if (d.index or 0) >= count:
                raise ValueError(f"devices lists {dev!r} but this machine has {count} CUDA device(s); "
                                 "set devices: [cpu] (or fewer GPUs) in params.yaml or with --set")
        elif d.type != "cpu":
            raise ValueError(f"devices: unsupported device {dev!r}; use cpu or cuda:N")


def build_evaluator(config: Any, data_dir: Path, device: str) -> ProxyEvaluator:
    """Everything a worker needs, built once: data, encoder weights, teacher."""
    from .data import make_proxy_data
    from .teachers import load_encoder_state, load_teacher

    data: ProxyData = make_proxy_data(data_dir, config)
    encoder_state = load_encoder_state(config.space, config.proxy.encoder_weights)
    teacher = load_teacher(config.proxy.distillation, data.num_classes, device)
    return ProxyEvaluator(config.space, config.proxy, data, device, seed=config.seed,
                          encoder_state=encoder_state, teacher=teacher)


def run_task(evaluator: ProxyEvaluator, task: dict[str, Any]) -> dict[str, Any]:
    es = EarlyStopping(evaluator.config.early_stopping, task["early_stopping"])
    result = evaluator.evaluate(genotype_from_dict(task["genotype"]), task["seed"], es)
    return result.to_dict()


class InlineWorkers:
    """One worker in the search process."""

    capacity = 1

    def __init__(self, config: Any, data_dir: Path):
        self.device = config.devices[0]
        self.evaluator = build_evaluator(config, data_dir, self.device)
        self.tasks: list[dict[str, Any]] = []

    def submit(self, task: dict[str, Any]) -> None:
        self.tasks.append(task)

    def next_result(self) -> dict[str, Any]:
        task = self.tasks.pop(0)
        return {"id": task["id"], "worker": self.device, "result": run_task(self.evaluator, task)}

    def __enter__(self) -> InlineWorkers:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.tasks.clear()


def _worker_main(rank: int, device: str, config: Any, data_dir: Path, tasks: Any, results: Any) -> None:
    name = f"{device}#{rank}"
    try:
        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
        evaluator = build_evaluator(config, data_dir, device)
    except Exception:
        results.put({"fatal": f"worker {name} could not start:\n{traceback.format_exc()}"})
        return
    results.put({"ready": name})
    while True:
        task = tasks.get()
        if task is None:
            return
        results.put({"id": task["id"], "worker": name, "result": run_task(evaluator, task)})


class ProcessWorkers:
    """One process per device, fed from a shared task queue."""

    def __init__(self, config: Any, data_dir: Path):
        ctx = torch.multiprocessing.get_context("spawn")
        self.tasks = ctx.Queue()
        self.results = ctx.Queue()
        self.procs = [ctx.Process(target=_worker_main, args=(i, dev, config, data_dir, self.tasks, self.results),
                                  daemon=True, name=f"nasseg-worker-{i}")
                      for i, dev in enumerate(config.devices)]
        self.capacity = len(self.procs)
        for p in self.procs:
            p.start()
        for _ in self.procs:
            msg = self._get()
            if "ready" in msg:
                log.info("worker %s ready", msg["ready"])

    def _get(self) -> dict[str, Any]:
        while True:
            try:
                msg = self.results.get(timeout=5.0)
            except queue.Empty:
                dead = [p for p in self.procs if not p.is_alive()]
                if dead:
                    raise RuntimeError(f"search worker {dead[0].name} died (exit code {dead[0].exitcode}); "
                                       "see the log above; rerun the same command to resume")
                continue
            if "fatal" in msg:
                raise RuntimeError(msg["fatal"])
            return msg

    def submit(self, task: dict[str, Any]) -> None:
        self.tasks.put(task)

    def next_result(self) -> dict[str, Any]:
        return self._get()

    def __enter__(self) -> ProcessWorkers:
        return self

    def __exit__(self, *exc: Any) -> None:
        for _ in self.procs:
            self.tasks.put(None)
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()


def make_workers(config: Any, data_dir: Path) -> InlineWorkers | ProcessWorkers:
    check_devices(tuple(config.devices))
    if len(config.devices) == 1:
        return InlineWorkers(config, data_dir)
    return ProcessWorkers(config, data_dir)
