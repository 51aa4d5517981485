"""The ranking stage: reading a search's record, grouping, ranking and the fixed slots.

Every case is a small hand-written input whose expected tables and slot files are
worked out by hand below: duplicates, a tie in reward broken by parameters and one
by the first id, failed statuses; the original code's genotypes.out written as its
search loop writes it; malformed lines; too few successes; the CLI.
"""
from __future__ import annotations

import csv
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from nasseg.genotypes import Genotype, load_genotype, published_genotype
from nasseg.ranking import (RankConfig, RankError, detect_format, rank_search, read_genotypes_out,
                            read_history)
from nasseg.search.store import publish
from nasseg.spaces import get_space
from stages import rank as rank_stage

from conftest import ROOT

PARAMS = ROOT / "params.yaml"


def plain(genotype: Genotype) -> dict[str, Any]:
    """The genotype as its JSON reads back (lists, not tuples)."""
    return json.loads(genotype.to_json())


def wacv(seed: int) -> Genotype:
    return get_space("wacv").random_genotype(random.Random(seed))


# Five distinct wacv architectures, none of them the random slot's (seed 0) nor arch0.
A, B, C, D, F = (wacv(s) for s in (101, 102, 103, 104, 105))


def record(id: int, genotype: Genotype, reward: float, status: str, params: int | None,
           flops: int | None = None) -> dict[str, Any]:
    """A history line with every field the search writes (nasseg.search.runner._record)."""
    return {"id": id, "genotype": plain(genotype), "action": list(get_space("wacv").encode(genotype)),
            "log_prob": -3.2, "controller_step": 0, "reward": reward, "status": status,
            "reason": None if status in ("ok", "early_stopped") else "failed", "metrics": {},
            "params": params, "flops": flops, "validations": [], "timings": {}, "worker": "cpu",
            "finished_at": "2024-01-01T00:00:00"}


#: id: architecture, reward, status, params. By hand: C and B tie at 0.60 -> C (fewer
#: params) first; A and F tie at 0.50 with the same params -> A (first id 0) before F;
#: D never succeeded (oom, nan): last, unranked. A sampled twice (best 0.50, mean 0.45),
#: B twice (one error), D twice.
HISTORY = [
    record(0, A, 0.50, "ok", 1000, 10_000_000),
    record(1, B, 0.60, "ok", 2000, 20_000_000),
    record(2, A, 0.40, "early_stopped", 1000, 10_000_000),
    record(3, C, 0.60, "ok", 1500, 14_000_000),
    record(4, D, 0.0, "oom", None),
    record(5, B, 0.0, "error", None),
    record(6, D, 0.0, "nan", 3000, 30_000_000),
    record(7, F, 0.50, "ok", 1000, 12_000_000),
]


@pytest.fixture
def history(tmp_path) -> Path:
    """The history written as the search publishes it."""
    out = tmp_path / "search"
    publish(HISTORY, {}, {}, out, out)
    return out / "history.jsonl"


def read_slot(out: Path, name: str) -> dict[str, Any]:
    return json.loads((out / "top" / f"{name}.json").read_text())


