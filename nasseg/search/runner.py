"""The search loop: propose, train and score on workers, learn, record, resume.

``run_search`` keeps every worker busy with a different proposal while the
strategy learns from results as they arrive. After every proposal and every
result it checkpoints (see :mod:`nasseg.search.store`), so a search killed at
any moment -- even by SIGKILL -- continues, when started again with the same
command, exactly where it stopped: architectures in flight are re-run with the
same proposal and seed, results already in the history are never repeated,
and results written but not yet learned from are replayed into the strategy.

With one worker the search is deterministic for a seed (same CPU, same
result). With several, the order in which results arrive, and hence the
controller's updates, depends on timing.

Failures (see :mod:`nasseg.search.failures`): before the first architecture,
:func:`nasseg.search.data.check_search_data` checks the data against the
settings. An architecture's own failure is recorded and the search goes on;
any other error stops it at once, with the history and checkpoint as they were
after the last recorded architecture (fix the cause and rerun to resume);
``max_consecutive_failures`` architectures failing in a row, for whatever
reason, stop it too. The original (DrSleep/nas-segm-pytorch) records every
failure as reward 0 and goes on.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import Field
from tqdm import tqdm

from ..config import Config
from ..genotypes import Space, genotype_from_dict
from .config import ProxyConfig, SearchDataConfig
from .data import check_search_data
from .early_stopping import EarlyStopping
from .evaluator import BuildHook
from .failures import SearchAborted, Status
from .store import SearchStore, publish
from .strategies import Proposal, StrategyConfig, make_strategy
from .workers import make_workers

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1


class SearchConfig(Config):
    """One experiment's search section of params.yaml."""
    space: Space
    num_archs: int = Field(default=10, ge=1)
    time_limit_s: float | None = Field(default=None, gt=0)   # null: no wall-clock limit
    # at least one, e.g. [cpu] or [cuda:0, cuda:1]
    devices: tuple[str, ...] = Field(default=("cpu",), min_length=1)
    seed: int = 0
    data: SearchDataConfig = Field(default_factory=SearchDataConfig)
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    proxy: ProxyConfig = Field(default_factory=ProxyConfig)
    top_k: int = Field(default=5, ge=1)
    # stop after this many architectures in a row failed (oom, nan, error), counted from the
    # start of each run; null: never
    max_consecutive_failures: int | None = Field(default=10, ge=1)

    def fingerprint(self) -> str:
        """Hash of what must not change when a search resumes (budgets, devices, the failure
        limit and how the data are read may)."""
        d = self.model_dump(mode="json", exclude={"num_archs": True, "time_limit_s": True, "devices": True,
                                                  "top_k": True, "max_consecutive_failures": True,
                                                  "data": {"loader_workers", "keep_decoded_mb"}})
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def arch_seed(seed: int, arch_id: int) -> int:
    """The training seed of architecture ``arch_id``: independent of the worker that runs it."""
    return (seed * 1_000_003 + arch_id * 7919) % (2**31 - 1)


def _proposal_to_dict(p: Proposal) -> dict[str, Any]:
    return {"id": p.id, "genotype": p.genotype.to_dict(), "action": list(p.action),
            "log_prob": p.log_prob, "controller_step": p.controller_step}


def _proposal_from_dict(d: dict[str, Any]) -> Proposal:
    return Proposal(id=d["id"], genotype=genotype_from_dict(d["genotype"]), action=tuple(d["action"]),
                    log_prob=d["log_prob"], controller_step=d["controller_step"])


