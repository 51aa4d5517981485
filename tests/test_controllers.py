"""Controllers and the flattened action encoding (spec: "The controllers' decisions")."""
from __future__ import annotations

import random

import pytest
import torch

import nasseg
from nasseg.genotypes import AGG_OPS, CVPR_OPS, WACV_OPS, GenotypeError
from nasseg.search import (LSTMController, action_length, action_ranges, action_to_genotype, decisions,
                           genotype_to_action, make_controller, random_action)
from nasseg.search.policy_kernel import PolicyKernel
from nasseg.spaces import get_space

SPACES = ("cvpr", "wacv")


# The controller's ops are tiny: extra intra-op threads only add contention.
pytestmark = pytest.mark.usefixtures("one_torch_thread")

PUBLISHED = [("cvpr", "arch0"), ("cvpr", "arch1"), ("cvpr", "arch2"), ("wacv", "arch0"), ("wacv", "arch1")]


def _controller(space: str, seed: int = 0, **kw) -> torch.nn.Module:
    return make_controller(space, generator=torch.Generator().manual_seed(seed), **kw)


# -- action layout -------------------------------------------------------------

def test_action_layout_matches_spec():
    n_ops, n_wops, n_agg = len(CVPR_OPS), len(WACV_OPS), len(AGG_OPS)
    # CVPR: [0, first op], per layer [a, b, op a, op b] with a, b in range(1 + 3(l-1)), then conns.
    assert action_length("cvpr") == 20
    assert action_ranges("cvpr") == (1, n_ops, 1, 1, n_ops, n_ops, 4, 4, n_ops, n_ops,
                                     7, 7, n_ops, n_ops, 4, 4, 5, 5, 6, 6)
    # WACV: 3 x [op a, op b, agg], then 7 x [a, b, template, repeats-1, stride power].
    assert action_length("wacv") == 44
    expected = [n_wops, n_wops, n_agg] * 3
    for l in range(7):
        expected += [2 + l, 2 + l, 3, 4, 2 if l < 3 else 1]
    assert action_ranges("wacv") == tuple(expected)


def test_decision_order_matches_spec():
    # CVPR samples the connections first, then the first op, then the cell layers.
    cvpr = decisions("cvpr")
    assert [d.position for d in cvpr] == [14, 15, 16, 17, 18, 19, 1] + list(range(2, 14))
    assert [d.size for d in cvpr[:6]] == [4, 4, 5, 5, 6, 6]
    # WACV samples in action order.
    wacv = decisions("wacv")
    assert [d.position for d in wacv] == list(range(44))
    assert sum(d.size == 1 for d in wacv) == 4   # stride of layers 3..6: a one-way choice
    assert len(cvpr) == 19                      # the leading 0 is not a decision


@pytest.mark.parametrize("space,name", PUBLISHED)
def test_published_action_round_trip(space, name):
    g = nasseg.published_genotype(space, name)
    action = genotype_to_action(g)
    assert len(action) == action_length(space)
    assert action_to_genotype(space, action) == g
    if space == "cvpr":
        assert list(action[:2]) == [0, g.to_legacy()[0][0]]
    else:
        assert list(action[:3]) == g.to_legacy()[0][0]


@pytest.mark.parametrize("space", SPACES)
def test_random_round_trips(space):
    rng = random.Random(1)
    for _ in range(200):
        g = nasseg.random_genotype(space, rng)
        assert action_to_genotype(space, genotype_to_action(g)) == g
        a = random_action(space, rng)
        assert genotype_to_action(action_to_genotype(space, a)) == a


def test_action_to_genotype_rejects_bad_actions():
    good = genotype_to_action(nasseg.published_genotype("cvpr", "arch0"))
    with pytest.raises(GenotypeError, match="20 integers"):
        action_to_genotype("cvpr", good[:-1])
    with pytest.raises(GenotypeError, match="must be 0"):
        action_to_genotype("cvpr", (1,) + good[1:])
    with pytest.raises(GenotypeError, match="unknown search space"):
        action_length("nope")