def test_history_ranking_tables_and_slots(history, tmp_path):
    out = tmp_path / "rank"
    metrics = rank_search(RankConfig(k=2, random_seed=0, published="arch0"), history, out, "wacv")
    assert metrics == {"num_sampled": 8, "num_unique": 5, "num_unique_successful": 4,
                       "num_sampled_more_than_once": 3, "best_reward": 0.6, "best_params": 1500,
                       "status_ok": 4, "status_early_stopped": 1, "status_oom": 1, "status_nan": 1,
                       "status_error": 1}
    assert json.loads((out / "metrics.json").read_text()) == metrics

    # The slots: C then B (the tie at 0.60 goes to fewer parameters).
    s1, s2 = read_slot(out, "1"), read_slot(out, "2")
    assert s1 == {"slot": "1", "source": "search", "space": "wacv", "genotype": plain(C), "reward": 0.6,
                  "params": 1500, "flops": 14_000_000, "times_sampled": 1, "ids": [3]}
    assert s2 == {"slot": "2", "source": "search", "space": "wacv", "genotype": plain(B), "reward": 0.6,
                  "params": 2000, "flops": 20_000_000, "times_sampled": 2, "ids": [1, 5]}
    assert sorted(p.name for p in (out / "top").iterdir()) == ["1.json", "2.json", "published.json",
                                                               "random.json"]
    published = read_slot(out, "published")
    assert published == {"slot": "published", "source": "published", "space": "wacv",
                         "genotype": plain(published_genotype("wacv", "arch0")), "reward": None,
                         "params": None, "flops": None, "times_sampled": 0, "ids": []}
    random_slot = read_slot(out, "random")
    assert random_slot["source"] == "random" and random_slot["times_sampled"] == 0
    assert random_slot["genotype"] == plain(get_space("wacv").random_genotype(random.Random(0)))
    for name in ("1", "2", "published", "random"):
        assert plain(load_genotype(str(out / "top" / f"{name}.json"), "wacv")) == read_slot(out, name)["genotype"]

    # rankings.csv: every unique architecture, in rank order; D unranked, last.
    rows = list(csv.DictReader((out / "rankings.csv").open()))
    assert [json.loads(r["genotype"]) for r in rows] == [plain(g) for g in (C, B, A, F, D)]
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4", ""]
    assert [r["times_sampled"] for r in rows] == ["1", "2", "2", "1", "2"]
    assert [r["num_successful"] for r in rows] == ["1", "1", "2", "1", "0"]
    assert [r["best_reward"] for r in rows] == ["0.600000", "0.600000", "0.500000", "0.500000", ""]
    assert rows[2]["mean_reward"] == "0.450000" and rows[2]["ids"] == "0 2" and rows[2]["best_id"] == "0"
    assert [r["params"] for r in rows] == ["1500", "2000", "1000", "1000", "3000"]
    assert (rows[1]["status_ok"], rows[1]["status_error"]) == ("1", "1")
    assert (rows[4]["status_oom"], rows[4]["status_nan"], rows[4]["status_ok"]) == ("1", "1", "0")
    assert rows[0]["action"] == " ".join(map(str, get_space("wacv").encode(C)))

    md = (out / "rankings.md").read_text()
    assert ("**8 sampled, 5 unique** (4 with a successful evaluation); statuses: 4 ok, "
            "1 early_stopped, 1 oom, 1 nan, 1 error.") in md
    assert "| unique, sampled more than once | 3 |" in md
    frequent = md.split("## Most often sampled")[1].split("## Top")[0]
    action = lambda g: "`" + " ".join(map(str, get_space("wacv").encode(g))) + "`"  # noqa: E731
    # A, B, D twice each, in the order first sampled; D has no rank.
    assert [line.split(" | ")[-1].rstrip(" |") for line in frequent.splitlines() if line.startswith("| 2 ")] \
        == [action(A), action(B), action(D)]
    assert f"| 2 | 0 |  |  |  | 3,000 | 4, 6 | {action(D)} |" in frequent
    top = md.split("## Top 2 by best reward")[1]
    assert f"| 1 | 0.6000 | 0.6000 | 1 | 1,500 | 0.01 G | 3 | {action(C)} |" in top
    assert f"| 2 | 0.6000 | 0.6000 | 2 | 2,000 | 0.02 G | 1, 5 | {action(B)} |" in top
    assert [line[:4] for line in top.splitlines() if line.startswith("| ")] == ["| sl", "| 1 ", "| 2 "]


def test_output_is_deterministic_and_stale_slots_go(history, tmp_path):
    out = tmp_path / "rank"
    rank_search(RankConfig(k=4), history, out, "wacv")
    assert read_slot(out, "3")["genotype"] == plain(A)
    assert read_slot(out, "4")["genotype"] == plain(F)   # same reward and params as A: later id
    first = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    rank_search(RankConfig(k=4), history, out, "wacv")
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == first
    rank_search(RankConfig(k=1), history, out, "wacv")
    assert sorted(p.name for p in (out / "top").iterdir()) == ["1.json", "published.json", "random.json"]
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []   # no temporary left