class SearchState:
    """Everything the loop needs to continue; saved in checkpoint.pt."""

    def __init__(self, config: SearchConfig, store: SearchStore):
        self.config = config
        self.store = store
        self.strategy = make_strategy(config.strategy, config.space, config.seed)
        self.early_stopping = EarlyStopping(config.proxy.early_stopping)
        self.pending: list[Proposal] = []
        self.observed: set[int] = set()
        self.elapsed_before = 0.0
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return self.elapsed_before + (time.monotonic() - self.started)

    def save(self) -> None:
        self.store.save_checkpoint({
            "version": CHECKPOINT_VERSION,
            "fingerprint": self.config.fingerprint(),
            "space": self.config.space,
            "strategy": self.strategy.state_dict(),
            "early_stopping": self.early_stopping.state_dict(),
            "pending": [_proposal_to_dict(p) for p in self.pending],
            "observed": sorted(self.observed),
            "elapsed_s": self.elapsed(),
        })

    def restore(self, ckpt: dict[str, Any]) -> None:
        if ckpt.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"{self.store.checkpoint_path}: unknown checkpoint version {ckpt.get('version')}")
        if ckpt["fingerprint"] != self.config.fingerprint():
            raise ValueError(
                f"{self.store.out} holds the state of a search with different parameters (only "
                "num_archs, time_limit_s and devices may change when resuming); use another "
                f"state folder, or move {self.store.out} away to start over")
        self.strategy.load_state_dict(ckpt["strategy"])
        self.early_stopping = EarlyStopping(self.config.proxy.early_stopping, ckpt["early_stopping"])
        self.pending = [_proposal_from_dict(d) for d in ckpt["pending"]]
        self.observed = set(ckpt["observed"])
        self.elapsed_before = float(ckpt["elapsed_s"])

    def learn(self, proposal: Proposal, record: dict[str, Any]) -> None:
        """Feed one recorded result to the strategy and the early-stopping trackers."""
        self.strategy.observe(proposal, record["reward"])
        for point, reward in record["validations"]:
            self.early_stopping.record(point, reward)
        self.observed.add(proposal.id)
        self.pending = [p for p in self.pending if p.id != proposal.id]


