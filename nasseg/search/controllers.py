"""The LSTM controller that samples decoder genotypes, and the flat action encoding.

An *action* is a genotype written as a flat tuple of integers; each search space
defines its layout and the controller's *decisions* (:mod:`nasseg.spaces`, e.g.
CVPR: 20 integers, WACV: 44). A decision records which action position it fills,
since a controller may take them in another order (CVPR: connections first).
Every decision's range depends only on its position, never on earlier choices,
which is what lets :meth:`LSTMController.evaluate` score a whole batch in one pass.

The original has one controller class per space (``MicroController``,
``TemplateController``) that differ only in their decisions and number of
encoder outputs; here one :class:`LSTMController` reads both from the space.
The functions below are the action encoding by space name, over the registry.
"""
from __future__ import annotations

import random
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..spaces import Space, SearchSpace, get_space, space_of
from ..spaces.base import Decision, Genotype

__all__ = [
    "Decision", "decisions", "action_ranges", "action_length", "genotype_to_action",
    "action_to_genotype", "random_action", "LSTMController", "make_controller",
]

INIT_RANGE = 0.1  # the original initialises every controller parameter from U(-0.1, 0.1)


# ---------------------------------------------------------------------------
# The action encoding, by space name
# ---------------------------------------------------------------------------

def decisions(space: Space) -> tuple[Decision, ...]:
    """The controller's decisions for ``space``, in sampling order."""
    return get_space(space).decisions


def action_length(space: Space) -> int:
    """20 for CVPR (the leading constant 0 included), 44 for WACV."""
    return get_space(space).action_length


def action_ranges(space: Space) -> tuple[int, ...]:
    """Number of valid values at each action position (1 = constant 0)."""
    return get_space(space).action_ranges


def genotype_to_action(genotype: Genotype) -> tuple[int, ...]:
    """Flatten a genotype into its space's action layout (no range check)."""
    return space_of(genotype).encode(genotype)


def action_to_genotype(space: Space, action: Sequence[int]) -> Genotype:
    """Inverse of :func:`genotype_to_action`."""
    return get_space(space).decode(action)


def random_action(space: Space, rng: random.Random) -> tuple[int, ...]:
    """Uniform over every decision's range: what an untrained search would propose."""
    return get_space(space).random_action(rng)


# ---------------------------------------------------------------------------
# The controller
# ---------------------------------------------------------------------------