def test_random_slot_follows_the_seed(history, tmp_path):
    slots = {}
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        rank_search(RankConfig(k=1, random_seed=seed), history, tmp_path / name, "wacv")
        slots[name] = read_slot(tmp_path / name, "random")["genotype"]
    assert slots["a"] == slots["b"] == plain(get_space("wacv").random_genotype(random.Random(7)))
    assert slots["c"] != slots["a"]


def test_reference_slot_sampled_by_the_search_carries_its_figures(tmp_path):
    arch1 = published_genotype("wacv", "arch1")
    out = tmp_path / "search"
    publish([record(0, A, 0.3, "ok", 100), record(1, arch1, 0.2, "ok", 900),
             record(2, arch1, 0.4, "ok", 900)], {}, {}, out, out)
    rank_search(RankConfig(k=1, published="arch1"), out / "history.jsonl", tmp_path / "rank", "wacv")
    slot = read_slot(tmp_path / "rank", "published")
    assert (slot["reward"], slot["params"], slot["times_sampled"], slot["ids"]) == (0.4, 900, 2, [1, 2])
    assert read_slot(tmp_path / "rank", "1")["genotype"] == plain(arch1)


def test_unknown_published_name_fails(history, tmp_path):
    with pytest.raises(RankError, match=r"^published: no published genotype wacv/arch9; known: wacv/arch0, "
                                        r"wacv/arch1$"):
        rank_search(RankConfig(k=1, published="arch9"), history, tmp_path / "rank", "wacv")
    assert not (tmp_path / "rank").exists()


def test_fewer_successes_than_k_fails_and_writes_nothing(history, tmp_path):
    out = tmp_path / "rank"
    with pytest.raises(RankError) as err:
        rank_search(RankConfig(k=5), history, out, "wacv")
    assert str(err.value).startswith(f"{history}: 4 unique architectures with a successful evaluation "
                                     "(of 5 unique, 8 sampled; 4 ok, 1 early_stopped, 1 oom, 1 nan, 1 error), "
                                     "fewer than rank.k = 5")
    assert "num_archs" in str(err.value) and "lower rank.k" in str(err.value)
    assert not out.exists()


# -- the original code's genotypes.out ------------------------------------------------

def authors_line(reward: float, epoch: int, params: int, epoch_time: float, config: list) -> str:
    """One line as the original search loop writes it (src/main_search.py)."""
    return "reward: {:.4f}, epoch: {}, params: {}, epoch_time: {:.4f}, genotype: {}\n".format(
        reward, epoch, params, epoch_time, config)


def cvpr_legacy(name: str) -> list:
    return published_genotype("cvpr", name).to_legacy()


def write_genotypes_out(path: Path) -> Path:
    # arch1 twice (best 0.3800); arch0 and arch2 tie at 0.4100: arch2 has fewer parameters.
    path.write_text(authors_line(0.35123, 0, 2_500_000, 31.5, cvpr_legacy("arch1"))
                    + authors_line(0.41, 1, 2_600_000, 30.25, cvpr_legacy("arch0"))
                    + authors_line(0.38, 2, 2_500_000, 29.0, cvpr_legacy("arch1"))
                    + authors_line(0.41, 3, 2_400_000, 33.75, cvpr_legacy("arch2")))
    return path


@pytest.mark.parametrize("name,fmt", [("genotypes.out", "auto"), ("search.log", "auto"),
                                      ("search.log", "genotypes_out")])
def test_genotypes_out_slots(tmp_path, name, fmt):
    path = write_genotypes_out(tmp_path / name)
    assert path.read_text().splitlines()[0] == (
        "reward: 0.3512, epoch: 0, params: 2500000, epoch_time: 31.5000, "
        "genotype: [[2, [1, 0, 3, 6], [0, 1, 2, 8], [2, 0, 6, 1]], [[2, 3], [3, 1], [4, 4]]]")
    assert detect_format(path) == "genotypes_out"
    out = tmp_path / "rank"
    metrics = rank_search(RankConfig(k=2, published="arch1"), path, out, "cvpr", fmt)
    assert (metrics["num_sampled"], metrics["num_unique"], metrics["status_ok"]) == (4, 3, 4)
    arch = {n: plain(published_genotype("cvpr", n)) for n in ("arch0", "arch1", "arch2")}
    assert read_slot(out, "1") == {"slot": "1", "source": "search", "space": "cvpr", "genotype": arch["arch2"],
                                   "reward": 0.41, "params": 2_400_000, "flops": None, "times_sampled": 1,
                                   "ids": [3]}
    assert read_slot(out, "2")["genotype"] == arch["arch0"] and read_slot(out, "2")["ids"] == [1]
    published = read_slot(out, "published")
    assert published["genotype"] == arch["arch1"]
    assert (published["reward"], published["times_sampled"], published["ids"]) == (0.38, 2, [0, 2])
    rows = list(csv.DictReader((out / "rankings.csv").open()))
    assert [r["rank"] for r in rows] == ["1", "2", "3"]
    assert rows[2]["mean_reward"] == "0.365600" and rows[2]["flops"] == ""
    for name in ("1", "2", "published", "random"):
        load_genotype(str(out / "top" / f"{name}.json"), "cvpr")


