"""Search strategies behind one propose/observe interface.

The search loop asks for :class:`Proposal` s (possibly several before any
result, one per parallel worker) and reports rewards as they arrive, in any
order. Every strategy is deterministic for a seed and for a given sequence of
``propose``/``observe`` calls, and ``state_dict`` captures everything (RNG states
included), so a resumed search continues exactly as if it had never stopped.

Facts from the original agent (DrSleep/nas-segm-pytorch, ``src/rl/gradient_estimators.py``,
``src/helpers/storage.py``, ``src/rl/agent.py``, ``src/main_search.py``) kept here: the
controller is updated after every reward; the baseline starts at the first reward
and is updated with each new reward *before* the advantage is computed; PPO
recomputes the advantage of every buffered architecture against the current
baseline at each update, then walks the buffer of 100 in a random order
(``BatchSampler(SubsetRandomSampler(range(100)), 1)``: 100 minibatches of one)
taking one Adam step per minibatch on ``-min(r A, clip(r, 1 - 0.1, 1 + 0.1) A)``
(the entropy term has coefficient 0), with the gradient norm clipped at 2 before
each step; one pass (``ppo_epoch=1``). Not kept: its zero-initialised PPO buffer
(until 100 architectures have arrived it also steps on all-zero "architectures"
with reward 0), its shuffles drawn from torch's global RNG (here the strategy's
own seeded stream), and its REINFORCE path that could not run.
``ppo_minibatch_size: buffer_size`` is this project's one-step variant.
"""
from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from pydantic import Field, model_validator
from torch import nn

from ..config import Config
from ..spaces import Space, get_space
from ..spaces.base import Genotype
from .controllers import make_controller
from .policy_kernel import PolicyKernel

__all__ = ["StrategyConfig", "Proposal", "SearchStrategy", "PolicyGradientStrategy", "PPOStrategy",
           "ReinforceStrategy", "RandomStrategy", "EvolutionStrategy", "make_strategy", "STRATEGIES"]

StrategyName = Literal["ppo", "reinforce", "random", "evolution"]
STRATEGIES: tuple[str, ...] = get_args(StrategyName)


