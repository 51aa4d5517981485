"""Genotypes: typed, frozen, JSON and legacy round trips, validation."""
import dataclasses
import json
import random

import pytest

import nasseg
from nasseg.genotypes import (AGG_OPS, CVPR_OPS, WACV_OPS, CellLayer, Connection, CVPRGenotype,
                              GenotypeError, Template, TemplateLayer, WACVGenotype)

PUBLISHED = [("cvpr", "arch0"), ("cvpr", "arch1"), ("cvpr", "arch2"), ("wacv", "arch0"), ("wacv", "arch1")]


@pytest.mark.parametrize("space,name", PUBLISHED)
def test_published_round_trips(space, name):
    g = nasseg.published_genotype(space, name)
    assert g.space == space
    assert nasseg.genotype_from_legacy(space, g.to_legacy()) == g
    assert nasseg.genotype_from_json(g.to_json()) == g
    # JSON is plain data with readable op names, no indices into op lists.
    text = g.to_json()
    assert json.loads(text)["space"] == space
    ops = CVPR_OPS if space == "cvpr" else WACV_OPS
    assert any(op in text for op in ops)


def test_legacy_fields_are_named():
    g = nasseg.published_genotype("wacv", "arch0")
    assert g.templates[0] == Template("max_pool_3x3", "sep_conv_3x3", "cat")
    # [0, 1, 0, 0, 1]: inputs 0 and 1, template 0, 1 repeat, stride 2.
    assert g.layers[0] == TemplateLayer(input_a=0, input_b=1, template=0, repeats=1, stride=2)
    assert g.layers[1].repeats == 2
    c = nasseg.published_genotype("cvpr", "arch0")
    assert c.first_op == "sep_conv_5x5_dil6"
    assert c.layers[0] == CellLayer(0, 0, "conv3x3_dil3", "sep_conv_3x3")
    assert c.connections == (Connection(3, 3), Connection(3, 2), Connection(3, 0))


def test_frozen():
    g = nasseg.published_genotype("cvpr", "arch0")
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.first_op = "conv1x1"


@pytest.mark.parametrize("space", ["cvpr", "wacv"])
def test_random_genotypes_round_trip_and_respect_controller_ranges(space):
    rng = random.Random(0)
    for _ in range(200):
        g = nasseg.random_genotype(space, rng)
        legacy = g.to_legacy()
        assert nasseg.genotype_from_legacy(space, legacy) == g
        assert nasseg.genotype_from_json(g.to_json()) == g
        if space == "cvpr":
            cell, conns = legacy
            assert len(cell) == 4 and len(conns) == 3
            for l, (a, b, oa, ob) in enumerate(cell[1:], start=1):
                assert 0 <= a < 1 + 3 * (l - 1) and 0 <= b < 1 + 3 * (l - 1)
                assert 0 <= oa < 11 and 0 <= ob < 11
            for blk, (i, j) in enumerate(conns):
                assert 0 <= i < 4 + blk and 0 <= j < 4 + blk
        else:
            templates, structure = legacy
            assert len(templates) == 3 and len(structure) == 7
            assert all(0 <= t[0] < 6 and 0 <= t[1] < 6 and 0 <= t[2] < 2 for t in templates)
            for l, (a, b, t, rep, sp) in enumerate(structure):
                assert 0 <= a < 2 + l and 0 <= b < 2 + l and 0 <= t < 3 and 0 <= rep < 4
                assert sp in ((0, 1) if l < 3 else (0,))


def test_random_genotypes_cover_the_space():
    rng = random.Random(1)
    seen = {nasseg.random_genotype("wacv", rng).templates[0].op_a for _ in range(300)}
    assert seen == set(WACV_OPS)


def test_published_arch1_reads_first_op_in_first_layer():
    # The controller samples the first layer's inputs from range(1), but the
    # published CVPR arch1 reads node 1 there; the original builds it, so do we.
    g = nasseg.published_genotype("cvpr", "arch1")
    assert g.layers[0].input_a == 1


@pytest.mark.parametrize("space,legacy,field", [
    ("cvpr", [[11, [0, 0, 1, 1]], [[0, 1]]], "first op"),
    ("cvpr", [[0, [0, 0, 1, 1]], [[0, 4]]], "connections[0].input_b"),
    ("cvpr", [[0, [2, 0, 1, 1]], [[0, 1]]], "layers[0].input_a"),
    ("wacv", [[[0, 6, 0]], [[0, 1, 0, 0, 0]]], "template 0 op_b"),
    ("wacv", [[[0, 1, 2]], [[0, 1, 0, 0, 0]]], "aggregation"),
    ("wacv", [[[0, 1, 0]], [[0, 1, 1, 0, 0]]], "layers[0].template"),
    ("wacv", [[[0, 1, 0]], [[0, 1, 0, 4, 0]]], "layers[0].repeats"),
    ("wacv", [[[0, 1, 0]], [[0, 1, 0, 0, 0], [0, 1, 0, 0, 1]]], "layers[1].stride"),
])
def test_invalid_legacy_names_the_field(space, legacy, field):
    with pytest.raises(GenotypeError, match=field.replace("[", r"\[").replace("]", r"\]")):
        nasseg.genotype_from_legacy(space, legacy)


def test_invalid_json():
    with pytest.raises(GenotypeError, match="space"):
        nasseg.genotype_from_json('{"space": "nope"}')
    bad = nasseg.published_genotype("wacv", "arch0").to_dict()
    bad["templates"][0]["op_a"] = "conv9x9"
    with pytest.raises(GenotypeError, match="conv9x9"):
        nasseg.genotype_from_dict(bad)
    with pytest.raises(KeyError, match="known"):
        nasseg.published_genotype("wacv", "arch7")


def test_direct_construction_validates():
    with pytest.raises(GenotypeError):
        CVPRGenotype("conv1x1", (CellLayer(0, 0, "conv1x1", "zero"),), (Connection(0, 0),))
    g = WACVGenotype((Template("sep_conv_3x3", "skip_connect", "psum"),),
                     (TemplateLayer(0, 1, 0, 2, 2), TemplateLayer(2, 1, 0, 1, 1)))
    assert g.to_legacy() == [[[0, 5, 0]], [[0, 1, 0, 1, 1], [2, 1, 0, 0, 0]]]
    assert AGG_OPS == ("psum", "cat")
