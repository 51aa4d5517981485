"""Progressive early stopping: whether an architecture is worth training further.

One tracker per validation point (``"s1e4"``: stage 1 after epoch 4), shared by all
architectures of a search, as the original's ``TaskPerformer`` (``src/helpers/utils.py``
of DrSleep/nas-segm-pytorch), one per task and validation. At each validation:

1. ``delta`` is multiplied by ``schedule[steps]`` (1 when ``steps`` is not a key),
   ``steps`` being the tracker's count *before* this validation; then ``steps``
   grows by one;
2. the running average ``m`` is updated with the reward first:
   ``m = decay * m + (1 - decay) * reward``;
3. if ``reward > m``, ``steps`` grows by one more and training goes on (the
   original counts such a validation twice, so a tracker can step over a schedule
   key and never apply it; kept, so that the delta schedule is the original's);
4. otherwise training goes on only if ``reward > m * (1 - U(0, delta))``.

Where we differ from the original: the state is plain data (so that the search
can checkpoint it, send a snapshot to a worker process and replay the worker's
validations in the search process, :meth:`EarlyStopping.record`), the random draw
comes from a per-architecture ``random.Random`` instead of NumPy's global stream,
and the constants are parameters (:class:`~nasseg.search.config.EarlyStoppingConfig`);
``enabled: false`` still tracks the rewards but never stops.
"""
from __future__ import annotations

import copy
import random
from typing import TypedDict

from .config import EarlyStoppingConfig


class TrackerState(TypedDict):
    """One validation point's tracker: running average, current delta, step count."""
    running: float
    delta: float
    steps: int


class EarlyStopping:
    """The trackers of every validation point, keyed by point name."""

    def __init__(self, config: EarlyStoppingConfig, state: dict[str, TrackerState] | None = None):
        self.config = config
        self.points: dict[str, TrackerState] = copy.deepcopy(state) if state else {}

    def state_dict(self) -> dict[str, TrackerState]:
        return copy.deepcopy(self.points)

    def record(self, point: str, reward: float) -> TrackerState:
        """Steps 1-3 for ``reward`` at ``point`` (no decision); return the tracker's new state."""
        p = self.points.setdefault(point, TrackerState(running=self.config.init, delta=self.config.delta,
                                                       steps=0))
        p["delta"] *= self.config.schedule.get(p["steps"], 1.0)
        p["steps"] += 1
        p["running"] = self.config.decay * p["running"] + (1.0 - self.config.decay) * reward
        if reward > p["running"]:
            p["steps"] += 1
        return p

    def step(self, point: str, reward: float, rng: random.Random) -> bool:
        """Record ``reward`` at ``point``; return whether training goes on."""
        p = self.record(point, reward)
        if not self.config.enabled or reward > p["running"]:
            return True
        return reward > p["running"] * (1.0 - rng.uniform(0.0, p["delta"]))
