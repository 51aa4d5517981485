"""Search spaces: the registry, the SearchSpace contract, and a third space defined here.

The toy space below is registered from this file only; the controller, every
search strategy and the segmenter must run it without a change to the library.
"""
from __future__ import annotations

import ast
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from pydantic import ValidationError
from torch import nn

import nasseg
from nasseg.models.ops import OPS
from nasseg.search import STRATEGIES, StrategyConfig, make_controller, make_strategy
from nasseg.search.runner import SearchConfig
from nasseg.spaces import SPACES, get_space, register_space
from nasseg.spaces.base import (Decision, Genotype, GenotypeError, SearchSpace, check, check_index,
                                check_op)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]

# -- a third search space ------------------------------------------------------------

TOY_OPS = ("conv1x1", "conv3x3", "sep_conv_3x3")
TOY_WIDTHS = (8, 16)


@dataclass(frozen=True)
class ToyGenotype(Genotype):
    """One op on one of the two encoder outputs, at a chosen width."""
    op: str
    source: int
    width: int

    space: ClassVar[str] = "toy"

    def __post_init__(self) -> None:
        check_op(self.op, TOY_OPS, "toy op")
        check_index(self.source, 2, "toy source")
        check(self.width in TOY_WIDTHS, f"toy width: {self.width!r} not in {TOY_WIDTHS}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ToyGenotype:
        return cls(**d)


class ToyDecoder(nn.Module):
    def __init__(self, genotype: ToyGenotype, in_channels: list[int], num_classes: int):
        super().__init__()
        self.source = genotype.source
        self.op = OPS[genotype.op](in_channels[genotype.source], genotype.width, 1, 1)
        self.clf = nn.Conv2d(genotype.width, num_classes, 1)

    def forward(self, feats: list[torch.Tensor], aux: bool = True) -> torch.Tensor:
        return self.clf(self.op(feats[self.source]))


class ToySpace(SearchSpace[ToyGenotype]):
    """Action (op, source, width); the controller picks the width first."""
    name = "toy"
    genotype_type = ToyGenotype
    encoder_stages = (1, 2)
    published = {"tiny": ToyGenotype("conv1x1", 0, 8)}
    decisions = (Decision(2, len(TOY_WIDTHS), "width", "width"),
                 Decision(0, len(TOY_OPS), "op", "op"),
                 Decision(1, 2, "source", "source"))

    def encode(self, genotype: Genotype) -> tuple[int, ...]:
        g = self.own(genotype)
        return (TOY_OPS.index(g.op), g.source, TOY_WIDTHS.index(g.width))

    def _decode(self, action: list[int]) -> ToyGenotype:
        op, source, width = action
        check_index(op, len(TOY_OPS), "toy action op")
        check_index(width, len(TOY_WIDTHS), "toy action width")
        return ToyGenotype(TOY_OPS[op], source, TOY_WIDTHS[width])

    def build_decoder(self, genotype: Genotype, in_channels: list[int], num_classes: int, *,
                      agg_size: int, repeats: int, aux_cell: bool) -> nn.Module:
        return ToyDecoder(self.own(genotype), in_channels, num_classes)


TOY = register_space(ToySpace())


def seen_values(actions: list[tuple[int, ...]]) -> list[set[int]]:
    return [{a[i] for a in actions} for i in range(TOY.action_length)]


# -- the registry ----------------------------------------------------------------------

def test_registry_holds_the_spaces():
    assert get_space("cvpr").genotype_type is nasseg.CVPRGenotype
    assert get_space("wacv").genotype_type is nasseg.WACVGenotype
    assert SPACES["toy"] is TOY and sorted(SPACES) == ["cvpr", "toy", "wacv"]
    assert TOY.action_length == 3 and TOY.action_ranges == (3, 2, 2) and TOY.num_pools == 2


@pytest.mark.parametrize("call", [
    lambda: get_space("nope"),
    lambda: nasseg.random_genotype("nope", random.Random(0)),
    lambda: nasseg.published_genotype("nope", "arch0"),
    lambda: nasseg.genotype_from_legacy("nope", []),
    lambda: nasseg.genotype_from_dict({"space": "nope"}),
    lambda: make_controller("nope"),
    lambda: make_strategy(StrategyConfig(name="random"), "nope", 0),
], ids=["get_space", "random_genotype", "published", "legacy", "dict", "controller", "strategy"])
def test_unknown_space_names_the_known_ones(call):
    with pytest.raises(GenotypeError, match=r"^unknown search space 'nope'; expected one of cvpr, toy, wacv$"):
        call()


def test_search_config_accepts_registered_spaces_only():
    assert SearchConfig(space="toy").space == "toy"
    with pytest.raises(ValidationError, match="unknown search space 'nope'"):
        SearchConfig(space="nope")


@dataclass
class MutableGenotype(Genotype):
    space: ClassVar[str] = "other"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MutableGenotype:
        return cls()


@dataclass(frozen=True)
class OtherGenotype(Genotype):
    space: ClassVar[str] = "other"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OtherGenotype:
        return cls()


@pytest.mark.parametrize("changes,match", [
    ({}, "'toy' is already registered"),
    ({"name": "other"}, "ToyGenotype names space 'toy'"),
    ({"name": "other", "genotype_type": MutableGenotype}, "must be a frozen dataclass"),
    ({"name": "other", "genotype_type": OtherGenotype,
      "decisions": (Decision(0, 2, "a", "a"), Decision(0, 3, "b", "b"))}, "distinct non-negative positions"),
    ({"name": "other", "genotype_type": OtherGenotype,
      "decisions": (Decision(0, 0, "a", "a"),)}, "size >= 1"),
])
def test_register_checks_the_space(changes, match):
    bad = type("BadSpace", (ToySpace,), changes)()
    with pytest.raises(ValueError, match=match):
        register_space(bad)
    assert sorted(SPACES) == ["cvpr", "toy", "wacv"]


def test_no_library_code_outside_the_spaces_names_a_space():
    """Nothing outside nasseg/spaces compares with a space's name or uses its genotype class."""
    offenders = []
    for path in sorted((ROOT / "nasseg").rglob("*.py")):
        if "spaces" in path.relative_to(ROOT / "nasseg").parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in ("cvpr", "wacv"):
                offenders.append(f"{path.name}:{node.lineno} {node.value!r}")
            if isinstance(node, ast.Name) and node.id in ("CVPRGenotype", "WACVGenotype"):
                offenders.append(f"{path.name}:{node.lineno} {node.id}")
    assert offenders == []


# -- the contract, for every registered space --------------------------------------------

@pytest.mark.parametrize("name", sorted(SPACES))
def test_encode_decode_round_trips(name):
    space = get_space(name)
    rng = random.Random(7)
    for _ in range(200):
        action = space.random_action(rng)
        assert all(0 <= v < r for v, r in zip(action, space.action_ranges, strict=True))
        g = space.decode(action)
        assert isinstance(g, space.genotype_type) and g.space == name
        assert space.encode(g) == action
        assert space.decode(space.encode(g)) == g
        assert nasseg.genotype_from_json(g.to_json()) == g
    assert space.published, "every registered space here has published genotypes"
    for published in space.published:
        g = nasseg.published_genotype(name, published)
        assert space.decode(space.encode(g)) == g
        assert nasseg.genotype_from_dict(g.to_dict()) == g


@pytest.mark.parametrize("name", sorted(SPACES))
def test_random_genotype_decodes_the_random_action(name):
    """One sampler: random_genotype is the decoded random action, draw for draw."""
    a, b = random.Random(3), random.Random(3)
    for _ in range(20):
        assert nasseg.random_genotype(name, a) == get_space(name).decode(get_space(name).random_action(b))


@pytest.mark.parametrize("name", sorted(SPACES))
def test_decode_checks_the_length_and_encode_the_space(name):
    space = get_space(name)
    with pytest.raises(GenotypeError, match=f"{name} action needs {space.action_length} integers"):
        space.decode([0] * (space.action_length + 1))
    other = next(s for s in SPACES.values() if s is not space)
    with pytest.raises(GenotypeError, match=f"expected a {space.genotype_type.__name__}"):
        space.encode(other.random_genotype(random.Random(0)))


# The spec's published genotypes, in the original notation (search-spaces.md).
SPEC_LEGACY = {
    ("cvpr", "arch0"): [[8, [0, 0, 5, 2], [0, 2, 8, 8], [0, 5, 1, 4]], [[3, 3], [3, 2], [3, 0]]],
    ("cvpr", "arch1"): [[2, [1, 0, 3, 6], [0, 1, 2, 8], [2, 0, 6, 1]], [[2, 3], [3, 1], [4, 4]]],
    ("cvpr", "arch2"): [[5, [0, 0, 4, 1], [3, 2, 0, 1], [5, 6, 5, 0]], [[1, 3], [4, 3], [2, 2]]],
    ("wacv", "arch0"): [[[3, 0, 1], [4, 1, 1], [3, 1, 1]],
                        [[0, 1, 0, 0, 1], [2, 1, 2, 1, 0], [3, 1, 1, 1, 0], [1, 1, 2, 0, 0],
                         [3, 0, 2, 0, 0], [5, 3, 2, 1, 0], [0, 5, 0, 1, 0]]],
    ("wacv", "arch1"): [[[1, 1, 0], [1, 3, 0], [3, 4, 0]],
                        [[1, 1, 0, 0, 0], [0, 1, 1, 1, 1], [3, 1, 2, 3, 0], [3, 0, 2, 2, 0],
                         [0, 1, 2, 0, 0], [2, 1, 1, 3, 0], [4, 0, 2, 2, 0]]],
}


def test_published_genotypes_written_with_op_names_are_the_specs():
    assert {(s, n) for s in ("cvpr", "wacv") for n in get_space(s).published} == set(SPEC_LEGACY)
    for (space, name), legacy in SPEC_LEGACY.items():
        g = nasseg.published_genotype(space, name)
        assert g == nasseg.genotype_from_legacy(space, legacy) and g.to_legacy() == legacy
    with pytest.raises(KeyError, match="known: toy/tiny"):
        nasseg.published_genotype("toy", "arch0")


# -- the toy space through the search and the models --------------------------------------

def test_toy_genotypes_are_plain_data_without_legacy_notation():
    g = nasseg.published_genotype("toy", "tiny")
    assert g.to_dict() == {"space": "toy", "op": "conv1x1", "source": 0, "width": 8}
    assert nasseg.genotype_from_json(g.to_json()) == g
    with pytest.raises(GenotypeError, match="toy space has no legacy"):
        nasseg.genotype_from_legacy("toy", [0, 0, 0])
    with pytest.raises(GenotypeError, match="toy width"):
        nasseg.genotype_from_dict({**g.to_dict(), "width": 9})


@pytest.mark.parametrize("embedding", [False, True])
def test_controller_samples_the_toy_space(embedding):
    c = make_controller("toy", hidden_size=16, action_embedding=embedding,
                        generator=torch.Generator().manual_seed(0))
    assert c.space is TOY and c.num_pools == 2 and set(c.heads) == {"width", "op", "source"}
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        samples = [c.sample(g) for _ in range(60)]
    actions = [a for a, _, _ in samples]
    assert all(isinstance(TOY.decode(a), ToyGenotype) for a in actions)
    assert [len(v) for v in seen_values(actions)] == list(TOY.action_ranges)
    log_probs, _ = c.evaluate(torch.tensor(actions))
    assert torch.allclose(log_probs, torch.stack([lp for _, lp, _ in samples]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["ppo", "reinforce"])
def test_policy_gradient_update_on_the_toy_space(name):
    s = make_strategy(StrategyConfig(name=name, lr=1e-2, lstm_hidden=16), "toy", 0)
    s.observe(s.propose(), 0.0)                  # first reward: the baseline, advantage 0
    p = s.propose()
    assert isinstance(p.genotype, ToyGenotype) and TOY.decode(p.action) == p.genotype

    def log_prob() -> float:
        with torch.no_grad():
            return float(s.controller.evaluate(torch.tensor([p.action]))[0])
    before = log_prob()
    assert p.log_prob == pytest.approx(before, abs=1e-6)
    s.observe(p, 1.0)                           # positive advantage: more likely
    assert log_prob() > before
    assert s.num_updates == 2


@pytest.mark.parametrize("name", STRATEGIES)
def test_every_strategy_searches_the_toy_space(name):
    cfg = StrategyConfig(name=name, lstm_hidden=16, population_size=4, tournament_size=2)
    s = make_strategy(cfg, "toy", 0)
    proposals = []
    for _ in range(40):
        p = s.propose()
        assert isinstance(p.genotype, ToyGenotype) and TOY.decode(p.action) == p.genotype
        s.observe(p, float(p.genotype.width == 16 and p.genotype.op == "conv3x3"))
        proposals.append(p)
    assert [len(v) for v in seen_values([p.action for p in proposals])] == list(TOY.action_ranges)
    if name == "evolution":
        for parent, _ in s.population:
            assert sum(x != y for x, y in zip(s.mutate(parent), parent)) == 1


def test_segmenter_from_a_sampled_toy_genotype():
    g = TOY.random_genotype(random.Random(0))
    model = nasseg.build_segmenter(g, 5)
    assert model.space == "toy" and model.encoder.return_stages == (1, 2)
    assert isinstance(model.decoder, ToyDecoder)
    stride = 4 if g.source == 0 else 8         # stages 1 and 2 of MobileNet-v2
    assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 5, 64 // stride, 64 // stride)
    with pytest.raises(ValueError, match=r"aux_cell exists only in spaces with auxiliary cells \(cvpr\)"):
        nasseg.build_segmenter(g, 5, aux_cell=True)
    with pytest.raises(TypeError, match="expected a genotype"):
        nasseg.build_segmenter(g.to_dict(), 5)
