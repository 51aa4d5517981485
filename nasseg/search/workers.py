"""Workers that train sampled architectures: in-process, or one process per device.

``devices: [cpu]`` (or a single GPU) runs the work in the search process.
``devices: [cuda:0, cuda:1]`` -- the papers' two-GPU search -- starts one
worker process per device; each builds its own :class:`ProxyEvaluator`
(data, cached features, encoder) once and then trains whatever proposal it
is handed, while the search process keeps the controller.

An architecture's own failure comes back as a result (see
:mod:`nasseg.search.failures`). Any other error stops the search: in the
search process it propagates as it is; a worker process reports it (type,
message, traceback) and exits, and the search raises :class:`SearchAborted`
with that report, killing the other workers at once (what they were training
is re-run when the search resumes).

The original (DrSleep/nas-segm-pytorch) trains one architecture at a time on
two GPUs through ``nn.DataParallel``; here each GPU trains its own.
"""
from __future__ import annotations

import logging
import queue
import traceback
from pathlib import Path
from typing import Any

import torch

from ..genotypes import genotype_from_dict
from .data import ProxyData, make_proxy_data
from .early_stopping import EarlyStopping
from .evaluator import BuildHook, ProxyEvaluator
from .failures import SearchAborted
from .teachers import load_encoder_state, load_teacher

log = logging.getLogger(__name__)


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


def build_evaluator(config: Any, data_dir: Path, device: str, on_build: BuildHook | None = None) -> ProxyEvaluator:
    """Everything a worker needs, built once: data, encoder weights, teacher."""
    data: ProxyData = make_proxy_data(data_dir, config)
    encoder_state = load_encoder_state(config.space, config.proxy.encoder_weights)
    teacher = load_teacher(config.proxy.distillation, data.num_classes, device)
    return ProxyEvaluator(config.space, config.proxy, data, device, seed=config.seed,
                          encoder_state=encoder_state, teacher=teacher, on_build=on_build)


def run_task(evaluator: ProxyEvaluator, task: dict[str, Any]) -> dict[str, Any]:
    es = EarlyStopping(evaluator.config.early_stopping, task["early_stopping"])
    result = evaluator.evaluate(genotype_from_dict(task["genotype"]), task["seed"], es)
    return result.to_dict()


class InlineWorkers:
    """One worker in the search process."""

    capacity = 1

    def __init__(self, config: Any, data_dir: Path, on_build: BuildHook | None = None):
        self.device = config.devices[0]
        self.evaluator = build_evaluator(config, data_dir, self.device, on_build)
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


def _worker_main(rank: int, device: str, config: Any, data_dir: Path, on_build: BuildHook | None,
                 tasks: Any, results: Any) -> None:
    name = f"{device}#{rank}"
    try:
        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
        evaluator = build_evaluator(config, data_dir, device, on_build)
    except Exception as exc:
        results.put({"fatal": f"worker {name} could not start: {type(exc).__name__}: {exc}\n"
                              f"{traceback.format_exc()}"})
        return
    results.put({"ready": name})
    while True:
        task = tasks.get()
        if task is None:
            return
        try:
            result = run_task(evaluator, task)
        except Exception as exc:   # not the architecture's own failure: the search must stop
            results.put({"fatal": f"worker {name}, architecture {task['id']}: {type(exc).__name__}: {exc}\n"
                                  f"{traceback.format_exc()}"})
            return
        results.put({"id": task["id"], "worker": name, "result": result})


class ProcessWorkers:
    """One process per device, fed from a shared task queue."""

    def __init__(self, config: Any, data_dir: Path, on_build: BuildHook | None = None):
        ctx = torch.multiprocessing.get_context("spawn")
        self.tasks = ctx.Queue()
        self.results = ctx.Queue()
        self.procs = [ctx.Process(target=_worker_main,
                                  args=(i, dev, config, data_dir, on_build, self.tasks, self.results),
                                  daemon=True, name=f"nasseg-worker-{i}")
                      for i, dev in enumerate(config.devices)]
        self.capacity = len(self.procs)
        for p in self.procs:
            p.start()
        try:
            for _ in self.procs:
                log.info("worker %s ready", self._get()["ready"])
        except BaseException:   # one could not start: stop the others now
            self._kill()
            raise

    def _kill(self) -> None:
        for p in self.procs:
            p.kill()
            p.join()

    def _get(self) -> dict[str, Any]:
        while True:
            try:
                msg = self.results.get(timeout=5.0)
            except queue.Empty:
                dead = [p for p in self.procs if not p.is_alive()]
                if dead:
                    raise SearchAborted(f"search worker {dead[0].name} died (exit code {dead[0].exitcode}); "
                                        "see the log above; rerun the same command to resume")
                continue
            if "fatal" in msg:
                raise SearchAborted(msg["fatal"])
            return msg

    def submit(self, task: dict[str, Any]) -> None:
        self.tasks.put(task)

    def next_result(self) -> dict[str, Any]:
        return self._get()

    def __enter__(self) -> ProcessWorkers:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: Any) -> None:
        if exc_type is not None:   # the search stops now; work in flight is re-run on resume
            self._kill()
            return
        for _ in self.procs:
            self.tasks.put(None)
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()


def make_workers(config: Any, data_dir: Path, on_build: BuildHook | None = None) -> InlineWorkers | ProcessWorkers:
    """Workers for ``config.devices``; ``on_build`` is passed to every evaluator."""
    check_devices(tuple(config.devices))
    if len(config.devices) == 1:
        return InlineWorkers(config, data_dir, on_build)
    return ProcessWorkers(config, data_dir, on_build)
