"""The pipeline's stages, each written once; Snakemake and DVC both follow from here.

Every stage's command, code and data inputs, outputs, parameter keys, metrics and
plots are declared in :func:`stages`. ``workflow/Snakefile`` builds one rule per
stage from this table, and this script writes ``dvc.yaml`` from it::

    python workflow/pipeline.py            # rewrite dvc.yaml
    python workflow/pipeline.py --check    # exit 1 if the committed dvc.yaml is stale

Why a table in Python rather than ``dvc.yaml`` as the source: the code dependencies
are *computed* -- a stage depends on the source of every project module its entry
points import, transitively (:mod:`stages.imports`) -- which DVC's templating cannot
do, while Snakemake, being Python, reads the table directly. ``dvc.yaml`` is then an
output, checked by a test.

Conventions the table keeps:

* ``cmd`` is the exact shell command both tools run (Snakemake adds ``> {log} 2>&1``).
* ``entry``: the modules the command runs. Plug-ins that a stage loads by name at run
  time (one dataset format) are named here too; the static import closure of these
  modules is the stage's code dependencies.
* ``params``: dotted keys of params.yaml, as DVC tracks them; ``${preset}`` stands
  for the active preset, so DVC tracks only the preset that runs (and ``preset``).
* Heavy outputs go to ``runs/`` and ``data/`` (cached by DVC, ignored by git); small
  metrics and plots go to ``reports/`` (``cache: false``, committed to git), so that
  ``dvc metrics diff`` / ``dvc plots diff`` read them for any revision.
* Resumable state (the search's history and checkpoint) is never a declared output: it
  lives in a ``.state`` folder keyed by the run's fingerprint (:mod:`stages.state`).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from stages.imports import closure_files  # noqa: E402
from stages.report import REFERENCE_SLOTS  # noqa: E402  (the ranking's published and random slots)
from stages.train import DATASETS as TRAIN_DATA  # noqa: E402  (the datasets each experiment trains on)

DATASETS = ("voc", "nyud", "cityscapes", "camvid")
#: The dataset each experiment searches on.
SEARCH_DATA = {"wacv": "cityscapes", "cvpr": "voc"}
DVC_YAML = ROOT / "dvc.yaml"
PRESET = "${preset}"
#: The split each training dataset is scored on: the split the papers report (CamVid and
#: NYUD: test; the others: val).
EVAL_SPLIT = {"cityscapes": "val", "camvid": "test", "voc": "val", "nyud": "test"}


@dataclass(frozen=True)
class Out:
    """One declared output."""

    path: str
    #: cached by DVC (large, ignored by git) or not (small, committed to git / rebuilt)
    cache: bool = True
    #: DVC leaves it in place before re-running (a user's download, not resumable state)
    persist: bool = False
    #: a folder (Snakemake's `directory()`)
    directory: bool = False
    #: the category it goes under in `snakemake --report` ("": not in that report)
    report: str = ""


@dataclass(frozen=True)
class Stage:
    """One pipeline stage: what it runs, reads and writes."""

    name: str
    cmd: str
    entry: tuple[str, ...]
    deps: tuple[str, ...] = ()
    outs: tuple[Out, ...] = ()
    params: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    plots: tuple[str, ...] = ()
    #: GPUs the stage holds (Snakemake's `gpu` resource)
    gpus: int = 0
    #: runs alone on its machine (a timing: other jobs beside it would slow what it measures)
    exclusive: bool = False
    #: whether Snakemake has a rule for it (DVC always does)
    snakemake: bool = True
    #: extra source inputs that are not Python modules (setup.py, the .pyx)
    sources: tuple[str, ...] = ()
    comment: str = ""

    def code(self) -> list[str]:
        """The stage's code inputs: the import closure of its entry modules, and its sources."""
        return sorted({*closure_files(self.entry), *self.sources})

    def inputs(self) -> list[str]:
        """Everything the stage reads, code first."""
        return [*self.code(), *self.deps]

    def outputs(self) -> list[str]:
        """Everything the stage writes: outputs, metrics, plots."""
        return [o.path for o in self.outs] + list(self.metrics) + list(self.plots)

    def param_values(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The values of the stage's parameter keys in `config` (what Snakemake compares)."""
        return {resolve_key(config, key): lookup(config, key) for key in self.params}


def resolve_key(config: Mapping[str, Any], key: str) -> str:
    """`key` with ``${name}`` replaced by the top-level value of `name` in `config`."""
    return re.sub(r"\$\{(\w+)\}", lambda m: str(config[m.group(1)]), key)


def lookup(config: Mapping[str, Any], key: str) -> Any:
    node: Any = config
    for part in resolve_key(config, key).split("."):
        node = node[part]
    return node


def gpus_of(devices: list[str]) -> int:
    return sum(1 for d in devices if str(d).startswith("cuda"))


# -- the stages, by topic --------------------------------------------------------------

def build_stages() -> list[Stage]:
    return [Stage(
        name="build_ext",
        cmd="python -m stages.build_ext --out build/ext.json",
        entry=("stages.build_ext",),
        sources=("setup.py", "nasseg/metrics/_confusion.pyx", "nasseg/search/_lstm.pyx",
                 "nasseg/models/_depthwise.pyx"),
        outs=(Out("build/ext.json", cache=False),),
        comment="Compile the Cython extensions in place; later stages depend on its record.",
    )]


def data_stages(config: Mapping[str, Any]) -> list[Stage]:
    stages = []
    for ds in DATASETS:
        fmt = f"nasseg.data.formats.{ds}"
        raw, prepared = f"data/raw/{ds}", f"data/prepared/{ds}"
        stages.append(Stage(
            name=f"synthesize_{ds}",
            cmd=f"python -m stages.synthesize --dataset {ds} --out {raw}",
            entry=("stages.synthesize", fmt),
            params=(f"data.source.{ds}", "synthesize.seed", f"synthesize.{ds}"),
            outs=(Out(raw, cache=False, persist=True, directory=True),),
            # With data.source.<ds>: real, data/raw/<ds> is the user's download: Snakemake
            # treats it as a source (no rule), DVC's stage only checks its layout.
            snakemake=config["data"]["source"][ds] == "synthetic",
            comment=(f"Synthetic stand-in of {ds} in its official layout (or, with "
                     f"data.source.{ds}: real, a check of your download). Never cached or "
                     "deleted by DVC (persist), so a real download placed there is safe."),
        ))
        stages.append(Stage(
            name=f"prepare_{ds}",
            cmd=f"python -m stages.prepare --dataset {ds} --raw {raw} --out {prepared}",
            entry=("stages.prepare", fmt),
            deps=(raw,),
            params=("prepare",),
            outs=(Out(prepared, directory=True),),
            comment=f"Convert {raw} to the prepared format; versioned by DVC.",
        ))
    return stages


def search_stages(config: Mapping[str, Any]) -> list[Stage]:
    stages = []
    for exp, ds in SEARCH_DATA.items():
        out, reports = f"runs/search/{exp}", f"reports/{exp}/search"
        stages.append(Stage(
            name=f"search_{exp}",
            cmd=(f"python -m stages.search --experiment {exp} --data data/prepared/{ds} "
                 f"--out {out} --metrics {reports} --no-progress"),
            entry=("stages.search",),
            deps=("build/ext.json", f"data/prepared/{ds}"),
            params=("preset", f"search.{exp}.{PRESET}"),
            outs=(Out(f"{out}/history.jsonl"), Out(f"{out}/summary.json")),
            metrics=(f"{reports}/metrics.json",),
            plots=(f"{reports}/rewards.csv",),
            gpus=gpus_of(lookup(config, f"search.{exp}.{PRESET}.devices")),
            comment=(f"Architecture search ({exp} space on {ds}). Its resumable state lives in "
                     f"runs/search/.state/{exp}/<fingerprint>/, outside the outputs."),
        ))
    return stages


def slots(config: Mapping[str, Any], exp: str) -> list[str]:
    """The ranking's slots of `exp` at the active preset: 1 .. rank.k, then the references."""
    k = int(lookup(config, f"rank.{exp}.{PRESET}.k"))
    return [str(i) for i in range(1, k + 1)] + list(REFERENCE_SLOTS)


def rank_stages(config: Mapping[str, Any]) -> list[Stage]:
    stages = []
    for exp in SEARCH_DATA:
        out = f"reports/{exp}/rank"
        stages.append(Stage(
            name=f"rank_{exp}",
            cmd=f"python -m stages.rank --experiment {exp} --history runs/search/{exp}/history.jsonl --out {out}",
            entry=("stages.rank",),
            deps=(f"runs/search/{exp}/history.jsonl",),
            params=("preset", f"rank.{exp}.{PRESET}"),
            outs=(*(Out(f"{out}/top/{slot}.json", cache=False) for slot in slots(config, exp)),
                  Out(f"{out}/rankings.csv", cache=False), Out(f"{out}/rankings.md", cache=False)),
            metrics=(f"{out}/metrics.json",),
            comment=(f"Rank the {exp} search's architectures; one genotype file per slot: the top "
                     f"rank.{exp}.k, the published genotype and a random one (small, kept in git)."),
        ))
    return stages


def train_stages(config: Mapping[str, Any]) -> list[Stage]:
    """Full training and evaluation of every slot on each of the experiment's datasets."""
    stages = []
    for exp, datasets in TRAIN_DATA.items():
        for ds in datasets:
            for slot in slots(config, exp):
                run, rep = f"runs/train/{exp}/{ds}/{slot}", f"reports/{exp}/train/{ds}/{slot}"
                evaluated = f"reports/{exp}/evaluate/{ds}/{slot}"
                genotype = f"reports/{exp}/rank/top/{slot}.json"
                section = lookup(config, f"train.{exp}.{ds}.{PRESET}")
                processes = int(section.get("processes", 1))
                launcher = (f"torchrun --standalone --nproc-per-node {processes} -m stages.train"
                            if processes > 1 else "python -m stages.train")
                on_gpu = str(section.get("device", "auto")).startswith("cuda")
                stages.append(Stage(
                    name=f"train_{exp}_{ds}_{slot}",
                    cmd=(f"{launcher} --experiment {exp} --dataset {ds} --genotype {genotype} "
                         f"--data data/prepared/{ds} --out {run} --metrics {rep} --no-progress"),
                    entry=("stages.train",),
                    deps=("build/ext.json", f"data/prepared/{ds}", genotype),
                    params=("preset", f"train.{exp}.{ds}.{PRESET}"),
                    outs=(Out(f"{run}/model.pt"), Out(f"{run}/best.pt")),
                    metrics=(f"{rep}/metrics.json",),
                    plots=(f"{rep}/metrics.tsv",),
                    gpus=processes if on_gpu else 0,
                    comment=f"Train slot {slot} of the {exp} ranking on {ds} in full (resumable).",
                ))
                segmentation = ds != "nyud"
                stages.append(Stage(
                    name=f"evaluate_{exp}_{ds}_{slot}",
                    cmd=(f"python -m stages.evaluate --experiment {exp} --checkpoint {run}/best.pt "
                         f"--data data/prepared/{ds} --split {EVAL_SPLIT[ds]} --out {evaluated}/metrics.json "
                         "--no-progress"),
                    entry=("stages.evaluate",),
                    deps=("build/ext.json", f"data/prepared/{ds}", f"{run}/best.pt"),
                    params=("preset", f"evaluate.{exp}.{PRESET}"),
                    outs=((Out(f"{evaluated}/confusion_matrix.png", cache=False, report="Evaluation"),)
                          if segmentation else ()),
                    metrics=(f"{evaluated}/metrics.json",),
                    plots=(f"{evaluated}/per_class_iou.csv",) if segmentation else (),
                    comment=(f"Score the best checkpoint of slot {slot} on the {ds} {EVAL_SPLIT[ds]} split "
                             "at full resolution."),
                ))
    return stages


def trained_slots(config: Mapping[str, Any], exp: str) -> list[tuple[str, str, str]]:
    """(dataset, slot, best checkpoint) of every network the experiment trains."""
    return [(ds, slot, f"runs/train/{exp}/{ds}/{slot}/best.pt")
            for ds in TRAIN_DATA[exp] for slot in slots(config, exp)]


def benchmark_stages(config: Mapping[str, Any]) -> list[Stage]:
    """Eval-mode latency of every trained network of each experiment, in one stage per experiment
    (the networks are timed one after another, on a machine that runs nothing else meanwhile)."""
    stages = []
    for exp, datasets in TRAIN_DATA.items():
        out = f"reports/{exp}/benchmark"
        trained = trained_slots(config, exp)
        checkpoints = " ".join(f"--checkpoint {ds}/{slot}={ckpt}" for ds, slot, ckpt in trained)
        stages.append(Stage(
            name=f"benchmark_{exp}",
            cmd=(f"python -m stages.benchmark --experiment {exp} {checkpoints} --data-root data/prepared "
                 f"--out {out}/latency.json --metrics {out}/metrics.json --no-progress"),
            entry=("stages.benchmark",),
            deps=("build/ext.json", *(f"data/prepared/{ds}" for ds in datasets),
                  *(ckpt for _, _, ckpt in trained)),
            params=("preset", f"benchmark.{exp}.{PRESET}"),
            outs=(Out(f"{out}/latency.json", cache=False),),
            metrics=(f"{out}/metrics.json",),
            plots=(f"{out}/latency.csv",),
            gpus=1 if str(lookup(config, f"benchmark.{exp}.{PRESET}.device")).startswith("cuda") else 0,
            exclusive=True,
            comment=(f"Eval-mode latency of every trained {exp} network per size and backend (BatchNorm "
                     "folded, batch 1, each backend checked against eager first), params and FLOPs; int8's "
                     "accuracy change on the validation split."),
        ))
    return stages


def report_stages(config: Mapping[str, Any]) -> list[Stage]:
    """One report per experiment: search, ranking, training, evaluation and latency on one page."""
    stages = []
    for exp, datasets in TRAIN_DATA.items():
        search, rank = f"runs/search/{exp}", f"reports/{exp}/rank"
        deps = [f"{search}/history.jsonl", f"{search}/summary.json", f"reports/{exp}/search/metrics.json",
                f"{rank}/rankings.csv", f"{rank}/metrics.json",
                *(f"{rank}/top/{slot}.json" for slot in slots(config, exp)),
                f"reports/{exp}/benchmark/latency.json"]
        for ds, slot, ckpt in trained_slots(config, exp):
            deps += [f"reports/{exp}/train/{ds}/{slot}/metrics.json", f"reports/{exp}/train/{ds}/{slot}/metrics.tsv",
                     f"reports/{exp}/evaluate/{ds}/{slot}/metrics.json"]
            if ds != "nyud":
                deps.append(f"reports/{exp}/evaluate/{ds}/{slot}/confusion_matrix.png")
            if slot not in REFERENCE_SLOTS:      # the qualitative figures show the best searched slot
                deps.append(ckpt)
        deps += [f"data/prepared/{ds}" for ds in datasets]
        stages.append(Stage(
            name=f"report_{exp}",
            cmd=f"python -m stages.report --experiment {exp} --out reports/{exp} --no-progress",
            entry=("stages.report",),
            deps=tuple(deps),
            params=("preset", f"rank.{exp}.{PRESET}.k", *(f"train.{exp}.{ds}.{PRESET}.seed" for ds in datasets)),
            outs=(Out(f"reports/{exp}/report.html", report="Report"), Out(f"reports/{exp}/report.md"),
                  Out(f"reports/{exp}/figures", directory=True, report="Figures")),
            comment=(f"The {exp} report: reports/{exp}/report.html (self-contained) and report.md with "
                     "figures/: search, ranking, training, evaluation, latency, trade-offs, provenance, "
                     "changes since the last commit. Cached by DVC (it records the time and revision)."),
        ))
    return stages


def stages(config: Mapping[str, Any]) -> list[Stage]:
    """Every stage of the pipeline for the parameters `config` (params.yaml).

    Snakemake's view (which rules exist, GPU counts) depends on the values; the DVC
    stages written from it depend on them only through the number of ranking slots
    (``rank.<exp>.<preset>.k``), so dvc.yaml changes only when a preset's k does
    (regenerate it then: ``python workflow/pipeline.py``; a test and the Snakefile
    check that it is current).
    """
    return [*build_stages(), *data_stages(config), *search_stages(config), *rank_stages(config),
            *train_stages(config), *benchmark_stages(config), *report_stages(config)]


def final_outputs(config: Mapping[str, Any], exp: str) -> list[str]:
    """What `reproduce_<exp>` asks for: the last outputs of each of the experiment's chains."""
    return [o.path for stage in stages(config) if stage.name == f"report_{exp}" for o in stage.outs]


def plot_definitions(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Top-level `plots:` of dvc.yaml: how the plot files are drawn."""
    plots: list[dict[str, Any]] = [{f"Search rewards per architecture ({exp.upper()})": {
        "x": "id", "y": {f"reports/{exp}/search/rewards.csv": ["reward", "best_so_far"]}}}
        for exp in SEARCH_DATA]
    for exp, datasets in TRAIN_DATA.items():
        for ds in datasets:
            score = "val_rmse" if ds == "nyud" else "val_miou"
            plots.append({f"Full training, {score} per epoch ({exp.upper()}, {ds})": {
                "x": "epoch",
                "y": {f"reports/{exp}/train/{ds}/{slot}/metrics.tsv": [score] for slot in slots(config, exp)}}})
    return plots


# -- dvc.yaml ---------------------------------------------------------------------------

def _dvc_out(out: Out) -> str | dict[str, Any]:
    opts = {k: v for k, v in (("cache", out.cache), ("persist", out.persist))
            if v != Out.__dataclass_fields__[k].default}
    return {out.path: opts} if opts else out.path


def dvc_stage(stage: Stage) -> dict[str, Any]:
    entry: dict[str, Any] = {"cmd": stage.cmd, "deps": stage.inputs()}
    if stage.params:
        entry["params"] = list(stage.params)
    if stage.outs:
        entry["outs"] = [_dvc_out(o) for o in stage.outs]
    if stage.metrics:
        entry["metrics"] = [{m: {"cache": False}} for m in stage.metrics]
    if stage.plots:
        entry["plots"] = [{p: {"cache": False}} for p in stage.plots]
    return entry


def render_dvc_yaml(config: Mapping[str, Any]) -> str:
    header = ("# GENERATED by `python workflow/pipeline.py` from the stage table in that file;\n"
              "# do not edit: change the table and regenerate (a test fails when this is stale).\n"
              "# Code dependencies are the computed import closure of each stage's entry points.\n")
    parts = [header, "stages:\n"]
    for stage in stages(config):
        if stage.comment:
            parts.append("".join(f"  # {line}\n" for line in textwrap.wrap(stage.comment, 86)))
        body = yaml.safe_dump({stage.name: dvc_stage(stage)}, sort_keys=False, width=100)
        parts.append("".join(f"  {line}\n" for line in body.splitlines()))
    parts.append("\n" + yaml.safe_dump({"plots": plot_definitions(config)}, sort_keys=False, width=100))
    return "".join(parts)


# -- keeping DVC in step with Snakemake ----------------------------------------------------

def upstream(config: Mapping[str, Any], names: list[str]) -> list[str]:
    """The stages `names` and every stage whose outputs they read, transitively, in table order."""
    table = stages(config)
    producer = {path: stage.name for stage in table for path in stage.outputs()}
    by_name = {stage.name: stage for stage in table}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise SystemExit(f"unknown stage(s) {', '.join(unknown)}; the stages are: {', '.join(by_name)}")
    wanted, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo.extend(producer[d] for d in by_name[name].deps if d in producer)
    return [stage.name for stage in table if stage.name in wanted]


def sync_dvc(names: list[str], root: Path = ROOT) -> None:
    """Record the stages `names` -- just run by Snakemake, so up to date -- in dvc.lock, their
    cached outputs in DVC's cache (`dvc commit --force`), so that `dvc status` agrees.

    Only stages whose every output exists are committed (a stage Snakemake skipped, such as
    synthesize_<dataset> for a real download, has none to record).
    """
    table = {stage.name: stage for stage in stages(read_params(root / "params.yaml"))}
    done = [n for n in names if n in table and all((root / p).exists() for p in table[n].outputs())]
    if not done:
        return
    # `dvc commit` moves cached outputs into the cache and copies or links them back, which
    # renews their modification times; put those back, or Snakemake would see every output
    # newer than what was made from it and rerun the stages downstream.
    times = {path: (st.st_atime_ns, st.st_mtime_ns) for stage in done for out in table[stage].outputs()
             for path in _tree(root / out) for st in (path.stat(),)}
    subprocess.run([sys.executable, "-m", "dvc", "commit", "--force", "--quiet", *done], cwd=root, check=True)
    for path, ns in times.items():
        if path.exists():
            os.utime(path, ns=ns)
    print(f"dvc: recorded {len(done)} stage(s) in dvc.lock", file=sys.stderr)


def sync_snakemake(names: list[str], targets: list[str], root: Path = ROOT) -> None:
    """After `dvc repro` of the stages `targets` (`names`: them and all they depend on): record them
    in Snakemake's metadata, so that a
    Snakemake run has nothing to do either (`snakemake --touch`, which stores the parameters and
    code of each job it marks done, in order). Refused unless DVC says all of them are up to
    date -- marking stale outputs done would hide work still to do."""
    stale = json.loads(subprocess.run([sys.executable, "-m", "dvc", "status", "--json", *names],
                                      cwd=root, check=True, capture_output=True, text=True).stdout or "{}")
    if stale:
        raise SystemExit(f"DVC says {', '.join(sorted(stale))} are not up to date: run `dvc repro "
                         f"{' '.join(names)}` first")
    subprocess.run([sys.executable, "-m", "snakemake", "--touch", "--cores", "1", *targets],
                   cwd=root, check=True, env={**os.environ, "NASSEG_SYNC_DVC": "0"}, stdout=subprocess.DEVNULL)
    print(f"snakemake: {' '.join(targets)} and what it depends on recorded as done", file=sys.stderr)


def _tree(path: Path) -> list[Path]:
    """`path` and, for a folder, everything in it (deepest first, so folders' times come last)."""
    if not path.is_dir():
        return [path]
    return [*sorted(path.rglob("*"), key=lambda p: -len(p.parts)), path]


def set_preset(path: Path, name: str) -> list[tuple[str, Any, Any]]:
    """Set the top-level `preset:` of params file `path` to `name`, changing only that line.

    Returns the values that change for the stages, as (key without the preset, old value,
    new value): `dvc params diff` shows only `preset` itself, since the presets' own values
    stay as they were; this is what the switch means to each stage.
    """
    text = path.read_text()
    params = yaml.safe_load(text)
    presets = set(params["train"]["wacv"]["cityscapes"])
    if name not in presets:
        raise SystemExit(f"{path}: no preset {name!r} (the presets: {', '.join(sorted(presets))})")
    new, count = re.subn(r"(?m)^preset:.*$", f"preset: {name}", text)
    if count != 1:
        raise SystemExit(f"{path}: expected one top-level `preset:` line, found {count}")
    path.write_text(new)
    return preset_changes(params, params["preset"], name)


def preset_changes(params: Mapping[str, Any], old: str, new: str) -> list[tuple[str, Any, Any]]:
    """Every value that differs between presets `old` and `new` of `params`, keyed without the
    preset's name (`train.wacv.camvid.epochs`)."""
    changes: list[tuple[str, Any, Any]] = []

    def walk(node: Any, key: str) -> None:
        if not isinstance(node, Mapping):
            return
        if old in node and new in node and isinstance(node[old], Mapping):
            a, b = _flatten(node[old]), _flatten(node[new])
            changes.extend((f"{key}.{k}".lstrip("."), a.get(k), b.get(k))
                           for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k))
            return
        for child, value in node.items():
            walk(value, f"{key}.{child}")

    walk(params, "")
    return changes


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, Mapping):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def read_params(path: Path = ROOT / "params.yaml") -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python workflow/pipeline.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if dvc.yaml differs from the table")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--sync-dvc", nargs="+", metavar="STAGE",
                        help="record these stages and all they depend on in dvc.lock (dvc commit), after "
                             "Snakemake ran them; the Snakefile does it on success by itself, e.g. "
                             "--sync-dvc report_wacv")
    parser.add_argument("--sync-snakemake", nargs="+", metavar="STAGE",
                        help="after `dvc repro STAGE`: record these stages and all they depend on as done "
                             "in Snakemake's metadata (snakemake --touch), once DVC says they are up to date")
    parser.add_argument("--preset", metavar="NAME",
                        help="switch the pipeline to preset NAME (default, paper, ci): set `preset:` in "
                             "params.yaml, keeping its comments, and rewrite dvc.yaml for it")
    args = parser.parse_args(argv)
    if args.preset:
        changes = set_preset(args.params, args.preset)
        print(f"{args.params}: preset {args.preset}; what changes for the stages ({len(changes)} values):")
        for key, before, after in changes:
            print(f"  {key}: {before!r} -> {after!r}")
    if args.sync_dvc:
        sync_dvc(upstream(read_params(args.params), args.sync_dvc))
        return 0
    if args.sync_snakemake:
        sync_snakemake(upstream(read_params(args.params), args.sync_snakemake), args.sync_snakemake)
        return 0
    text = render_dvc_yaml(read_params(args.params))
    if args.check:
        if not DVC_YAML.is_file() or DVC_YAML.read_text() != text:
            print(f"{DVC_YAML} is stale: run `python workflow/pipeline.py` and commit it",
                  file=sys.stderr)
            return 1
        return 0
    DVC_YAML.write_text(text)
    print(f"wrote {DVC_YAML}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