# -- controllers -----------------------------------------------------------------

def test_controller_spaces_and_init():
    c = _controller("cvpr", hidden_size=32)
    w = _controller("wacv")
    assert isinstance(c, LSTMController) and c.space is get_space("cvpr") and w.space is get_space("wacv")
    assert (c.num_pools, w.num_pools) == (4, 2)   # one unsampled step per encoder output
    assert c.start.shape[-1] == 32 and len(c.cells) == 2
    for p in c.parameters():
        assert p.abs().max() <= 0.1          # U(-0.1, 0.1), as the original
    # One linear head shared by every op choice, one per position for input choices.
    assert c.heads["op"].out_features == len(CVPR_OPS)
    assert c.heads["conn2_1"].out_features == 6


@pytest.mark.parametrize("space", SPACES)
def test_sampled_values_cover_every_range(space):
    """Every sampled action decodes, stays in range, and every value turns up."""
    c = _controller(space)
    g = torch.Generator().manual_seed(1)
    ranges = action_ranges(space)
    seen = [set() for _ in ranges]
    with torch.no_grad():
        for _ in range(250):
            action, _, _ = c.sample(g)
            action_to_genotype(space, action)
            for i, v in enumerate(action):
                assert 0 <= v < ranges[i]
                seen[i].add(v)
    assert [len(s) for s in seen] == list(ranges)


@pytest.mark.parametrize("space", SPACES)
def test_fed_back_samples_are_valid(space):
    c = _controller(space, action_embedding=True)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for _ in range(40):
            action, _, _ = c.sample(g)
            assert genotype_to_action(action_to_genotype(space, action)) == action
            assert all(0 <= v < r for v, r in zip(action, action_ranges(space)))


@pytest.mark.parametrize("embedding", [False, True])
@pytest.mark.parametrize("space", SPACES)
def test_sample_log_prob_equals_evaluate(space, embedding):
    c = _controller(space, action_embedding=embedding)
    g = torch.Generator().manual_seed(3)
    samples = [c.sample(g) for _ in range(6)]
    actions = torch.tensor([s[0] for s in samples])
    log_probs, entropies = c.evaluate(actions)
    assert torch.allclose(log_probs, torch.stack([s[1] for s in samples]), atol=1e-5, rtol=0)
    assert torch.allclose(entropies, torch.stack([s[2] for s in samples]), atol=1e-4, rtol=0)
    # The sampled log-probabilities are differentiable as well.
    samples[0][1].backward()
    assert c.heads["op"].weight.grad is not None


@pytest.mark.parametrize("embedding", [False, True])
@pytest.mark.parametrize("space", SPACES)
def test_evaluate_batched_equals_one_at_a_time(space, embedding):
    c = _controller(space, action_embedding=embedding)
    rng = random.Random(4)
    actions = torch.tensor([random_action(space, rng) for _ in range(7)])
    lp, ent = c.evaluate(actions)
    singles = [c.evaluate(actions[i:i + 1]) for i in range(len(actions))]
    assert lp.shape == ent.shape == (7,)
    assert torch.allclose(lp, torch.cat([s[0] for s in singles]), atol=1e-5, rtol=0)
    assert torch.allclose(ent, torch.cat([s[1] for s in singles]), atol=1e-4, rtol=0)
    assert (lp < 0).all()


def test_default_feedback_ignores_choices_embedding_does_not():
    """Default: the LSTM path is the same whatever is chosen, so the entropy is too."""
    rng = random.Random(5)
    actions = torch.tensor([random_action("wacv", rng) for _ in range(5)])
    _, ent = _controller("wacv").evaluate(actions)
    assert torch.all(ent == ent[0])
    _, ent = _controller("wacv", action_embedding=True).evaluate(actions)
    assert len(set(ent.tolist())) > 1
    emb = _controller("wacv", action_embedding=True)
    emb.evaluate(actions)[0].sum().backward()
    assert emb.embeddings["template"].weight.grad.abs().sum() > 0


