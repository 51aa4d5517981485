"""Time the search controllers' PPO update against the authors' update, interleaved.

For each space, a PPO strategy with the defaults observes 100 architectures (so
its buffer is full); then, interleaved over the repetitions:

  sample     strategy.propose(): one controller sample, decoded to a genotype
  update     strategy.observe(): the baseline and the default update, one Adam step
             per buffered architecture (100), each step one PolicyKernel pass
  one-step   the same on a strategy with ppo_minibatch_size = buffer_size: one Adam
             step on the whole buffer's mean loss (this project's optional variant)
  original   the in-run baseline: a re-implementation of the authors' update step for
             step (DrSleep/nas-segm-pytorch, src/rl/gradient_estimators.py PPO.update
             with src/helpers/storage.py and src/rl/micro_controllers.py): their
             controller layout (nn.LSTM run one step per decision, an unused op
             embedding, WACV's one-output stride head), the buffer walked through
             BatchSampler(SubsetRandomSampler(range(100)), 1), and per sample: score
             the architecture by re-running the LSTM, softmax and log-softmax and
             nll_loss per decision, the clipped surrogate, zero_grad, backward, clip
             the gradient norm at 2, Adam step, two .item() reads

Before timing, each space's `original` and `update` are run once from the same
parameters on the same buffer in the same order, and must give the same
parameters (up to float32 rounding): the baseline does the same work.

Runs on one intra-op thread by default (--threads): the controller's ops are
tiny, and a second thread only adds synchronisation.

    python benchmarks/controller_update.py [--reps 7] [--threads 1] [--spaces wacv cvpr]
"""
from __future__ import annotations

import argparse
import copy
import os
import random
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data.sampler import BatchSampler, SubsetRandomSampler

# Run from a checkout without installing: put the repository root on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nasseg.runtime import describe_machine  # noqa: E402
from nasseg.search import PPOStrategy, StrategyConfig, make_strategy  # noqa: E402
from nasseg.search import _lstm  # noqa: E402