class StrategyConfig(Config):
    """How the search proposes architectures (defaults: the papers' PPO set-up)."""
    name: StrategyName = "ppo"
    # Policy gradient (ppo, reinforce)
    lr: float = Field(default=1e-4, gt=0)           # Adam learning rate of the controller
    ppo_clip: float = Field(default=0.1, gt=0, lt=1)
    # PPO trains on the last this-many observed architectures
    buffer_size: int = Field(default=100, ge=1)
    # Architectures per Adam step when an update walks the shuffled buffer (at most
    # buffer_size). 1, the original: one step per buffered architecture, 100 per update.
    # buffer_size: one step on the whole buffer's mean loss, which moves the policy about
    # buffer_size times less per update at the same lr.
    ppo_minibatch_size: int = Field(default=1, ge=1)
    # current: reward - baseline now, recomputed at every update (the original); stored: fixed
    # when the reward arrived
    ppo_advantage: Literal["current", "stored"] = "current"
    entropy_coef: float = Field(default=0.0, ge=0)
    grad_clip: float = Field(default=2.0, gt=0)     # max gradient norm of the controller
    baseline_decay: float = Field(default=0.95, ge=0, lt=1)   # exponential moving average of rewards
    lstm_hidden: int = Field(default=100, ge=1)
    lstm_layers: int = Field(default=2, ge=1)
    action_embedding: bool = False  # feed the sampled choice back (ENAS) instead of the LSTM output
    # Regularised (aging) evolution. Real et al. (2019) used population 100 and tournaments of
    # 25 over 20k models; with the few hundred to few thousand proxy-trained architectures one
    # search here affords, 20 keeps the random warm-up short, and 5 keeps their selection
    # pressure (a quarter of the population per tournament).
    population_size: int = Field(default=20, ge=2)
    tournament_size: int = Field(default=5, ge=1)   # at most population_size
    # chance of mutating each further decision; 0 = exactly one
    mutation_prob: float = Field(default=0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _sizes_fit(self) -> StrategyConfig:
        if self.ppo_minibatch_size > self.buffer_size:
            raise ValueError(f"ppo_minibatch_size must be in [1, buffer_size={self.buffer_size}], "
                             f"got {self.ppo_minibatch_size}")
        if self.tournament_size > self.population_size:
            raise ValueError(f"tournament_size must be in [1, population_size={self.population_size}], "
                             f"got {self.tournament_size}")
        return self


@dataclass(frozen=True)
class Proposal:
    """One architecture to evaluate."""
    id: int                  # 0, 1, 2, ... in proposal order
    genotype: Genotype
    action: tuple[int, ...]
    log_prob: float | None   # under the policy at sampling time (None for non-RL)
    controller_step: int     # number of updates applied to the strategy when proposed


class SearchStrategy(ABC):
    """Common bookkeeping: ids, outstanding proposals, update counter, state."""

    name: str

    def __init__(self, config: StrategyConfig, space: Space, seed: int) -> None:
        self.search_space = get_space(space)
        self.config = config
        self.space = space
        self.seed = seed
        self._next_id = 0
        self._updates = 0
        # Outstanding proposals: id -> (action, log_prob), so a reward can only be
        # reported once, for an architecture this strategy proposed.
        self._pending: dict[int, tuple[tuple[int, ...], float | None]] = {}

    @property
    def num_updates(self) -> int:
        """Rewards taken into account so far (controller updates for RL)."""
        return self._updates

    def propose(self) -> Proposal:
        action, log_prob = self._propose_action()
        proposal = Proposal(self._next_id, self.search_space.decode(action), action,
                            log_prob, self._updates)
        self._pending[proposal.id] = (action, log_prob)
        self._next_id += 1
        return proposal

    def observe(self, proposal: Proposal, reward: float) -> None:
        expected = self._pending.get(proposal.id)
        if expected is None:
            raise ValueError(f"proposal {proposal.id} is not outstanding (never proposed, or its "
                             "reward was already observed)")
        if tuple(proposal.action) != expected[0]:
            raise ValueError(f"proposal {proposal.id}: action differs from the one proposed")
        reward = float(reward)
        if reward != reward or reward in (float("inf"), float("-inf")):
            raise ValueError(f"proposal {proposal.id}: reward must be finite, got {reward}")
        del self._pending[proposal.id]
        self._observe(expected[0], expected[1], reward)
        self._updates += 1

    @abstractmethod
    def _propose_action(self) -> tuple[tuple[int, ...], float | None]:
        """The next action and its log-probability (None without a policy)."""

    @abstractmethod
    def _observe(self, action: tuple[int, ...], log_prob: float | None, reward: float) -> None:
        """Learn from one reward."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly; plain data, loadable with weights_only."""
        return {"strategy": self.name, "space": self.space, "seed": self.seed,
                "config": self.config.model_dump(), "next_id": self._next_id,
                "num_updates": self._updates,
                "pending": [[i, list(a), lp] for i, (a, lp) in self._pending.items()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, mine in (("strategy", self.name), ("space", self.space)):
            if state.get(key) != mine:
                raise ValueError(f"state is for {key} {state.get(key)!r}, this strategy is {mine!r}")
        self._next_id = int(state["next_id"])
        self._updates = int(state["num_updates"])
        self._pending = {int(i): (tuple(int(v) for v in a), lp) for i, a, lp in state["pending"]}


# ---------------------------------------------------------------------------
# Policy gradient: PPO and REINFORCE
# ---------------------------------------------------------------------------

class PolicyGradientStrategy(SearchStrategy):
    """An LSTM controller trained from rewards minus a moving-average baseline."""

    def __init__(self, config: StrategyConfig, space: Space, seed: int) -> None:
        super().__init__(config, space, seed)
        # One generator initialises the controller and then draws every sample.
        self.generator = torch.Generator().manual_seed(seed)
        self.controller = make_controller(space, config.lstm_hidden, config.lstm_layers,
                                          config.action_embedding, self.generator)
        # fused: one kernel over all parameters, the bulk of a per-sample PPO step otherwise.
        self.optimizer = torch.optim.Adam(self.controller.parameters(), lr=config.lr, fused=True)
        self.rng = random.Random(seed)  # minibatch shuffles
        self.baseline: float | None = None

    def _propose_action(self) -> tuple[tuple[int, ...], float | None]:
        with torch.no_grad():
            action, log_prob, _ = self.controller.sample(self.generator)
        return action, float(log_prob)

    def _update_baseline(self, reward: float) -> float:
        """Move the baseline towards ``reward`` first (as the original), return the advantage."""
        if self.baseline is None:
            self.baseline = reward
        else:
            d = self.config.baseline_decay
            self.baseline = d * self.baseline + (1 - d) * reward
        return reward - self.baseline

    def _step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._apply_gradients()

    def _apply_gradients(self) -> None:
        """Clip the gradient's norm (as the original, at ``grad_clip``) and take one Adam step."""
        nn.utils.clip_grad_norm_(self.controller.parameters(), self.config.grad_clip, foreach=True)
        self.optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "controller": self.controller.state_dict(),
                "optimizer": self.optimizer.state_dict(), "baseline": self.baseline,
                "generator": self.generator.get_state(), "rng": self.rng.getstate()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.controller.load_state_dict(state["controller"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.baseline = state["baseline"]
        self.generator.set_state(state["generator"])
        self.rng.setstate(_as_random_state(state["rng"]))


class PPOStrategy(PolicyGradientStrategy):
    """Clipped-surrogate updates over a buffer of the last ``buffer_size`` observations.

    One update per observed reward, as the original: the buffer is shuffled and
    walked in minibatches of ``ppo_minibatch_size`` architectures (default 1, as
    the original), one Adam step each. With the default feedback a step is one
    :class:`PolicyKernel` pass over the decision sequence, whatever the
    minibatch's size; with ``action_embedding`` the minibatch is scored by
    autograd through a teacher-forced batch.
    """
    name = "ppo"

    def __init__(self, config: StrategyConfig, space: Space, seed: int) -> None:
        super().__init__(config, space, seed)
        # Newest last; each entry: (action, old log_prob, reward, advantage when observed).
        self.buffer: list[tuple[tuple[int, ...], float, float, float]] = []
        self.kernel = None if config.action_embedding else PolicyKernel(self.controller)

    def _observe(self, action: tuple[int, ...], log_prob: float | None, reward: float) -> None:
        assert log_prob is not None
        advantage = self._update_baseline(reward)
        self.buffer.append((action, log_prob, reward, advantage))
        del self.buffer[:-self.config.buffer_size]
        self._update()

    def _update(self) -> None:
        # One intra-op thread: the operators are tiny, and beside a busy second core
        # OpenMP's synchronisation made the update 20x slower.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            self._update_on_one_thread()
        finally:
            torch.set_num_threads(threads)

    def _update_on_one_thread(self) -> None:
        cfg = self.config
        actions = torch.tensor([b[0] for b in self.buffer])
        old_log_probs = torch.tensor([b[1] for b in self.buffer], dtype=torch.float32)
        if cfg.ppo_advantage == "current":
            advantages = torch.tensor([b[2] - self.baseline for b in self.buffer], dtype=torch.float32)
        else:
            advantages = torch.tensor([b[3] for b in self.buffer], dtype=torch.float32)
        order = list(range(len(self.buffer)))
        size = cfg.ppo_minibatch_size
        if size < len(order):
            self.rng.shuffle(order)
        chosen = None if self.kernel is None else self.kernel.chosen(actions)
        for first in range(0, len(order), size):
            idx = torch.tensor(order[first:first + size])
            if chosen is not None:
                self._kernel_step(chosen[idx], old_log_probs[idx], advantages[idx])
                continue
            log_probs, entropy = self.controller.evaluate(actions[idx])
            ratio = torch.exp(log_probs - old_log_probs[idx])
            adv = advantages[idx]
            surrogate = torch.min(ratio * adv, ratio.clamp(1 - cfg.ppo_clip, 1 + cfg.ppo_clip) * adv)
            self._step(-surrogate.mean() - cfg.entropy_coef * entropy.mean())

    def _kernel_step(self, chosen: torch.Tensor, old_log_probs: torch.Tensor,
                     advantages: torch.Tensor) -> None:
        """One Adam step on a minibatch's loss -mean(min(r A, clip(r) A)) - entropy_coef * H.

        The derivative by hand, as autograd takes it: d loss / d log p_j =
        -s_j r_j A_j / m, where s_j is the share of the gradient that torch.min and
        clamp pass through the unclipped term: 1 where r A is the smaller term, 0
        where the clipped one is, and at a tie (always, inside the clip range) one
        half from each term, the clipped one passing it only inside the range.
        """
        assert self.kernel is not None
        eps = self.config.ppo_clip
        self.kernel.forward()
        ratio = torch.exp(self.kernel.log_probs(chosen) - old_log_probs)
        unclipped = ratio * advantages
        clipped = ratio.clamp(1 - eps, 1 + eps) * advantages
        inside = ((ratio >= 1 - eps) & (ratio <= 1 + eps)).to(ratio.dtype)
        share = torch.where(unclipped < clipped, 1.0,
                            torch.where(unclipped == clipped, 0.5 + 0.5 * inside, 0.0))
        self.kernel.backward(-share * unclipped / len(chosen), chosen, -self.config.entropy_coef)
        self.kernel.clip_grad_norm_(self.config.grad_clip)
        self.optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(),
                "buffer": [[list(a), lp, r, adv] for a, lp, r, adv in self.buffer]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.buffer = [(tuple(int(v) for v in a), float(lp), float(r), float(adv))
                       for a, lp, r, adv in state["buffer"]]


class ReinforceStrategy(PolicyGradientStrategy):
    """loss = -advantage * log p(action), recomputed under the current policy."""
    name = "reinforce"

    def _observe(self, action: tuple[int, ...], log_prob: float | None, reward: float) -> None:
        advantage = self._update_baseline(reward)
        log_probs, entropy = self.controller.evaluate(torch.tensor([action]))
        self._step(-advantage * log_probs.sum() - self.config.entropy_coef * entropy.sum())


# ---------------------------------------------------------------------------
# Controller-free baselines
# ---------------------------------------------------------------------------

class RandomStrategy(SearchStrategy):
    """Uniform over every decision's range; rewards are ignored."""
    name = "random"

    def __init__(self, config: StrategyConfig, space: Space, seed: int) -> None:
        super().__init__(config, space, seed)
        self.rng = random.Random(seed)

    def _propose_action(self) -> tuple[tuple[int, ...], float | None]:
        return self.search_space.random_action(self.rng), None

    def _observe(self, action: tuple[int, ...], log_prob: float | None, reward: float) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "rng": self.rng.getstate()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.rng.setstate(_as_random_state(state["rng"]))


class EvolutionStrategy(SearchStrategy):
    """Regularised (aging) evolution, Real et al. 2019.

    Until ``population_size`` rewards have arrived, proposals are random (this
    also covers parallel workers asking before any result). Then: sample
    ``tournament_size`` members, mutate the best one's action, and when a child's
    reward arrives it joins the population and the oldest member leaves.
    """
    name = "evolution"

    def __init__(self, config: StrategyConfig, space: Space, seed: int) -> None:
        super().__init__(config, space, seed)
        self.rng = random.Random(seed)
        self.ranges = self.search_space.action_ranges
        self._mutable = [i for i, r in enumerate(self.ranges) if r > 1]
        # Oldest first: (action, reward).
        self.population: list[tuple[tuple[int, ...], float]] = []

    def _propose_action(self) -> tuple[tuple[int, ...], float | None]:
        if len(self.population) < self.config.population_size:
            return self.search_space.random_action(self.rng), None
        contenders = self.rng.sample(self.population, self.config.tournament_size)
        parent = max(contenders, key=lambda member: member[1])  # first best on ties
        return self.mutate(parent[0]), None

    def mutate(self, action: tuple[int, ...]) -> tuple[int, ...]:
        """Change one uniformly chosen decision to a different valid value (and,
        with ``mutation_prob``, each other decision too)."""
        child = list(action)
        first = self.rng.choice(self._mutable)
        for i in self._mutable:
            if i == first or (self.config.mutation_prob > 0
                              and self.rng.random() < self.config.mutation_prob):
                new = self.rng.randrange(self.ranges[i] - 1)
                child[i] = new + (new >= child[i])  # uniform over the other values
        return tuple(child)

    def _observe(self, action: tuple[int, ...], log_prob: float | None, reward: float) -> None:
        self.population.append((action, reward))
        del self.population[:-self.config.population_size]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "rng": self.rng.getstate(),
                "population": [[list(a), r] for a, r in self.population]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.rng.setstate(_as_random_state(state["rng"]))
        self.population = [(tuple(int(v) for v in a), float(r)) for a, r in state["population"]]


def _as_random_state(state: Any) -> tuple:
    """random.Random.setstate needs tuples; serialisers may hand back lists."""
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


_CLASSES: dict[str, type[SearchStrategy]] = {
    "ppo": PPOStrategy, "reinforce": ReinforceStrategy,
    "random": RandomStrategy, "evolution": EvolutionStrategy,
}


def make_strategy(config: StrategyConfig, space: Space, seed: int) -> SearchStrategy:
    """The strategy named by ``config.name`` for ``space``, seeded with ``seed``."""
    return _CLASSES[config.name](config, space, seed)
