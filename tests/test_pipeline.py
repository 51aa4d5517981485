"""The pipeline's contract: one definition per stage, computed code dependencies, no cycles.

* The import graph (stages/imports.py) is checked on a small package written here,
  so that its rules (lazy imports, relative imports, parent packages) can fail.
* Snakemake's rules (read through its API) and DVC's stages (read through its API)
  have the same command, inputs and outputs, and their code inputs are the computed
  import closure; the committed dvc.yaml is what the table writes.
* The static closure contains every project module that the entry points really
  import (checked in a fresh interpreter), and no package of nasseg/ or stages/ has an
  import cycle.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT
from stages import imports

sys.path.insert(0, str(ROOT / "workflow"))
import pipeline  # noqa: E402  (workflow/pipeline.py)


def write_package(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text))
    return root


@pytest.fixture
def toy(tmp_path, monkeypatch) -> Path:
    """A package `nasseg` in tmp_path, with each kind of import the graph must read."""
    monkeypatch.setattr(imports, "PACKAGES", ("nasseg",))
    imports._direct_imports.cache_clear()
    yield write_package(tmp_path, {
        "nasseg/__init__.py": """
            def __getattr__(name):          # lazy export: runs only on attribute access
                from . import heavy
                return getattr(heavy, name)
        """,
        "nasseg/heavy.py": "import torch\n",
        "nasseg/light.py": "import json\n",
        "nasseg/sub/__init__.py": "from .a import thing\n",
        "nasseg/sub/a.py": """
            from ..light import x           # relative, two levels
            def f():
                from nasseg.sub import b    # inside a function; `b` is a module
                import nasseg.lazy_only
        """,
        "nasseg/sub/b.py": "from . import a\n",
        "nasseg/lazy_only.py": "",
        "nasseg/unused.py": "import nasseg.sub.a\n",
        "nasseg/ext.pyx": "",
        "nasseg/uses_ext.py": "from .ext import fast\n",
    })
    imports._direct_imports.cache_clear()


def test_closure_follows_every_kind_of_import(toy):
    assert imports.import_closure(["nasseg.sub.a"], toy) == {
        "nasseg", "nasseg.sub", "nasseg.sub.a", "nasseg.light", "nasseg.sub.b", "nasseg.lazy_only"}
    # A package imported by name runs its lazy imports too; a compiled module is its .pyx.
    assert "nasseg.heavy" in imports.import_closure(["nasseg"], toy)
    assert imports.closure_files(["nasseg.uses_ext"], toy) == [
        "nasseg/__init__.py", "nasseg/ext.pyx", "nasseg/uses_ext.py"]
    with pytest.raises(ImportError, match="nasseg.missing: no such module"):
        imports.import_closure(["nasseg.missing"], toy)


def test_cycle_check_finds_a_cycle(toy):
    # sub.a imports sub.b inside a function and sub.b imports sub.a: a cycle.
    assert imports.import_cycles("nasseg", toy) == [["nasseg.sub.a", "nasseg.sub.b"]]
    (toy / "nasseg/sub/b.py").write_text("")
    imports._direct_imports.cache_clear()
    assert imports.import_cycles("nasseg", toy) == []


@pytest.mark.parametrize("package", ["nasseg", "stages"])
def test_no_import_cycles(package):
    assert imports.import_cycles(package) == []


def stage_table() -> list[pipeline.Stage]:
    return pipeline.stages(pipeline.read_params())


@pytest.mark.parametrize("stage", stage_table(), ids=lambda s: s.name)
def test_static_closure_holds_what_the_entry_points_import(stage):
    """Import the stage's entry modules in a fresh interpreter: every project module
    loaded is in the computed closure (the static graph misses nothing)."""
    probe = ("import importlib, json, sys\n"
             "for m in sys.argv[1:]: importlib.import_module(m)\n"
             "print(json.dumps(sorted(n for n in sys.modules if n.split('.')[0] in ('nasseg', 'stages'))))")
    proc = subprocess.run([sys.executable, "-c", probe, *stage.entry], cwd=ROOT, capture_output=True,
                          text=True, check=True)
    loaded = set(json.loads(proc.stdout))
    assert loaded, "nothing imported: the probe is broken"
    assert loaded <= imports.import_closure(stage.entry)


def test_dataset_stages_depend_on_their_own_format_only():
    by_name = {s.name: s for s in stage_table()}
    for ds in pipeline.DATASETS:
        for kind in ("synthesize", "prepare"):
            formats = {f for f in by_name[f"{kind}_{ds}"].code() if f.startswith("nasseg/data/formats/")}
            assert formats == {f"nasseg/data/formats/{ds}.py", "nasseg/data/formats/__init__.py",
                               "nasseg/data/formats/base.py", "nasseg/data/formats/common.py"}
    search = set(by_name["search_wacv"].code())
    assert "nasseg/metrics/segmentation.py" in search and "nasseg/io.py" in search
    assert not any(f.startswith("nasseg/data/formats/") and f.endswith(tuple(
        f"{ds}.py" for ds in pipeline.DATASETS)) for f in search)


def test_committed_dvc_yaml_is_the_table():
    assert pipeline.main(["--check"]) == 0, "dvc.yaml is stale: run `python workflow/pipeline.py`"


def snakemake_rules(root: Path) -> dict[str, dict]:
    from snakemake.api import OutputSettings, ResourceSettings, SnakemakeApi

    with SnakemakeApi(OutputSettings(quiet=True)) as api:
        workflow = api.workflow(resource_settings=ResourceSettings(cores=1),
                                snakefile=root / "workflow/Snakefile", workdir=root)._workflow
        return {r.name: {"shell": r.shellcmd, "cmd": getattr(r.params, "cmd", None), "log": list(r.log),
                         "input": {str(f) for f in r.input}, "code": {str(f) for f in getattr(r.input, "code", [])},
                         "output": {str(f) for f in r.output}}
                for r in workflow.rules}


def dvc_stages(root: Path) -> dict[str, dict]:
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return {s.name: {"cmd": s.cmd,
                         "deps": {d.def_path for d in s.deps if not isinstance(d, ParamsDependency)},
                         "params": {k for d in s.deps if isinstance(d, ParamsDependency) for k in d.params},
                         "outs": {o.def_path for o in s.outs},
                         "metrics": {o.def_path for o in s.outs if o.metric},
                         "plots": {o.def_path for o in s.outs if o.plot}}
                for s in repo.index.stages}


def test_snakemake_and_dvc_follow_the_table():
    table = {s.name: s for s in stage_table()}
    rules, dvc = snakemake_rules(ROOT), dvc_stages(ROOT)
    assert set(dvc) == set(table)
    assert {name for name, s in table.items() if s.snakemake} <= set(rules)
    for name, stage in table.items():
        code = set(imports.closure_files(stage.entry)) | set(stage.sources)
        assert set(stage.code()) == code
        d = dvc[name]
        assert d["cmd"] == stage.cmd
        assert d["deps"] == code | set(stage.deps), name
        assert d["outs"] == set(stage.outputs()), name
        assert (d["metrics"], d["plots"]) == (set(stage.metrics), set(stage.plots)), name
        assert d["params"] == {pipeline.resolve_key(pipeline.read_params(), k) for k in stage.params}
        if not stage.snakemake:
            continue
        r = rules[name]
        assert r["shell"] == "{params.cmd} > {log} 2>&1" and r["cmd"] == d["cmd"], name
        assert r["input"] == d["deps"] and r["code"] == code, name
        assert r["output"] == d["outs"], name
        assert r["log"] == [f"logs/{name}.log"]


def test_dvc_tracks_only_the_active_preset():
    params = dvc_stages(ROOT)["search_wacv"]["params"]
    preset = pipeline.read_params()["preset"]
    assert params == {"preset", f"search.wacv.{preset}"}


def test_upstream_follows_the_data_and_stays_in_its_experiment():
    config = pipeline.read_params()
    wacv = pipeline.upstream(config, ["report_wacv"])
    assert wacv[-1] == "report_wacv" and {"build_ext", "search_wacv", "rank_wacv", "benchmark_wacv",
                                          "train_wacv_camvid_random", "evaluate_wacv_cityscapes_1"} <= set(wacv)
    assert not [name for name in wacv if "cvpr" in name or name.endswith(("_voc", "_nyud"))]
    assert pipeline.upstream(config, ["prepare_voc"]) == ["synthesize_voc", "prepare_voc"]
    with pytest.raises(SystemExit, match="unknown stage"):
        pipeline.upstream(config, ["report_imagenet"])


def test_set_preset_changes_only_the_preset_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text())
    before = path.read_text().splitlines()
    changes = {key: (a, b) for key, a, b in pipeline.set_preset(path, "paper")}
    assert changes["train.wacv.camvid.epochs"] == (40, 100) and changes["rank.cvpr.k"] == (2, 3)
    assert "train.wacv.camvid.train_split" not in changes          # the same in both presets
    after = path.read_text().splitlines()
    assert [(a, b) for a, b in zip(before, after) if a != b] == [("preset: default", "preset: paper")]
    with pytest.raises(SystemExit, match="no preset 'fast'"):
        pipeline.set_preset(path, "fast")
    # the stage table follows: the paper preset ranks three CVPR architectures
    assert "train_cvpr_voc_3" in {s.name for s in pipeline.stages(pipeline.read_params(path))}