class OriginalController(nn.Module):
    """The authors' controller layout, with the parameters of one of ours.

    Their ``nn.LSTM`` holds the same weights as our stack of ``LSTMCell`` s, their
    ``g_emb`` is our ``start``, and their heads are ours under other names; they
    also carry an op embedding that their forward never uses and, for WACV, a
    one-output head for the one-way stride decisions.
    """

    def __init__(self, ours: nn.Module) -> None:
        super().__init__()
        h = ours.hidden_size
        self.num_pools = ours.num_pools
        self.decisions = ours.decisions
        self.rnn = nn.LSTM(h, h, ours.num_layers)
        self.enc_op = nn.Embedding(ours.heads["op"].out_features, h)
        self.g_emb = nn.Parameter(ours.start.detach().clone().view(1, 1, h))
        self.heads = copy.deepcopy(ours.heads)
        self.dummy_stride_op = nn.Linear(h, 1)
        with torch.no_grad():
            for k, cell in enumerate(ours.cells):
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(self.rnn, f"{name}_l{k}").copy_(getattr(cell, name))

    def evaluate(self, action: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Their ``forward(config)``: entropy and log-probability of one architecture."""
        inputs = self.g_emb
        pool_hiddens = []
        layers, h = self.rnn.num_layers, self.rnn.hidden_size
        hidden = (torch.zeros([layers, 1, h]), torch.zeros([layers, 1, h]))
        entropy: torch.Tensor | float = 0
        log_prob: torch.Tensor | float = 0
        for _ in range(self.num_pools):
            output, hidden = self.rnn(inputs, hidden)
            pool_hiddens.append(output.squeeze())
            inputs = output
        for d in self.decisions:
            output, hidden = self.rnn(inputs, hidden)
            head = self.heads[d.head] if d.size > 1 else self.dummy_stride_op
            logits = head(output.squeeze(0))
            softmax_logits = F.softmax(logits, dim=-1)
            log_softmax_logits = F.log_softmax(logits, dim=-1)
            x = torch.tensor(action[d.position], dtype=torch.long).view((1, 1))
            entropy += -1 * (softmax_logits * log_softmax_logits).sum()
            log_prob += -F.nll_loss(log_softmax_logits, x.view(1))
            inputs = output
        return entropy, log_prob

    def evaluate_actions(self, actions_batch: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        log_probs, entropies = [], []
        for i in range(actions_batch.shape[0]):
            entropy, log_prob = self.evaluate(actions_batch[i])
            log_probs.append(log_prob.view(1))
            entropies.append(entropy.view(1))
        return torch.cat(log_probs), torch.cat(entropies)


class OriginalPPO:
    """The authors' ``PPO`` update on a buffer (``RolloutStorage``) of numpy arrays."""

    def __init__(self, controller: OriginalController, config: StrategyConfig, buffer: list,
                 baseline: float) -> None:
        self.controller = controller
        self.optimizer = torch.optim.Adam(controller.parameters(), lr=config.lr)
        self.clip_param, self.max_grad_norm = config.ppo_clip, config.grad_clip
        self.entropy_coef = config.entropy_coef
        self.actions = np.array([b[0] for b in buffer], dtype=np.int64)
        self.action_log_probs = np.array([[b[1]] for b in buffer])
        self.rewards = np.array([[b[2]] for b in buffer])
        self.baseline = baseline

    def update(self, batches: list[list[int]]) -> tuple[float, float]:
        """One update, walking ``batches`` (their BatchSampler's index lists)."""
        advantages = self.rewards - self.baseline
        loss_epoch = entropy_epoch = 0.0
        for indices in batches:
            actions_batch = self.actions[indices]
            old_actions_log_probs_batch = self.action_log_probs[indices]
            adv_targ = advantages[indices]
            action_log_probs, entropy = self.controller.evaluate_actions(actions_batch)
            ratio = torch.exp(action_log_probs - torch.from_numpy(old_actions_log_probs_batch).float())
            adv_targ_th = torch.from_numpy(adv_targ).float()
            surr1 = ratio * adv_targ_th
            surr2 = torch.clamp(ratio, 1.0 - self.clip_param, 1.0 + self.clip_param) * adv_targ_th
            action_loss = -torch.min(surr1, surr2).mean()
            self.optimizer.zero_grad()
            dist_entropy = entropy.mean()
            (action_loss - dist_entropy * self.entropy_coef).backward()
            nn.utils.clip_grad_norm_(self.controller.parameters(), self.max_grad_norm)
            self.optimizer.step()
            loss_epoch += action_loss.item()
            entropy_epoch += dist_entropy.item()
        return loss_epoch / len(batches), entropy_epoch / len(batches)


def their_batches(n: int, generator: torch.Generator) -> list[list[int]]:
    """Their sampler: a random permutation cut into minibatches of one."""
    return list(BatchSampler(SubsetRandomSampler(range(n), generator=generator), 1, drop_last=False))


def full_strategy(space: str, seed: int, **config: object) -> PPOStrategy:
    """A PPO strategy whose buffer holds ``buffer_size`` observed architectures."""
    s = make_strategy(StrategyConfig(**config), space, seed)
    assert isinstance(s, PPOStrategy)
    rng = random.Random(seed)
    for _ in range(s.config.buffer_size):
        s.observe(s.propose(), rng.random())
    return s


def check_same_update(space: str, seed: int) -> float:
    """Run our update and the re-implementation of theirs once from the same state; return
    the largest parameter difference (raises if they differ beyond float32 rounding)."""
    s = make_strategy(StrategyConfig(), space, seed)
    assert isinstance(s, PPOStrategy)
    rng = random.Random(seed)
    with torch.no_grad():
        for _ in range(s.config.buffer_size):
            action, log_prob, _ = s.controller.sample(s.generator)
            s.buffer.append((action, float(log_prob), rng.random(), 0.0))
    s.baseline = 0.5
    original = OriginalPPO(OriginalController(s.controller), s.config, s.buffer, s.baseline)
    theirs = original.controller
    pairs = [(s.controller.start, theirs.g_emb.view(1, -1))]
    for k, cell in enumerate(s.controller.cells):
        pairs += [(getattr(cell, n), getattr(theirs.rnn, f"{n}_l{k}"))
                  for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    pairs += list(zip(s.controller.heads.parameters(), theirs.heads.parameters()))
    before = [p.detach().clone() for p, _ in pairs]
    mirror = random.Random()
    mirror.setstate(s.rng.getstate())
    order = list(range(len(s.buffer)))
    mirror.shuffle(order)                    # the order our update draws
    s._update()
    original.update([[i] for i in order])
    moved = max(float((p.detach() - b).abs().max()) for (p, _), b in zip(pairs, before))
    diff = max(float((p.detach() - q.detach()).abs().max()) for p, q in pairs)
    if diff > 1e-5 or moved < 1e-3:
        raise AssertionError(f"{space}: our update and the authors' differ by {diff:.2e} "
                             f"(parameters moved by up to {moved:.2e})")
    return diff


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cpu_name() -> str:
    """The processor and its vector extensions, for the header of the figures."""
    return f"{describe_machine()}; LSTM loops {_lstm.instruction_set()}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--reps", type=int, default=7, help="repetitions (default %(default)s)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default %(default)s)")
    ap.add_argument("--spaces", nargs="+", default=["wacv", "cvpr"], choices=["cvpr", "wacv"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    for sp in args.spaces:
        print(f"{sp}: our update = the authors' update, largest parameter difference "
              f"{check_same_update(sp, args.seed):.1e}")
    ours = {sp: full_strategy(sp, args.seed) for sp in args.spaces}
    one_step = {sp: full_strategy(sp, args.seed, ppo_minibatch_size=100) for sp in args.spaces}
    theirs = {sp: OriginalPPO(OriginalController(s.controller), s.config, s.buffer, s.baseline)
              for sp, s in ours.items()}
    sampler_rng = torch.Generator().manual_seed(args.seed)
    kinds = ["sample", "update", "one-step", "original"]
    times: dict[tuple[str, str], list[float]] = {(sp, k): [] for sp in args.spaces for k in kinds}
    reward = random.Random(args.seed + 1)
    for _ in range(args.reps):
        for sp in args.spaces:
            s, s1, t = ours[sp], one_step[sp], theirs[sp]
            proposal: list = []
            times[sp, "sample"].append(timed(lambda: proposal.append(s.propose())))
            times[sp, "update"].append(timed(lambda: s.observe(proposal[0], reward.random())))
            p1 = s1.propose()
            times[sp, "one-step"].append(timed(lambda: s1.observe(p1, reward.random())))
            batches = their_batches(len(t.rewards), sampler_rng)
            times[sp, "original"].append(timed(lambda: t.update(batches)))

    print(f"{cpu_name()}, {torch.get_num_threads()} thread(s), "
          f"buffer {next(iter(ours.values())).config.buffer_size}, {args.reps} reps")
    print(f"{'space':6} {'what':9} {'median s':>10} {'min s':>10} {'median / original':>18}")
    for (sp, k), ts in times.items():
        ratio = statistics.median(ts) / statistics.median(times[sp, "original"])
        print(f"{sp:6} {k:9} {statistics.median(ts):10.4f} {min(ts):10.4f} {ratio:18.3f}")


if __name__ == "__main__":
    main()