class LSTMController(nn.Module):
    """Stacked-LSTM policy over the decisions of one search space.

    The LSTM first runs ``num_pools`` steps from a learned start vector (one per
    encoder output, nothing sampled), then one step per decision; the decision's
    head turns the step's output into logits. The next step's input is the
    previous output (default, as in the original: the choice does not feed
    back), or with ``action_embedding=True`` an embedding of the choice (ENAS).
    """

    def __init__(self, space: SearchSpace, hidden_size: int = 100, num_layers: int = 2,
                 action_embedding: bool = False,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if hidden_size < 1 or num_layers < 1:
            raise ValueError(f"hidden_size and num_layers must be >= 1, got {hidden_size}, {num_layers}")
        self.space = space
        self.num_pools = space.num_pools
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.action_embedding = action_embedding
        self.decisions = space.decisions
        self.ranges = space.action_ranges

        self.start = nn.Parameter(torch.zeros(1, hidden_size))
        # A stack of LSTM cells rather than nn.LSTM: the default feedback is
        # autoregressive (one step at a time), where cells cost ~2.5x less per step.
        self.cells = nn.ModuleList(nn.LSTMCell(hidden_size, hidden_size) for _ in range(num_layers))
        head_sizes: dict[str, int] = {}
        for d in self.decisions:
            if d.size > 1:
                assert head_sizes.setdefault(d.head, d.size) == d.size
        self.heads = nn.ModuleDict({name: nn.Linear(hidden_size, size)
                                    for name, size in head_sizes.items()})
        self.embeddings = nn.ModuleDict()
        if action_embedding:
            kinds: dict[str, int] = {}
            for d in self.decisions:
                kinds[d.kind] = max(kinds.get(d.kind, 0), d.size)
            self.embeddings = nn.ModuleDict({k: nn.Embedding(n, hidden_size) for k, n in kinds.items()})

        # Decisions grouped by head, so each head runs once per pass; ``_order``
        # puts the concatenated groups back into decision order.
        groups: dict[str, list[int]] = {}
        for i, d in enumerate(self.decisions):
            groups.setdefault(d.head if d.size > 1 else "", []).append(i)
        self._groups = [(name, idx) for name, idx in groups.items()]
        concat = [i for _, idx in self._groups for i in idx]
        order = torch.empty(len(concat), dtype=torch.long)
        order[torch.tensor(concat)] = torch.arange(len(concat))
        self.register_buffer("_order", order, persistent=False)
        self.register_buffer("_positions", torch.tensor([d.position for d in self.decisions]),
                             persistent=False)
        self.register_buffer("_sizes", torch.tensor(self.ranges), persistent=False)
        self._kmax = max(d.size for d in self.decisions)
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """U(-0.1, 0.1) for every parameter, as the original."""
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-INIT_RANGE, INIT_RANGE, generator=generator)

    @property
    def action_length(self) -> int:
        return len(self.ranges)

    # -- shared pieces -------------------------------------------------------

    def _step(self, x: torch.Tensor, state: list | None) -> tuple[torch.Tensor, list]:
        """One step of the stacked LSTM: x [B, H] -> top output [B, H], new state."""
        new_state = []
        for layer, cell in enumerate(self.cells):
            h, c = cell(x, None if state is None else state[layer])
            new_state.append((h, c))
            x = h
        return x, new_state

    def _prefix(self) -> tuple[torch.Tensor, list]:
        """The ``num_pools`` unsampled steps; returns the input of the first decision."""
        x, state = self.start, None
        for _ in range(self.num_pools):
            x, state = self._step(x, state)
        return x, state

    def _shared_trajectory(self) -> torch.Tensor:
        """Default feedback: the decision steps' outputs [D, 1, H], whatever is chosen."""
        x, state = self._prefix()
        outputs = []
        for _ in self.decisions:
            x, state = self._step(x, state)
            outputs.append(x)
        return torch.stack(outputs)

    def _log_prob_table(self, outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-decision log-probabilities, padded with -inf, and entropies.

        ``outputs``: LSTM outputs [D, B, H] (B = 1 when shared by the batch).
        Returns ``logp`` [D, B, Kmax] and ``entropy`` [D, B].
        """
        d_, b_, _ = outputs.shape
        tables, ents = [], []
        for name, idx in self._groups:
            if name == "":  # one-way choices: log p = 0, entropy 0
                tables.append(F.pad(outputs.new_zeros(len(idx), b_, 1), (0, self._kmax - 1),
                                    value=float("-inf")))
                ents.append(outputs.new_zeros(len(idx), b_))
                continue
            logits = self.heads[name](outputs[idx])
            logp = F.log_softmax(logits, dim=-1)
            ents.append(-(logp.exp() * logp).sum(-1))
            tables.append(F.pad(logp, (0, self._kmax - logp.shape[-1]), value=float("-inf")))
        logp = torch.cat(tables)[self._order]
        entropy = torch.cat(ents)[self._order]
        return logp, entropy

    def _check_actions(self, actions: torch.Tensor) -> torch.Tensor:
        actions = torch.as_tensor(actions, dtype=torch.long)
        if actions.dim() == 1:
            actions = actions.unsqueeze(0)
        if actions.dim() != 2 or actions.shape[1] != self.action_length:
            raise ValueError(f"{self.space.name} actions must be [B, {self.action_length}], "
                             f"got {tuple(actions.shape)}")
        bad = (actions < 0) | (actions >= self._sizes)
        if bad.any():
            row, col = (int(v) for v in bad.nonzero()[0])
            raise ValueError(f"action {row}: position {col} is {int(actions[row, col])}, "
                             f"outside the controller's range [0, {self.ranges[col]})")
        return actions

    # -- public API ------------------------------------------------------------

    def sample(self, generator: torch.Generator) -> tuple[tuple[int, ...], torch.Tensor, torch.Tensor]:
        """Sample one action; returns (action, log_prob, entropy) as 0-d tensors."""
        if self.action_embedding:
            return self._sample_fed_back(generator)
        logp, entropy = self._log_prob_table(self._shared_trajectory())   # [D, 1, K]
        logp = logp[:, 0]
        # The choices do not change the trajectory, so draw all of them at once.
        choice = torch.multinomial(logp.detach().exp(), 1, generator=generator).squeeze(1)
        log_prob = logp.gather(1, choice.unsqueeze(1)).sum()
        action = [0] * self.action_length
        for d, c in zip(self.decisions, choice.tolist()):
            action[d.position] = c
        return tuple(action), log_prob, entropy.sum()

    def _sample_fed_back(self, generator: torch.Generator
                         ) -> tuple[tuple[int, ...], torch.Tensor, torch.Tensor]:
        x, state = self._prefix()
        action = [0] * self.action_length
        log_prob = x.new_zeros(())
        entropy = x.new_zeros(())
        for d in self.decisions:
            out, state = self._step(x, state)
            if d.size > 1:
                logp = F.log_softmax(self.heads[d.head](out), dim=-1)[0]
                c = int(torch.multinomial(logp.detach().exp(), 1, generator=generator))
                log_prob = log_prob + logp[c]
                entropy = entropy - (logp.exp() * logp).sum()
            else:
                c = 0
            action[d.position] = c
            x = self.embeddings[d.kind](torch.tensor([c]))
        return tuple(action), log_prob, entropy

    def evaluate(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities [B] and entropies [B] of a batch of actions [B, L].

        One batched pass: with the default feedback the LSTM trajectory does not
        depend on the action, so it runs once and each row just gathers its
        choices; with ``action_embedding`` the batch is teacher-forced through a
        batch through the LSTM steps (the batch is the cells' batch dimension).
        """
        actions = self._check_actions(actions)
        batch = actions.shape[0]
        chosen = actions[:, self._positions].t()                      # [D, B]
        if not self.action_embedding:
            outputs = self._shared_trajectory()                        # [D, 1, H]
        else:
            x, state = self._prefix()
            x = x.expand(batch, -1)
            state = [(h.expand(batch, -1), c.expand(batch, -1)) for h, c in state]
            steps = []
            for i, d in enumerate(self.decisions):
                x, state = self._step(x, state)
                steps.append(x)
                x = self.embeddings[d.kind](chosen[i])
            outputs = torch.stack(steps)                               # [D, B, H]
        logp, entropy = self._log_prob_table(outputs)
        logp = logp.expand(-1, batch, -1).gather(2, chosen.unsqueeze(2)).squeeze(2)
        return logp.sum(0), entropy.expand(-1, batch).sum(0)


def make_controller(space: Space, hidden_size: int = 100, num_layers: int = 2,
                    action_embedding: bool = False,
                    generator: torch.Generator | None = None) -> LSTMController:
    """The controller of the registered space called ``space``."""
    return LSTMController(get_space(space), hidden_size, num_layers, action_embedding, generator)