def _record(p: Proposal, result: dict[str, Any], worker: str) -> dict[str, Any]:
    """One history line: the proposal's fields (so it can be rebuilt), then the result."""
    return {
        **_proposal_to_dict(p),
        "reward": result["reward"],
        "status": result["status"],
        "reason": result["reason"],
        "metrics": result["metrics"],
        "params": result["params"],
        "flops": result["flops"],
        "validations": [list(v) for v in result["validations"]],
        "timings": result["timings"],
        "worker": worker,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def summarise(config: SearchConfig, history: list[dict[str, Any]], elapsed: float) -> dict[str, Any]:
    """Counts, the best architectures and the throughput, for summary.json."""
    scored = [r for r in history if Status(r["status"]).scored]
    ranked = sorted(scored, key=lambda r: (-r["reward"], r["id"]))
    return {
        "space": config.space,
        "strategy": config.strategy.name,
        "num_evaluated": len(history),
        "status_counts": dict(Counter(r["status"] for r in history)),
        "best_reward": ranked[0]["reward"] if ranked else None,
        "top": [{"id": r["id"], "reward": r["reward"], "params": r["params"], "flops": r["flops"],
                 "genotype": r["genotype"]} for r in ranked[: config.top_k]],
        "elapsed_s": elapsed,
        "archs_per_hour": len(history) / elapsed * 3600 if elapsed > 0 else None,
    }


def run_search(config: SearchConfig, data_dir: str | Path, out_dir: str | Path, *,
               state_dir: str | Path | None = None, metrics_dir: str | Path | None = None,
               progress: bool = True, on_build: BuildHook | None = None) -> dict[str, Any]:
    """Run (or resume) a search; return the summary written to summary.json.

    The resumable state (history, controller checkpoint) lives in `state_dir`
    (default: `out_dir` itself); when the search completes, history.jsonl and
    summary.json are written to `out_dir`, metrics.json and rewards.csv to
    `metrics_dir` (default: `out_dir`). `on_build` is called with every candidate
    network (see :data:`nasseg.search.evaluator.BuildHook`).

    Raises :class:`SearchAborted` after ``max_consecutive_failures`` failed
    architectures in a row; errors that are not an architecture's own propagate.
    """
    store = SearchStore(state_dir if state_dir is not None else out_dir)
    state = SearchState(config, store)
    history = store.read_history()
    ckpt = store.load_checkpoint()
    if ckpt is not None:
        state.restore(ckpt)
        log.info("resuming %s: %d architectures recorded, %d in flight", store.out, len(history), len(state.pending))
    elif history:
        raise ValueError(f"{store.history_path} exists but {store.checkpoint_path} does not; "
                         "move the history away to start a new search")
    done = {r["id"] for r in history}
    # Results written before a kill but not yet learned from: replay them.
    for r in history:
        if r["id"] not in state.observed:
            state.learn(_proposal_from_dict(r), r)   # records carry the proposal's fields
    state.pending = [p for p in state.pending if p.id not in done]
    state.save()
    if len(done) < config.num_archs:
        check_search_data(data_dir, config)
        _search(config, Path(data_dir), state, history, done, progress, on_build)
    summary = summarise(config, history, state.elapsed())
    metrics = {"num_evaluated": summary["num_evaluated"], "best_reward": summary["best_reward"],
               "archs_per_hour": summary["archs_per_hour"],
               **{f"status_{k}": v for k, v in summary["status_counts"].items()}}
    publish(history, summary, metrics, out_dir,
            metrics_dir if metrics_dir is not None else out_dir)
    return summary


def _search(config: SearchConfig, data_dir: Path, state: SearchState, history: list[dict[str, Any]],
            done: set[int], progress: bool, on_build: BuildHook | None) -> None:
    """Propose, train and learn until the budget is spent; append to ``history`` and ``done``."""
    best = max((r["reward"] for r in history if Status(r["status"]).scored), default=-math.inf)
    to_run = list(state.pending)
    in_flight: dict[int, Proposal] = {}
    failed_in_a_row: list[dict[str, Any]] = []   # counted from this run's start

    def budget_left() -> bool:
        return config.time_limit_s is None or state.elapsed() < config.time_limit_s

    with tqdm(total=config.num_archs, initial=min(len(done), config.num_archs), disable=not progress,
              desc=f"search {config.space}", unit="arch", dynamic_ncols=True) as bar, \
            make_workers(config, data_dir, on_build) as workers:
        while len(done) < config.num_archs:
            while len(in_flight) < workers.capacity and budget_left():
                if to_run:
                    p = to_run.pop(0)
                elif len(done) + len(in_flight) < config.num_archs:
                    p = state.strategy.propose()
                    state.pending.append(p)
                    state.save()
                else:
                    break
                in_flight[p.id] = p
                workers.submit({"id": p.id, "genotype": p.genotype.to_dict(),
                                "seed": arch_seed(config.seed, p.id),
                                "early_stopping": state.early_stopping.state_dict()})
            if not in_flight:
                log.info("time limit of %.0f s reached after %d architectures", config.time_limit_s, len(done))
                break
            msg = workers.next_result()
            p = in_flight.pop(msg["id"])
            record = _record(p, msg["result"], msg["worker"])
            state.store.append_record(record)
            done.add(p.id)
            state.learn(p, record)
            state.save()
            history.append(record)
            if Status(record["status"]).scored:
                best = max(best, record["reward"])
                failed_in_a_row.clear()
            else:
                log.warning("architecture %d failed (%s): %s", p.id, record["status"], record["reason"])
                failed_in_a_row.append(record)
                if config.max_consecutive_failures is not None \
                        and len(failed_in_a_row) >= config.max_consecutive_failures:
                    raise SearchAborted(_failure_streak_message(failed_in_a_row, state.store))
            bar.update(1)
            bar.set_postfix(best=f"{best:.4f}" if best > -math.inf else "-", last=record["status"])


def _failure_streak_message(failed: list[dict[str, Any]], store: SearchStore) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in Counter(r["status"] for r in failed).items())
    last = failed[-1]
    return (f"stopping the search: the last {len(failed)} architectures all failed ({counts}; "
            f"max_consecutive_failures is {len(failed)}); the last one, {last['id']}: {last['reason']}. "
            f"Their reasons are in {store.history_path}. A cause common to all of them (memory, data, "
            "settings) is likely: fix it and rerun the same command to resume, or raise "
            "max_consecutive_failures")