def test_sampling_uses_only_the_given_generator():
    c = _controller("cvpr")
    torch.manual_seed(123)
    global_state = torch.get_rng_state()
    with torch.no_grad():
        a = [c.sample(torch.Generator().manual_seed(7))[0] for _ in range(3)]
    assert a[0] == a[1] == a[2]
    assert torch.equal(torch.get_rng_state(), global_state)
    # And the same seed builds the same controller.
    c2 = _controller("cvpr")
    assert all(torch.equal(p, q) for p, q in zip(c.parameters(), c2.parameters()))


def test_evaluate_rejects_actions_outside_the_controllers_ranges():
    c = _controller("cvpr")
    # Published arch1 reads node 1 in its first cell layer: a valid genotype (an
    # older controller sampled those inputs from range(2)), but not a sample of
    # this controller, which follows the spec's range(1).
    arch1 = genotype_to_action(nasseg.published_genotype("cvpr", "arch1"))
    with pytest.raises(ValueError, match="position 2 is 1"):
        c.evaluate(torch.tensor([arch1]))
    with pytest.raises(ValueError, match=r"\[B, 20\]"):
        c.evaluate(torch.zeros(2, 19, dtype=torch.long))


# -- the written-out passes of the default-feedback controller (PPO's per-sample steps) ----

@pytest.mark.parametrize("space,hidden,layers", [("wacv", 100, 2), ("cvpr", 100, 2), ("cvpr", 24, 1),
                                                 ("wacv", 16, 3)])
def test_policy_kernel_equals_autograd(space, hidden, layers):
    """Log-probabilities, entropy and the gradient of sum_j w_j log p(a_j) + 0.3 H."""
    c = _controller(space, hidden_size=hidden, num_layers=layers)
    rng = random.Random(7)
    actions = torch.tensor([random_action(space, rng) for _ in range(4)])
    weights = torch.tensor([0.7, -1.3, 0.0, 2.1])
    kernel = PolicyKernel(c)
    kernel.forward()
    chosen = kernel.chosen(actions)
    log_probs, entropy = c.evaluate(actions)
    torch.testing.assert_close(kernel.log_probs(chosen), log_probs.detach(), rtol=0, atol=2e-5)
    assert kernel.entropy == pytest.approx(float(entropy[0].detach()), abs=1e-4)
    ((weights * log_probs).sum() + 0.3 * entropy[0]).backward()
    expected = {n: p.grad.clone() for n, p in c.named_parameters()}
    assert all(g.abs().max() > 0 for g in expected.values())
    c.zero_grad(set_to_none=True)
    kernel.backward(weights, chosen, 0.3)
    for n, p in c.named_parameters():
        torch.testing.assert_close(p.grad, expected[n], rtol=1e-4, atol=1e-6, msg=n)
    # Clipping the kernel's flat gradient buffer = torch's clip_grad_norm_.
    reference = [torch.nn.Parameter(torch.zeros_like(p)) for p in c.parameters()]
    for r, p in zip(reference, c.parameters()):
        r.grad = p.grad.clone()
    ref_total = torch.nn.utils.clip_grad_norm_(reference, 0.5)
    total = kernel.clip_grad_norm_(0.5)
    assert float(total) == pytest.approx(float(ref_total), rel=1e-5) and float(total) > 0.5
    for p, r in zip(c.parameters(), reference):
        torch.testing.assert_close(p.grad, r.grad, rtol=1e-5, atol=1e-8)


def test_policy_kernel_needs_the_default_feedback():
    with pytest.raises(ValueError, match="action_embedding: false"):
        PolicyKernel(_controller("cvpr", action_embedding=True))
