"""LSTM controllers that sample decoder genotypes, and the flattened action encoding.

An *action* is a genotype written as a flat tuple of integers, in the layout of
the original code (see the spec, "The controllers' decisions"):

- CVPR (20): ``[0, first_op]``, then per cell layer ``[a, b, op_a, op_b]`` (3
  layers), then the 3 decoder connection pairs.
- WACV (44): the 3 templates ``[op_a, op_b, agg]``, then the 7 layers
  ``[a, b, template, repeats - 1, stride_power]``.

The controllers take their *decisions* in a different order (CVPR: connections
first), so each decision records which action position it fills. Every
decision's range depends only on its position, never on earlier choices, which
is what lets :meth:`_LSTMController.evaluate` score a whole batch in one pass.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from ..genotypes import (AGG_OPS, CVPR_CELL_LAYERS, CVPR_DECODER_BLOCKS, CVPR_NUM_POOLS, CVPR_OPS,
                         WACV_MAX_REPEATS, WACV_NUM_LAYERS, WACV_NUM_POOLS, WACV_NUM_TEMPLATES,
                         WACV_OPS, CVPRGenotype, Genotype, GenotypeError, Space, WACVGenotype,
                         genotype_from_legacy)

__all__ = [
    "Decision", "decisions", "action_ranges", "action_length", "genotype_to_action",
    "action_to_genotype", "random_action", "MicroController", "TemplateController",
    "make_controller",
]

INIT_RANGE = 0.1  # the original initialises every controller parameter from U(-0.1, 0.1)


# ---------------------------------------------------------------------------
# Decisions and the action layout
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Decision:
    """One categorical choice of a controller.

    ``position`` is the index it fills in the flattened action; ``kind`` groups
    decisions that share an embedding table (ENAS-style feedback); ``head``
    names the linear layer that scores it (shared by all op choices, as in the
    original, one per position for input choices). ``size == 1`` is a one-way
    choice (always 0): it still takes an LSTM step but has no head.
    """
    position: int
    size: int
    kind: str
    head: str


@lru_cache(maxsize=None)
def decisions(space: Space) -> tuple[Decision, ...]:
    """The controller's decisions for ``space``, in sampling order."""
    out: list[Decision] = []
    if space == "cvpr":
        conn_start = 2 + 4 * CVPR_CELL_LAYERS
        for b in range(CVPR_DECODER_BLOCKS):
            for i in range(2):
                out.append(Decision(conn_start + 2 * b + i, CVPR_NUM_POOLS + b, "conn", f"conn{b}_{i}"))
        out.append(Decision(1, len(CVPR_OPS), "op", "op"))
        for l in range(1, CVPR_CELL_LAYERS + 1):
            base = 2 + 4 * (l - 1)
            upper = 1 + 3 * (l - 1)
            for i in range(2):
                out.append(Decision(base + i, upper, "cell_input", f"cell{l}_{i}"))
            for i in range(2):
                out.append(Decision(base + 2 + i, len(CVPR_OPS), "op", "op"))
    elif space == "wacv":
        for t in range(WACV_NUM_TEMPLATES):
            out.append(Decision(3 * t, len(WACV_OPS), "op", "op"))
            out.append(Decision(3 * t + 1, len(WACV_OPS), "op", "op"))
            out.append(Decision(3 * t + 2, len(AGG_OPS), "agg", "agg"))
        for l in range(WACV_NUM_LAYERS):
            base = 3 * WACV_NUM_TEMPLATES + 5 * l
            for i in range(2):
                out.append(Decision(base + i, WACV_NUM_POOLS + l, "input", f"input{l}_{i}"))
            out.append(Decision(base + 2, WACV_NUM_TEMPLATES, "template", "template"))
            out.append(Decision(base + 3, WACV_MAX_REPEATS, "repeats", "repeats"))
            out.append(Decision(base + 4, 2 if l < WACV_NUM_LAYERS // 2 else 1, "stride", "stride"))
    else:
        raise GenotypeError(f"unknown search space {space!r}; expected 'cvpr' or 'wacv'")
    return tuple(out)


@lru_cache(maxsize=None)
def action_length(space: Space) -> int:
    """20 for CVPR (the leading constant 0 included), 44 for WACV."""
    if space == "cvpr":
        return 2 + 4 * CVPR_CELL_LAYERS + 2 * CVPR_DECODER_BLOCKS
    if space == "wacv":
        return 3 * WACV_NUM_TEMPLATES + 5 * WACV_NUM_LAYERS
    return _unknown(space)


@lru_cache(maxsize=None)
def action_ranges(space: Space) -> tuple[int, ...]:
    """Number of valid values at each action position (1 = constant 0)."""
    ranges = [1] * action_length(space)
    for d in decisions(space):
        ranges[d.position] = d.size
    return tuple(ranges)


def _unknown(space: object) -> int:
    raise GenotypeError(f"unknown search space {space!r}; expected 'cvpr' or 'wacv'")


def genotype_to_action(genotype: Genotype) -> tuple[int, ...]:
    """Flatten a genotype into the original's action layout (no range check)."""
    legacy = genotype.to_legacy()
    if isinstance(genotype, CVPRGenotype):
        first, *layers = legacy[0]
        flat = [0, first]
        for layer in layers:
            flat += layer
        for conn in legacy[1]:
            flat += conn
        return tuple(flat)
    if isinstance(genotype, WACVGenotype):
        return tuple(v for group in legacy for item in group for v in item)
    raise GenotypeError(f"not a genotype: {genotype!r:.200}")


def action_to_genotype(space: Space, action: Sequence[int]) -> Genotype:
    """Inverse of :func:`genotype_to_action` for the default-sized spaces."""
    action = [int(v) for v in action]
    n = action_length(space)
    if len(action) != n:
        raise GenotypeError(f"{space} action needs {n} integers, got {len(action)}")
    if space == "cvpr":
        if action[0] != 0:
            raise GenotypeError(f"cvpr action[0] is the cell's fixed input and must be 0, got {action[0]}")
        cell: list = [action[1]]
        for l in range(CVPR_CELL_LAYERS):
            cell.append(action[2 + 4 * l: 6 + 4 * l])
        start = 2 + 4 * CVPR_CELL_LAYERS
        conns = [action[start + 2 * b: start + 2 * b + 2] for b in range(CVPR_DECODER_BLOCKS)]
        return genotype_from_legacy("cvpr", [cell, conns])
    k = 3 * WACV_NUM_TEMPLATES
    templates = [action[3 * t: 3 * t + 3] for t in range(WACV_NUM_TEMPLATES)]
    structure = [action[k + 5 * l: k + 5 * l + 5] for l in range(WACV_NUM_LAYERS)]
    return genotype_from_legacy("wacv", [templates, structure])


def random_action(space: Space, rng: random.Random) -> tuple[int, ...]:
    """Uniform over every decision's range: what an untrained search would propose."""
    return tuple(rng.randrange(r) if r > 1 else 0 for r in action_ranges(space))


# ---------------------------------------------------------------------------
# Controllers
# ---------------------------------------------------------------------------

class _LSTMController(nn.Module):
    """Stacked-LSTM policy over the decisions of one search space.

    The LSTM first runs ``num_pools`` steps from a learned start vector (one per
    encoder output, nothing sampled), then one step per decision; the decision's
    head turns the step's output into logits. The next step's input is the
    previous output (default, as in the original: the choice does not feed
    back), or with ``action_embedding=True`` an embedding of the choice (ENAS).
    """

    space: Space
    num_pools: int

    def __init__(self, hidden_size: int = 100, num_layers: int = 2,
                 action_embedding: bool = False,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if hidden_size < 1 or num_layers < 1:
            raise ValueError(f"hidden_size and num_layers must be >= 1, got {hidden_size}, {num_layers}")
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.action_embedding = action_embedding
        self.decisions = decisions(self.space)
        self.ranges = action_ranges(self.space)

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
            raise ValueError(f"{self.space} actions must be [B, {self.action_length}], "
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


class MicroController(_LSTMController):
    """CVPR 2019 controller: decoder connections, then the contextual cell."""
    space: Space = "cvpr"
    num_pools = CVPR_NUM_POOLS


class TemplateController(_LSTMController):
    """WACV 2020 controller: three templates, then the seven-layer structure."""
    space: Space = "wacv"
    num_pools = WACV_NUM_POOLS


def make_controller(space: Space, hidden_size: int = 100, num_layers: int = 2,
                    action_embedding: bool = False,
                    generator: torch.Generator | None = None) -> _LSTMController:
    """The controller of ``space`` ("cvpr" -> MicroController, "wacv" -> TemplateController)."""
    classes = {"cvpr": MicroController, "wacv": TemplateController}
    if space not in classes:
        _unknown(space)
    return classes[space](hidden_size, num_layers, action_embedding, generator)
