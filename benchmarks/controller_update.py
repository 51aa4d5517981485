"""Time the search controllers: sampling one architecture and one PPO update.

For both spaces, a PPO strategy with the spec's defaults first observes 100
architectures (so its buffer is full), then, interleaved over the repetitions:

  sample   strategy.propose(): one controller sample, decoded to a genotype
  update   strategy.observe(): baseline + one PPO update on the full buffer of
           100, scored by one batched evaluate
  loop     (with --loop) the same PPO loss with one evaluate per buffered
           architecture, as the original did; for comparison only

Runs on one intra-op thread by default (--threads): the controller's ops are
tiny, and a second thread only adds synchronisation.

    python benchmarks/controller_update.py [--reps 15] [--threads 1] [--loop]
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable

import torch

# Run from a checkout without installing: put the repository root on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nasseg.search import PPOStrategy, StrategyConfig, make_strategy  # noqa: E402


def full_strategy(space: str, embedding: bool, seed: int) -> PPOStrategy:
    """A PPO strategy whose buffer holds ``buffer_size`` observed architectures."""
    s = make_strategy(StrategyConfig(action_embedding=embedding), space, seed)
    assert isinstance(s, PPOStrategy)
    rng = random.Random(seed)
    for _ in range(s.config.buffer_size):
        s.observe(s.propose(), rng.random())
    return s


def loop_update(s: PPOStrategy) -> None:
    """The PPO loss with one evaluate call per buffered architecture."""
    cfg = s.config
    log_probs, entropies = zip(*(s.controller.evaluate(torch.tensor([b[0]])) for b in s.buffer))
    log_probs, entropy = torch.cat(log_probs), torch.cat(entropies)
    old = torch.tensor([b[1] for b in s.buffer])
    adv = torch.tensor([b[2] - s.baseline for b in s.buffer])
    ratio = torch.exp(log_probs - old)
    surrogate = torch.min(ratio * adv, ratio.clamp(1 - cfg.ppo_clip, 1 + cfg.ppo_clip) * adv)
    s._step(-surrogate.mean() - cfg.entropy_coef * entropy.mean())


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--reps", type=int, default=15, help="repetitions (default %(default)s)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default %(default)s)")
    ap.add_argument("--spaces", nargs="+", default=["cvpr", "wacv"], choices=["cvpr", "wacv"])
    ap.add_argument("--action-embedding", action="store_true",
                    help="feed sampled choices back (ENAS) instead of the default feedback")
    ap.add_argument("--loop", action="store_true",
                    help="also time the original's one-evaluate-per-sample update")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    strategies = {sp: full_strategy(sp, args.action_embedding, args.seed) for sp in args.spaces}
    kinds = ["sample", "update"] + (["loop"] if args.loop else [])
    times: dict[tuple[str, str], list[float]] = {(sp, k): [] for sp in args.spaces for k in kinds}
    reward = random.Random(args.seed + 1)
    for _ in range(args.reps):
        for sp, s in strategies.items():
            proposal: list = []
            times[sp, "sample"].append(timed(lambda: proposal.append(s.propose())))
            times[sp, "update"].append(timed(lambda: s.observe(proposal[0], reward.random())))
            if args.loop:
                times[sp, "loop"].append(timed(lambda: loop_update(s)))

    feedback = "action embedding" if args.action_embedding else "default feedback"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {feedback}, "
          f"buffer {next(iter(strategies.values())).config.buffer_size}, {args.reps} reps")
    print(f"{'space':6} {'what':7} {'median s':>10} {'min s':>10}")
    for (sp, k), ts in times.items():
        print(f"{sp:6} {k:7} {statistics.median(ts):10.4f} {min(ts):10.4f}")


if __name__ == "__main__":
    main()
