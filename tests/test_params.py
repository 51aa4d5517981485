"""Typed parameters: the pydantic models of params.yaml, stages.params and the generated schema.

Errors must name the file, the full dotted key and the value; `--set` takes keys
relative to the stage's section or in full; the whole real params.yaml (every
preset) validates; the committed Snakemake schema is the one the models generate,
and Snakemake's own validate accepts the real file and rejects bad ones.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import Field, ValidationError
from snakemake.common.configfile import load_configfile
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate as snakemake_validate

from nasseg.config import Config
from nasseg.data.prepare import PrepareParams
from nasseg.data.synthesize import SynthesizeParams
from nasseg.search.config import DistillationConfig
from nasseg.search.runner import SearchConfig
from nasseg.training import TrainConfig
from stages import prepare as prepare_stage
from stages.params import ParamsError, load_section
from stages.schema import SCHEMA_FILE, SEARCH_PRESET, Params, load_params, main, schema_text
from stages.search import load_config
from stages.train import DATASETS as EXPERIMENT_DATASETS

from conftest import ROOT, set_dotted

PARAMS = ROOT / "params.yaml"
SCHEMA = ROOT / SCHEMA_FILE


def real_params() -> dict[str, Any]:
    return yaml.safe_load(PARAMS.read_text())


def write(path: Path, data: dict[str, Any] | str) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def edited(tmp_path: Path, key: str, value: Any) -> Path:
    """A copy of the real params.yaml with dotted `key` set to `value` (None: deleted)."""
    data = real_params()
    set_dotted(data, key, value)
    return write(tmp_path / "params.yaml", data)


# -- a small model, to test the reader itself ------------------------------------

class Inner(Config):
    lr: float = 0.1
    steps: int = Field(default=3, ge=1)


class Section(Config):
    name: str
    sizes: tuple[int, ...] = (1, 2)
    limit: float | None = None
    inner: Inner = Field(default_factory=Inner)


def test_typed_section_with_overrides(tmp_path):
    p = write(tmp_path / "params.yaml", "a:\n  b:\n    name: x\n    inner: {lr: 3e-3}\n")
    s = load_section(p, "a.b", Section, ["sizes=[4, 5]", "inner.steps=7", "a.b.limit=2"])
    assert s == Section(name="x", sizes=(4, 5), limit=2.0, inner=Inner(lr=0.003, steps=7))
    assert isinstance(s.sizes, tuple) and isinstance(s.limit, float)


@pytest.mark.parametrize("text,overrides,message", [
    ("a: {b: {name: x, nmae: y}}", [],
     r"^.*params.yaml: a.b.nmae: unknown key \(value: 'y'\); the keys here are inner, limit, name, sizes$"),
    ("a: {b: {sizes: [1]}}", [], r"params.yaml: a.b.name: missing key"),
    ("a: {b: {name: x, inner: {steps: 1.5}}}", [], r"a.b.inner.steps: .*valid integer.*\(value: 1.5\)"),
    ("a: {b: {name: x}}", ["inner.steps=0"],
     r"a.b.inner.steps: .*greater than or equal to 1 \(value: 0\) \[from --set inner.steps=0\]"),
    ("a: {b: {name: x}}", ["inner.lr=fast"], r"a.b.inner.lr: .*valid number.*\(value: 'fast'\)"),
    ("a: {b: {name: x}}", ["inner.lrr=1"], r"a.b.inner.lrr: unknown key \(value: 1\); the keys here are lr, steps"),
    ("a: {b: {name: x}}", ["oops"], r"expected KEY=VALUE"),
    ("a: {b: {name: x}}", ["name.first=1"], r"a.b.name is not a section"),
    ("a: {c: {}}", [], r"missing section 'a.b'"),
    ("a: [1, 2", [], r"params.yaml: not valid YAML"),
])
def test_errors_name_the_key(tmp_path, text, overrides, message):
    with pytest.raises(ParamsError, match=message):
        load_section(write(tmp_path / "params.yaml", text), "a.b", Section, overrides)


def test_every_error_is_reported(tmp_path):
    p = write(tmp_path / "params.yaml", "a: {b: {nmae: x, sizes: [one]}}")
    with pytest.raises(ParamsError) as err:
        load_section(p, "a.b", Section)
    lines = str(err.value).splitlines()
    assert len(lines) == 3, lines
    assert {line.split(": ")[1] for line in lines} == {"a.b.name", "a.b.sizes.0", "a.b.nmae"}


def test_missing_file(tmp_path):
    with pytest.raises(ParamsError, match="nope.yaml: parameters file not found"):
        load_section(tmp_path / "nope.yaml", "a", Section)


# -- the real models on the real file ----------------------------------------------

@pytest.mark.parametrize("key,value,message", [
    ("search.wacv.default.proxy.stage1.epoch", 3,
     r"search.wacv.default.proxy.stage1.epoch: unknown key \(value: 3\); the keys here are batch_size, "
     r"crop_size, dec_weight_decay, epochs,"),
    ("synthesize.voc.height", None, r"synthesize.voc.height: missing key \(required"),
    ("search.cvpr.default.proxy.stage2.epochs", "many",
     r"search.cvpr.default.proxy.stage2.epochs: Input should be a valid integer.*\(value: 'many'\)"),
    ("search.wacv.paper.proxy.amp", [True],
     r"search.wacv.paper.proxy.amp: Input should be a valid boolean \(value: \[True\]\)"),
    ("prepare.workers", -1, r"prepare.workers: Input should be greater than or equal to 0 \(value: -1\)"),
    ("search.cvpr.paper.data.meta_train_fraction", 1.0,
     r"search.cvpr.paper.data.meta_train_fraction: Input should be less than 1 \(value: 1.0\)"),
    ("prepare.images", "symlink", r"prepare.images: Input should be 'copy' or 'hardlink' \(value: 'symlink'\)"),
    ("search.wacv.default.strategy.name", "bayes",
     r"search.wacv.default.strategy.name: Input should be 'ppo', 'reinforce', 'random' or 'evolution' "
     r"\(value: 'bayes'\)"),
    ("data.source.voc", "download", r"data.source.voc: Input should be 'synthetic' or 'real' \(value: 'download'\)"),
    ("search.cvpr.paper.proxy.distillation.teacher", "checkpoint",
     r"search.cvpr.paper.proxy.distillation: teacher: checkpoint needs 'path' to a checkpoint file"),
    ("search.wacv.paper.space", "cvpr", r"search.wacv.paper.space: Input should be 'wacv' \(value: 'cvpr'\)"),
    ("build_ext.jobs", 2, r"build_ext.jobs: unknown key \(value: 2\); this section takes no keys$"),
    ("reports", {}, r"reports: unknown key \(value: \{\}\); the keys here are benchmark, build_ext, data, evaluate, "
                    r"prepare, preset, rank, search, synthesize, train$"),
    ("rank.cvpr.paper.k", 0, r"rank.cvpr.paper.k: Input should be greater than or equal to 1 \(value: 0\)"),
    ("rank.wacv.ci.published", "arch2",
     r"rank.wacv.ci.published: Input should be 'arch0' or 'arch1' \(value: 'arch2'\)"),
])
def test_whole_file_errors_name_file_key_and_value(tmp_path, key, value, message):
    path = edited(tmp_path, key, value)
    with pytest.raises(ParamsError) as err:
        load_params(path)
    text = str(err.value)
    assert text.startswith(f"{path}: "), text
    assert len(text.splitlines()) == 1, text
    assert err.match(message)


def test_every_preset_of_the_real_file_validates():
    params = load_params(PARAMS)
    assert set(Params.model_fields) == set(real_params())
    for experiment, model in SEARCH_PRESET.items():
        presets = getattr(params.search, experiment)
        assert {"default", "paper"} <= set(presets)
        for name, config in presets.items():
            assert isinstance(config, SearchConfig) and config.space == experiment
            # the stage's own reading of one preset agrees with the whole-file model
            assert load_section(PARAMS, f"search.{experiment}.{name}", model) == config
    assert params.search.wacv["paper"].devices == ("cuda:0", "cuda:1")
    assert params.search.cvpr["default"].proxy.omit_classes == (0,)
    assert params.prepare == PrepareParams(workers=2, check_split_sizes="error", images="copy")
    assert params.synthesize.camvid.width == 240
    for experiment, datasets in EXPERIMENT_DATASETS.items():
        for dataset in datasets:
            presets = getattr(getattr(params.train, experiment), dataset)
            assert {"ci", "default", "paper"} <= set(presets)
            for name, config in presets.items():
                assert load_section(PARAMS, f"train.{experiment}.{dataset}.{name}", TrainConfig) == config
    assert params.train.cvpr.nyud["paper"].task == "depth" and params.train.cvpr.voc["paper"].omit_classes == (0,)


def test_preset_must_exist_in_every_experiment(tmp_path):
    with pytest.raises(ParamsError, match=r"params.yaml: preset 'quick' is not a preset of search.wacv "
                                          r"\(it has ci, default, paper\); add search.wacv.quick"):
        load_params(edited(tmp_path, "preset", "quick"))
    data = real_params()
    data["preset"] = "quick"
    data["search"]["wacv"]["quick"] = data["search"]["wacv"]["default"]
    with pytest.raises(ParamsError, match=r"preset 'quick' is not a preset of search.cvpr"):
        load_params(write(tmp_path / "params.yaml", data))
    data["search"]["cvpr"]["quick"] = data["search"]["cvpr"]["default"]
    with pytest.raises(ParamsError, match=r"preset 'quick' is not a preset of rank.wacv \(it has ci, default, "
                                          r"paper\); add rank.wacv.quick"):
        load_params(write(tmp_path / "params.yaml", data))
    for experiment in ("wacv", "cvpr"):
        data["rank"][experiment]["quick"] = data["rank"][experiment]["default"]
    with pytest.raises(ParamsError, match=r"preset 'quick' is not a preset of evaluate.wacv"):
        load_params(write(tmp_path / "params.yaml", data))
    for experiment in ("wacv", "cvpr"):
        data["evaluate"][experiment]["quick"] = data["evaluate"][experiment]["default"]
    with pytest.raises(ParamsError, match=r"preset 'quick' is not a preset of benchmark.wacv"):
        load_params(write(tmp_path / "params.yaml", data))
    for experiment in ("wacv", "cvpr"):
        data["benchmark"][experiment]["quick"] = data["benchmark"][experiment]["default"]
    with pytest.raises(ParamsError, match=r"preset 'quick' is not a preset of train.wacv.cityscapes"):
        load_params(write(tmp_path / "params.yaml", data))
    for experiment in data["train"].values():
        for presets in experiment.values():
            presets["quick"] = presets["default"]
    assert load_params(write(tmp_path / "params.yaml", data)).preset == "quick"


def test_yaml_1_1_exponent_string_is_a_float(tmp_path):
    text = PARAMS.read_text()
    assert "lr: 7.0e-3" in text
    path = write(tmp_path / "params.yaml", text.replace("lr: 7.0e-3", "lr: 7e-3", 1))
    raw = yaml.safe_load(path.read_text())["search"]["wacv"]["default"]["proxy"]["stage1"]["lr"]
    assert raw == "7e-3"   # the premise: PyYAML leaves it a string
    lr = load_config(path, "wacv", []).proxy.stage1.lr
    assert lr == 0.007 and isinstance(lr, float)
    assert load_params(path).search.wacv["default"].proxy.stage1.lr == 0.007
    assert load_config(PARAMS, "wacv", ["proxy.stage1.lr=2e-3"]).proxy.stage1.lr == 0.002


# -- --set -------------------------------------------------------------------------

def test_set_relative_and_full_keys_agree():
    relative = load_config(PARAMS, "wacv", ["num_archs=6", "proxy.stage1.epochs=2", "devices=[cpu, cpu]"])
    full = load_config(PARAMS, "wacv", ["search.wacv.default.num_archs=6",
                                        "search.wacv.default.proxy.stage1.epochs=2",
                                        "search.wacv.default.devices=[cpu, cpu]"])
    assert relative == full
    assert (full.num_archs, full.proxy.stage1.epochs, full.devices) == (6, 2, ("cpu", "cpu"))
    assert load_config(PARAMS, "wacv", []).num_archs == 8   # the file itself is unchanged
    # A full key of a section without dots, and a section field named like nothing else.
    assert load_section(PARAMS, "prepare", PrepareParams, ["prepare.workers=0"]).workers == 0
    assert load_section(PARAMS, "synthesize", SynthesizeParams,
                        ["synthesize.voc.num_images=3"]).voc.num_images == 3


def test_set_of_unknown_key_fails_naming_it(tmp_path):
    with pytest.raises(ParamsError, match=r"params.yaml: search.wacv.default.proxy.stage1.epoch: unknown key "
                                          r"\(value: 2\).* \[from --set proxy.stage1.epoch=2\]$"):
        load_config(PARAMS, "wacv", ["proxy.stage1.epoch=2"])
    with pytest.raises(ParamsError, match=r"search.cvpr.default.strategy.nmae: unknown key .*"
                                          r"\[from --set search.cvpr.default.strategy.nmae=ppo\]"):
        load_config(PARAMS, "cvpr", ["search.cvpr.default.strategy.nmae=ppo"])
    # Another preset's full key cannot mean a key of this stage's section.
    with pytest.raises(ParamsError, match=r"--set search.wacv.paper.num_archs: this stage reads section "
                                          r"search.wacv.default; .*starting with search.wacv.default."):
        load_config(PARAMS, "wacv", ["search.wacv.paper.num_archs=6"])


def test_cross_field_error_names_the_override():
    with pytest.raises(ParamsError, match=r"search.wacv.default.strategy: tournament_size must be in "
                                          r"\[1, population_size=20\], got 50 \[from --set strategy.tournament_size=50\]"):
        load_config(PARAMS, "wacv", ["strategy.tournament_size=50"])


def test_stage_cli_reports_the_key(tmp_path, capsys):
    argv = ["--dataset", "camvid", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "out"),
            "--params", str(PARAMS)]
    assert prepare_stage.main(argv + ["--set", "prepare.images=symlink"]) == 2
    err = capsys.readouterr().err
    assert f"error: {PARAMS}: prepare.images: Input should be 'copy' or 'hardlink' (value: 'symlink')" in err
    assert not (tmp_path / "out").exists()


# -- the models themselves -----------------------------------------------------------

def test_models_are_frozen_and_copied_with_updates():
    config = load_config(PARAMS, "cvpr", [])
    with pytest.raises(ValidationError, match="frozen"):
        config.num_archs = 3
    copied = config.model_copy(update={"num_archs": 3})
    assert copied.num_archs == 3 and config.num_archs == 6 and copied.proxy == config.proxy
    with pytest.raises(ValidationError, match="teacher: refinenet_lw152 needs 'path'"):
        DistillationConfig(teacher="refinenet_lw152")


def test_fingerprint_ignores_budgets_devices_and_how_data_are_read():
    base = SearchConfig(space="wacv")
    same = SearchConfig(space="wacv", num_archs=99, time_limit_s=60, devices=("cuda:0", "cuda:1"), top_k=2,
                        data={"loader_workers": 8, "keep_decoded_mb": 0})
    assert base.fingerprint() == same.fingerprint()
    for changed in (SearchConfig(space="cvpr"), SearchConfig(space="wacv", seed=1),
                    SearchConfig(space="wacv", proxy={"stage1": {"epochs": 2}}),
                    SearchConfig(space="wacv", data={"val_crop_size": 64})):
        assert changed.fingerprint() != base.fingerprint()


# -- the generated Snakemake schema ------------------------------------------------------

def test_schema_file_is_up_to_date(tmp_path, capsys):
    assert SCHEMA.read_text() == schema_text(), (
        f"{SCHEMA_FILE} is stale: run python -m stages.schema --write-schema {SCHEMA_FILE}")
    assert main(["--check", str(SCHEMA)]) == 0
    stale = json.loads(SCHEMA.read_text())
    stale["$defs"]["PrepareParams"]["properties"]["images"]["enum"].append("symlink")
    (tmp_path / "stale.json").write_text(json.dumps(stale, indent=2) + "\n")
    assert main(["--check", str(tmp_path / "stale.json")]) == 1
    assert "stale; regenerate it with python -m stages.schema --write-schema" in capsys.readouterr().err
    assert "schemas/params.schema.json" in (ROOT / "workflow" / "Snakefile").read_text()


def snakemake_config() -> dict[str, Any]:
    """params.yaml as Snakemake reads it into `config`."""
    return load_configfile(str(PARAMS))


def test_snakemake_validate_accepts_the_real_params():
    config = snakemake_config()
    before = copy.deepcopy(config)
    snakemake_validate(config, str(SCHEMA), set_default=False)   # as the Snakefile calls it
    assert config == before
    # A YAML-1.1 exponent string, which the float fields accept, passes the schema too.
    config["search"]["wacv"]["default"]["proxy"]["stage1"]["lr"] = "7e-3"
    config["search"]["cvpr"]["paper"]["time_limit_s"] = "3.6e+3"
    snakemake_validate(config, str(SCHEMA), set_default=False)


@pytest.mark.parametrize("key,value,message", [
    ("search.wacv.default.proxy.stage1.epoch", 3, r"'epoch' was unexpected"),
    ("build_ext.jobs", 2, r"'jobs' was unexpected"),
    ("reports", {}, r"'reports' was unexpected"),
    ("prepare.check_split_sizes", "fail", r"'fail' is not one of \['error', 'warn', 'ignore'\]"),
    ("search.cvpr.paper.strategy.name", "bayes", r"'bayes' is not one of"),
    ("search.cvpr.paper.space", "wacv", r"'cvpr' was expected"),
    ("synthesize.nyud.width", 8, r"8 is less than the minimum of 16"),
    ("search.wacv.default.proxy.stage1.lr", "fast", r"'fast' is not valid under any of the given schemas"),
    ("search.wacv.default.devices", [], r"\[\] should be non-empty"),
    ("synthesize.seed", None, r"'seed' is a required property"),
])
def test_snakemake_validate_rejects_bad_params(key, value, message):
    config = snakemake_config()
    set_dotted(config, key, value)
    with pytest.raises(WorkflowError) as err:
        snakemake_validate(config, str(SCHEMA), set_default=False)
    assert err.match(message)