def test_genotypes_out_reads_no_code_and_nan_is_an_error(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "genotypes.out"
    path.write_text(authors_line(0.5, 0, 10, 1.0, cvpr_legacy("arch0"))
                    + f"reward: 0.5000, epoch: 1, params: 10, epoch_time: 1.0000, "
                      f"genotype: [__import__('pathlib').Path({str(marker)!r}).touch()]\n")
    with pytest.raises(RankError, match=rf"^{path}:2: the genotype is not a list literal"):
        read_genotypes_out(path, "cvpr")
    assert not marker.exists()
    path.write_text(authors_line(float("nan"), 0, 10, 1.0, cvpr_legacy("arch0")))
    [sample] = read_genotypes_out(path, "cvpr")
    assert sample.status == "error" and not sample.succeeded


# -- malformed input ------------------------------------------------------------------

def good_line(id: int = 0) -> str:
    return json.dumps(record(id, A, 0.5, "ok", 10))


@pytest.mark.parametrize("line,message", [
    ("{not json", r"not valid JSON"),
    ("[1, 2]", r"expected a JSON object"),
    (json.dumps({k: v for k, v in record(1, A, 0.5, "ok", 10).items() if k != "status"}), r"missing key status"),
    (json.dumps(record(1, A, 0.5, "done", 10)), r"unknown status 'done'; expected one of ok, early_stopped"),
    (json.dumps({**record(1, A, 0.5, "ok", 10), "genotype": {"space": "wacv"}}), r"bad genotype"),
    (json.dumps({**record(1, A, 0.5, "ok", 10), "reward": "high"}), r"reward must be a number"),
    (json.dumps({**record(1, A, 0.5, "ok", 10), "params": -3}), r"params must be a non-negative integer"),
    (json.dumps({**record(1, A, 0.5, "ok", 10), "reward": float("nan")}), r"status ok with the reward nan"),
    (json.dumps({**record(1, A, 0.5, "ok", 10),
                 "genotype": plain(published_genotype("cvpr", "arch0"))}), r"a cvpr genotype; this ranking is of the wacv"),
    (good_line(0), r"id 0 already on line 1"),
])
def test_malformed_history_line_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "history.jsonl"
    path.write_text(good_line(0) + "\n\n" + line + "\n" + good_line(9) + "\n")
    with pytest.raises(RankError, match=rf"^{path}:3: {message}"):
        read_history(path, "wacv")


@pytest.mark.parametrize("line,message", [
    ("epoch 3 done", r"not a genotypes.out line; expected 'reward: <float>, epoch: <int>"),
    ("reward: 0.5000, epoch: 1, params: 10, epoch_time: 1.0000, genotype: [[1, 2], [3]]", r"not a cvpr genotype"),
    ("reward: 0.5000, epoch: 1, params: 10, epoch_time: 1.0000, genotype: [[1, 2], [3]", r"the genotype is not a list literal"),
    ("reward: high, epoch: 1, params: 10, epoch_time: 1.0000, genotype: [[1], [2]]", r"reward 'high' is not a number"),
    (authors_line(0.3, 0, 10, 1.0, cvpr_legacy("arch1")).strip(), r"epoch 0 already on line 1"),
])
def test_malformed_genotypes_out_line_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "genotypes.out"
    path.write_text(authors_line(0.5, 0, 10, 1.0, cvpr_legacy("arch0")) + "\n" + line + "\n")
    with pytest.raises(RankError, match=rf"^{path}:3: {message}"):
        read_genotypes_out(path, "cvpr")


def test_format_detection(tmp_path):
    (tmp_path / "a.txt").write_text(good_line() + "\n")
    assert detect_format(tmp_path / "a.txt") == "history"
    assert detect_format(tmp_path / "missing.jsonl") == "history"
    (tmp_path / "b.txt").write_text("hello\n")
    with pytest.raises(RankError, match=r"b.txt: cannot tell its format .*--format history\|genotypes_out"):
        detect_format(tmp_path / "b.txt")
    with pytest.raises(FileNotFoundError, match=r"nope.txt: search history not found"):
        detect_format(tmp_path / "nope.txt")


# -- the stage ------------------------------------------------------------------------

def test_cli_writes_the_outputs(history, tmp_path, capsys):
    out = tmp_path / "rank"
    argv = ["--experiment", "wacv", "--history", str(history), "--out", str(out), "--params", str(PARAMS)]
    assert rank_stage.main(argv + ["--set", "k=2", "--set", "random_seed=3"]) == 0
    assert "8 sampled, 5 unique, 4 successful; best reward 0.6000" in capsys.readouterr().err
    assert {p.name for p in out.iterdir()} == {"rankings.csv", "rankings.md", "metrics.json", "top"}
    assert read_slot(out, "2")["genotype"] == plain(B)
    assert read_slot(out, "random")["genotype"] == plain(get_space("wacv").random_genotype(random.Random(3)))
    path = write_genotypes_out(tmp_path / "log.txt")
    assert rank_stage.main(["--experiment", "cvpr", "--history", str(path), "--out", str(tmp_path / "g"),
                            "--params", str(PARAMS), "--format", "genotypes_out", "--set", "k=1"]) == 0
    assert read_slot(tmp_path / "g", "1")["genotype"] == plain(published_genotype("cvpr", "arch2"))


def test_cli_bad_input_exits_2_naming_it(history, tmp_path, capsys):
    out = tmp_path / "rank"
    base = ["--experiment", "wacv", "--out", str(out), "--params", str(PARAMS)]
    bad = tmp_path / "history.jsonl"
    bad.write_text(good_line(0) + "\n" + good_line(1)[:-3] + "\n")
    cases = [
        (["--history", str(bad)], rf"error: {bad}:2: not valid JSON"),
        (["--history", str(history), "--set", "k=9"], rf"error: {history}: 4 unique architectures .* rank.k = 9"),
        (["--history", str(history), "--set", "k=0"],
         r"error: .*params.yaml: rank.wacv.default.k: Input should be greater than or equal to 1 \(value: 0\)"),
        (["--history", str(history), "--set", "published=arch7"],
         r"error: .*params.yaml: rank.wacv.default.published: Input should be 'arch0' or 'arch1' "
         r"\(value: 'arch7'\)"),
        (["--history", str(tmp_path / "none.jsonl")], r"error: .*none.jsonl: search history not found"),
        (["--history", str(history), "--format", "genotypes_out"], rf"error: {history}:1: not a genotypes.out line"),
    ]
    for args, message in cases:
        assert rank_stage.main(base + args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and re.search(message, err), (args, err)
        assert not out.exists()


def test_real_params_rank_presets():
    from stages.params import load_section
    from stages.schema import RANK_PRESET, load_params

    params = load_params(PARAMS)
    for experiment, model in RANK_PRESET.items():
        presets = getattr(params.rank, experiment)
        assert set(presets) == {"default", "ci", "paper"}
        for name, config in presets.items():
            assert load_section(PARAMS, f"rank.{experiment}.{name}", model) == config
        # the choices of `published` are the space's published genotypes, also in the JSON schema
        enum = model.model_json_schema()["properties"]["published"]["enum"]
        assert enum == list(get_space(experiment).published)
    assert (params.rank.wacv["paper"].k, params.rank.cvpr["paper"].k) == (2, 3)
    assert rank_stage.load_config(PARAMS, "cvpr", ["k=4"]).k == 4
