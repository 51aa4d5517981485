"""The report stage, rendered from a real tiny run of both experiments.

A session fixture runs the real stages (search, rank, train, evaluate) with the ci preset
on small synthetic stand-ins, for the WACV and the CVPR experiment, in the pipeline's
layout (tests/report_run.py), and writes a fake latency.json in the benchmark stage's
format. The reports rendered from it must have every section filled, every image of the
HTML page embedded and decodable, every image link of the Markdown pointing at a file,
an untrained-network row per dataset whose scores are recomputed here independently, a
verdict per dataset whose claims match the numbers, and, once the run is committed to git
and a metric and a parameter are changed, a "what changed" section that shows both.
Missing inputs fail with the file and the stage that writes it named. The drawing of
architectures is checked against the decoders themselves, for both spaces.
"""
from __future__ import annotations

import base64
import io
import json
import random
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

import nasseg
from nasseg.data import PreparedDataset, eval_transform
from nasseg.evaluation import evaluate
from nasseg.reporting.architecture import draw_graph, layout
from nasseg.reporting.baselines import UntrainedBaseline
from nasseg.reporting.changes import Change, diff_metrics, diff_params, flatten_metrics
from nasseg.reporting.document import Document, Image as DocImage, Paragraph, Section, Table
from nasseg.reporting.figures import pareto_front
from nasseg.reporting.render import render_html, render_markdown
from nasseg.reporting.sections import SECTION_IDS, against_baselines, higher_is_better, margin, published_figures
from nasseg.spaces import get_space
from nasseg.spaces.cvpr import cell_loose_ends
from stages.report import main
from stages.train import load_config

from report_run import EVAL_SPLIT, SLOTS, fake_latency, tiny_run, write_params

# -- the run ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def run_root(tmp_path_factory) -> Path:
    """Both experiments run end to end (about 20 s of CPU), and their fake latency files."""
    root = tmp_path_factory.mktemp("report-run")
    write_params(root)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for experiment in ("wacv", "cvpr"):
            tiny_run(root, experiment)
            fake_latency(root, experiment)
    finally:
        torch.set_num_threads(threads)
    return root


def report_args(root: Path, experiment: str, out: Path, *extra: str) -> list[str]:
    return ["--experiment", experiment, "--out", str(out), "--reports", str(root / "reports"),
            "--runs", str(root / "runs"), "--data", str(root / "data/prepared"), "--params",
            str(root / "params.yaml"), "--repo", str(root), "--no-progress", *extra]


@pytest.fixture(scope="session")
def reports(run_root: Path) -> dict[str, Path]:
    """The report of each experiment, rendered once."""
    out = {}
    for experiment in ("wacv", "cvpr"):
        folder = run_root / "reports" / experiment / "report"
        assert main(report_args(run_root, experiment, folder)) == 0
        out[experiment] = folder
    return out


class Page(HTMLParser):
    """The sections (id -> their text, tags and image sources) and every image of a page."""

    def __init__(self, text: str):
        super().__init__()
        self.sections: dict[str, dict] = {}
        self.current: str | None = None
        self.images: list[str] = []
        self.external: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "section":
            self.current = a.get("id")
            self.sections[self.current] = {"text": [], "tags": [], "images": []}
        if self.current is not None:
            self.sections[self.current]["tags"].append(tag)
        if tag == "img":
            self.images.append(a.get("src", ""))
            if self.current is not None:
                self.sections[self.current]["images"].append(a.get("src", ""))
        if tag in ("script", "link", "iframe") or (tag != "a" and a.get("src", "data:").startswith("http")):
            self.external.append(f"<{tag} {a}>")

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self.current = None

    def handle_data(self, data: str) -> None:
        if self.current is not None:
            self.sections[self.current]["text"].append(data)

    def text(self, section: str) -> str:
        return " ".join(" ".join(self.sections[section]["text"]).split())


def decode(src: str) -> tuple[str, bytes]:
    m = re.fullmatch(r"data:(image/png|image/svg\+xml);base64,([A-Za-z0-9+/=]+)", src)
    assert m, f"not an embedded PNG or SVG: {src[:80]}"
    return m.group(1), base64.b64decode(m.group(2), validate=True)


def check_image(mime: str, data: bytes) -> None:
    if mime == "image/png":
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            assert img.format == "PNG" and img.width > 50 and img.height > 50
    else:
        root = ET.fromstring(data)
        assert root.tag.endswith("svg") and len(list(root.iter())) > 20


# -- the rendered reports -------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["wacv", "cvpr"])
def test_every_section_is_there_and_filled(reports, run_root, experiment):
    page = Page((reports[experiment] / "report.html").read_text())
    assert list(page.sections) == list(SECTION_IDS)
    for sid in SECTION_IDS:
        tags = page.sections[sid]["tags"]
        assert "table" in tags or "img" in tags or sid == "changes", sid
        assert "No latency measurements" not in page.text(sid)
    datasets = {"wacv": ("cityscapes", "camvid"), "cvpr": ("voc", "nyud")}[experiment]
    search = page.text("search")
    assert "3 architectures" in search and "ppo" in search and "moving average" in search
    assert "one strategy ran (ppo)" in search
    # the ranking draws every slot (SVG) and names the published one
    ranking = page.sections["ranking"]["images"]
    assert sum(src.startswith("data:image/svg+xml") for src in ranking) == 3
    assert f"{experiment}/arch0" in page.text("ranking")
    training = page.text("training")
    for ds in datasets:
        assert ds in training
    assert "constant prediction" in training and "paper:" in training
    assert training.count("untrained network: slot 1 (searched, rank 1), seed 0 baseline") == len(datasets)
    if experiment == "cvpr":
        assert "rmse" in training and "Depth has no classes" in training
    # trade-off per dataset, Pareto front marked; latency: the verdict and the published figures
    assert "Pareto front" in page.text("tradeoff")
    assert len(page.sections["tradeoff"]["images"]) == len(datasets)
    latency = page.text("latency")
    assert "Which backend won. onnxruntime won at every size: 3.0" in latency
    assert "the fastest fp32 backend is onnxruntime" in latency
    assert "int8" in latency and "mIoU" in latency and "failed" in latency
    if experiment == "wacv":   # the papers' figures beside ours, labelled as theirs
        assert "paper: wacv/arch0" in latency and "52.25 ± 0.03" in latency and "GTX 1080Ti" in latency
        assert "ours: cityscapes/published (wacv/arch0)" in latency
    else:
        assert "publish no latency" in latency
    assert len(page.sections["qualitative"]["images"]) == len(datasets)
    provenance = page.text("provenance")
    assert "parameters hash" in provenance and "torch" in provenance and "preset" in provenance
    assert "no baseline" in page.text("changes")   # the run root is no git repository


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["wacv", "cvpr"])
def test_every_image_of_the_page_is_embedded_and_decodes(reports, experiment):
    page = Page((reports[experiment] / "report.html").read_text())
    assert not page.external, page.external
    assert len(page.images) >= 12
    kinds = set()
    for src in page.images:
        mime, data = decode(src)
        check_image(mime, data)
        kinds.add(mime)
    assert kinds == {"image/png", "image/svg+xml"}


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["wacv", "cvpr"])
def test_markdown_links_its_figures_relatively(reports, experiment):
    out = reports[experiment]
    text = (out / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text)
    assert links and all(not Path(link).is_absolute() and link.startswith("figures/") for link in links)
    for link in links:
        assert (out / link).is_file(), link
    assert sorted(links) == sorted(f"figures/{p.name}" for p in (out / "figures").iterdir())
    assert len(links) == len(Page((out / "report.html").read_text()).images)
    for sid in SECTION_IDS:
        assert f'<a id="{sid}"></a>' in text


@pytest.mark.slow
def test_changes_since_the_committed_run(run_root, tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(run_root, root, ignore=shutil.ignore_patterns("report", ".state"))
    git = ["git", "-C", str(root)]
    subprocess.run([*git, "init", "-q"], check=True)
    for key, value in (("user.name", "nasseg tests"), ("user.email", "tests@nasseg.invalid")):
        subprocess.run([*git, "config", key, value], check=True)
    subprocess.run([*git, "add", "reports", "params.yaml"], check=True)
    subprocess.run([*git, "commit", "-qm", "the baseline run"], check=True)
    # a new run: one metric and one parameter of this experiment changed, one of the other not
    metrics_file = root / "reports/wacv/evaluate/cityscapes/1/metrics.json"
    metrics = json.loads(metrics_file.read_text())
    old_miou = metrics["miou"]
    metrics["miou"] = old_miou + 0.25
    metrics_file.write_text(json.dumps(metrics))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["wacv"]["cityscapes"]["ci"]["epochs"] = 3
    params["train"]["cvpr"]["voc"]["ci"]["epochs"] = 5
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = root / "reports/wacv/report"
    assert main(report_args(root, "wacv", out, "--qualitative", "0")) == 0
    page = Page((out / "report.html").read_text())
    changes = page.text("changes")
    head = subprocess.run([*git, "rev-parse", "--short=10", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert head in changes and "the baseline run" in changes
    assert "reports/wacv/evaluate/cityscapes/1/metrics.json miou" in changes
    assert f"{old_miou:.6g} {old_miou + 0.25:.6g} +0.2500" in changes
    assert "train.wacv.cityscapes.ci.epochs 2 3" in changes
    assert "train.cvpr" not in changes   # another experiment's parameters are not this report's
    assert "(modified: tracked files differ from it)" in page.text("provenance")
    md = (out / "report.md").read_text()
    assert "| reports/wacv/evaluate/cityscapes/1/metrics.json | miou |" in md


@pytest.mark.slow
def test_strategies_compared_and_no_latency(run_root, tmp_path):
    # a second search, as if run with the random strategy
    other = tmp_path / "random-search"
    other.mkdir()
    rng = random.Random(1)
    lines = []
    for line in (run_root / "runs/search/wacv/history.jsonl").read_text().splitlines():
        record = json.loads(line)
        record["reward"] = rng.random() * 0.02
        lines.append(json.dumps(record))
    (other / "history.jsonl").write_text("\n".join(lines) + "\n")
    summary = json.loads((run_root / "runs/search/wacv/summary.json").read_text())
    (other / "summary.json").write_text(json.dumps({**summary, "strategy": "random"}))
    out = tmp_path / "report"
    assert main(report_args(run_root, "wacv", out, "--compare-search", str(other), "--no-latency",
                            "--qualitative", "0", "--baseline-images", "2")) == 0
    page = Page((out / "report.html").read_text())
    search = page.text("search")
    assert "Strategies compared" in search and "ppo" in search and "random" in search
    assert len(page.sections["search"]["images"]) == 3
    assert "No latency measurements: the report was made with --no-latency" in page.text("latency")
    assert "Only the parameter trade-off is shown" in page.text("tradeoff")
    assert "--qualitative 0" in page.text("qualitative")
    training = page.text("training")   # the untrained network on 2 images, said in the row, caption and verdict
    for ds in ("cityscapes", "camvid"):
        total = len(PreparedDataset(run_root / "data/prepared" / ds, EVAL_SPLIT[ds]))
        assert f"baseline (2 of {total} images)" in training
        assert f"on 2 of the {total} images of the split, spread evenly over it (--baseline-images)" in training
        assert f"on 2 of the {total} images of {EVAL_SPLIT[ds]})" in training


@pytest.mark.slow
def test_missing_inputs_name_the_file_and_its_stage(run_root, tmp_path, capsys):
    out = tmp_path / "report"
    missing = tmp_path / "latency.json"
    assert main(report_args(run_root, "wacv", out, "--latency", str(missing))) == 2
    err = capsys.readouterr().err
    assert f"error: {missing}: not found; it is written by the benchmark stage" in err
    reports = tmp_path / "reports"
    shutil.copytree(run_root / "reports", reports, ignore=shutil.ignore_patterns("report"))
    (reports / "wacv/evaluate/camvid/random/metrics.json").unlink()
    args = report_args(run_root, "wacv", out)
    args[args.index("--reports") + 1] = str(reports)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{reports / 'wacv/evaluate/camvid/random/metrics.json'}: not found; it is written by the evaluate " \
           "stage" in err
    (reports / "wacv/rank/rankings.csv").unlink()
    assert main(args) == 2
    assert "rankings.csv: not found; it is written by the rank stage" in capsys.readouterr().err
    assert not out.exists()


# -- the untrained network and the verdict ------------------------------------------------------

EXPERIMENT_DATASETS = {"wacv": ("cityscapes", "camvid"), "cvpr": ("voc", "nyud")}
NUMBER = r"(\d+\.\d{4}|—)"


def independent_untrained(root: Path, experiment: str, ds: str) -> dict:
    """Slot 1's architecture as the train stage builds it before its first step (genotype from the
    ranking, sizes and seed from params.yaml), scored on the whole evaluated split, batch 1."""
    config = load_config(root / "params.yaml", experiment, ds, [])
    genotype = nasseg.genotype_from_dict(
        json.loads((root / "reports" / experiment / "rank/top/1.json").read_text())["genotype"])
    data = PreparedDataset(root / "data/prepared" / ds, EVAL_SPLIT[ds], eval_transform(), task=config.task)
    torch.manual_seed(config.seed)
    model = nasseg.build_segmenter(genotype, data.num_classes, agg_size=config.agg_size, repeats=config.repeats,
                                   aux_cell=config.aux_cell)
    batches = [(image[None], target[None]) for image, target in (data[i] for i in range(len(data)))]
    return evaluate(model, batches, task=data.task, num_classes=data.num_classes, ignore_index=data.ignore_index)


def evaluated(root: Path, experiment: str, ds: str, slot: str) -> dict:
    return json.loads((root / "reports" / experiment / "evaluate" / ds / slot / "metrics.json").read_text())


def claim(text: str, what: str, score: str) -> tuple[float, float | None]:
    """(the other's score, the margin claimed: positive beats, negative trails, 0 ties) of ``what``
    in a verdict."""
    m = re.search(rf"(\*\*beats\*\*|beats|\*\*does not beat\*\*|does not beat) {re.escape(what)} "
                  rf"\({'[^()]*, ' if 'slot' in what else ''}{score} {NUMBER}[^)]*\)"
                  rf"( \*\*by {NUMBER}\*\*| by {NUMBER}|: it trails it by {NUMBER}|: they tie)", text)
    assert m, f"no claim about {what} in: {text}"
    verb, other, tail = m.group(1).strip("*"), float(m.group(2)), m.group(3)
    if verb == "beats":
        return other, float(m.group(4) or m.group(5))
    return other, (-float(m.group(6)) if "trails" in tail else 0.0)


def claim_holds(claimed: float, truth: float) -> bool:
    """Whether a claimed margin says what the true one is: beats, trails or ties (within 5e-5),
    and by as much (to the four decimals shown)."""
    if abs(truth) < 5e-5:
        return claimed == 0.0
    return (claimed > 0) == (truth > 0) and abs(claimed - truth) <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["wacv", "cvpr"])
def test_untrained_row_per_dataset_and_a_verdict_that_matches_the_numbers(reports, run_root, experiment):
    md = (reports[experiment] / "report.md").read_text()
    for ds in EXPERIMENT_DATASETS[experiment]:
        section = re.split(r"\n##+ ", md.split(f"\n### {ds}\n", 1)[1], maxsplit=1)[0]
        task = evaluated(run_root, experiment, ds, "1")["task"]
        score = "rmse" if task == "depth" else "miou"
        keys = ("rmse", "abs_rel", "log10", "delta1", "delta2", "delta3") if task == "depth" else \
            ("miou", "mean_acc", "fwiou", "pixel_acc")
        # the row: the untrained network, recomputed here without the report's code, and plausible
        row = re.search(r"^\| untrained network: slot 1 \(searched, rank 1\), seed 0 \| baseline \| ([\d,]+) \| 0 "
                        r"\| — \| " + r" \| ".join([NUMBER] * len(keys)) + r" \| 0 \|$", section, re.M)
        assert row, section
        params = json.loads((run_root / "reports" / experiment / "train" / ds / "1/metrics.json").read_text())
        assert int(row.group(1).replace(",", "")) == params["params_without_aux"]
        ours = independent_untrained(run_root, experiment, ds)
        shown = dict(zip(keys, row.groups()[1:]))
        for k in keys:
            assert shown[k] == f"{ours[k]:.4f}", (ds, k, shown[k], ours[k])
        if task == "depth":
            assert 0 < ours["rmse"] < 20 and 0 <= ours["delta1"] <= 1
        else:
            assert 0 <= ours["miou"] <= ours["pixel_acc"] <= 1
        # the verdict: its numbers are the evaluations' and the row's, its claims follow from them
        verdict = next(line for line in section.splitlines() if "against the baselines.**" in line)
        best = evaluated(run_root, experiment, ds, "1")[score]
        assert f"Slot 1 (searched, rank 1) scores {score} **{best:.4f}**" in verdict
        other, claimed = claim(verdict, "the untrained network", score)
        assert f"{other:.4f}" == f"{ours[score]:.4f}"
        truth = margin(score, best, ours[score])
        assert claim_holds(claimed, truth), (verdict, truth)
        for slot in SLOTS[1:]:
            value = evaluated(run_root, experiment, ds, slot)[score]
            other, claimed = claim(verdict, f"the {slot} slot", score)
            assert other == pytest.approx(value, abs=5e-5)
            assert claim_holds(claimed, margin(score, best, value)), (verdict, slot, value)


def test_the_verdict_follows_the_numbers():
    untrained = UntrainedBaseline("1", 7, "val", 2, 10, {"miou": 0.25, "rmse": 0.9})
    refs = [("published", "wacv/arch0", 0.5), ("random", "random wacv genotype", 0.125)]
    text = against_baselines("camvid", "miou", ("slot 1 (searched, rank 1)", 0.375), untrained, None, refs)
    assert "It **beats** the untrained network (miou 0.2500: the same architecture, freshly initialised with " \
           "the training seed 7, on 2 of the 10 images of val) **by 0.1250**." in text
    assert "it does not beat the published slot (wacv/arch0, miou 0.5000): it trails it by 0.1250" in text
    assert "it beats the random slot (random wacv genotype, miou 0.1250) by 0.2500" in text
    assert claim(text, "the untrained network", "miou") == (0.25, 0.125)
    # worse than the untrained network: said so
    worse = against_baselines("camvid", "miou", ("slot 1", 0.125), untrained, None, refs)
    assert "It **does not beat** the untrained network" in worse and "it trails it by 0.1250" in worse
    assert "**beats** the untrained" not in worse
    # an error such as RMSE: lower is better
    assert higher_is_better("miou") and not higher_is_better("rmse")
    depth = against_baselines("nyud", "rmse", ("slot 1", 0.5), untrained, None, [("random", "x", 0.4)])
    assert "(lower is better)" in depth and "It **beats** the untrained network (rmse 0.9000" in depth \
        and "**by 0.4000**" in depth and "it does not beat the random slot (x, rmse 0.4000): it trails it by 0.1000" \
        in depth
    assert margin("rmse", 0.5, 0.9) == pytest.approx(0.4) and margin("miou", 0.5, None) is None
    tie = against_baselines("voc", "miou", ("slot 1", 0.25 + 1e-6), untrained, None, [])
    assert "does not beat** the untrained network" in tie and "they tie" in tie
    assert claim(tie, "the untrained network", "miou") == (0.25, 0.0)
    assert claim_holds(0.0, 1e-6) and not claim_holds(0.0, 1e-3) and not claim_holds(0.1, -0.1)
    assert "no untrained-network score" in against_baselines("voc", "miou", ("slot 1", 0.25), None, None, [])


def test_baseline_images_option():
    import argparse

    from stages.report import baseline_images_arg

    assert baseline_images_arg("all") is None and baseline_images_arg("25") == 25
    for bad in ("0", "-3", "many", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            baseline_images_arg(bad)


# -- architecture drawings --------------------------------------------------------------------------

IN_CHANNELS = {"wacv": [24, 32], "cvpr": [24, 32, 96, 320]}


def genotypes_of(space_name: str, n: int = 6):
    space = get_space(space_name)
    rng = random.Random(0)
    return [*space.published.values(), *(space.random_genotype(rng) for _ in range(n))]


@pytest.mark.parametrize("space_name", ["wacv", "cvpr"])
def test_graphs_show_what_the_decoders_compute(space_name):
    space = get_space(space_name)
    for genotype in genotypes_of(space_name):
        graph = space.graph(genotype)
        assert len(graph.panels) == 2
        *_, decoder_panel = graph.panels
        decoder = space.build_decoder(genotype, IN_CHANNELS[space_name], 5, agg_size=8, repeats=1, aux_cell=False)
        # the output concatenates exactly what the decoder collects
        collected = sorted(int(e.source[1:]) for e in decoder_panel.edges if e.target == "out")
        assert collected == sorted(decoder.collect)
        # each block or layer reads its two inputs, labelled a and b
        for node in decoder_panel.nodes:
            inputs = sorted((e.label, e.source) for e in decoder_panel.edges if e.target == node.id)
            if node.kind == "merge":
                assert [label for label, _ in inputs] == ["a", "b"]
        if space_name == "cvpr":
            cell_panel = graph.panels[0]
            cell = decoder.cells[0].op_1
            assert sorted(int(e.source[1:]) for e in cell_panel.edges if e.target == "out") \
                == sorted(cell.loose_ends) == sorted(cell_loose_ends(genotype))
            unused = {n.id for n in decoder_panel.nodes if n.kind == "unused"}
            assert unused == {f"p{k}" for k in range(4) if k not in decoder.read_inputs}


@pytest.mark.parametrize("space_name", ["wacv", "cvpr"])
def test_drawings_are_svg_with_every_edge_pointing_right(space_name):
    space = get_space(space_name)
    for genotype in genotypes_of(space_name, 3):
        graph = space.graph(genotype)
        for panel in graph.panels:
            lay = layout(panel)
            for e, bends in zip(panel.edges, lay.bends):
                xs = [lay.boxes[e.source].x, *(x for x, _ in bends), lay.boxes[e.target].x]
                assert xs == sorted(xs) and xs[0] < xs[-1]
            boxes = list(lay.boxes.values())
            for i, a in enumerate(boxes):   # no two boxes overlap
                for b in boxes[i + 1:]:
                    assert abs(a.x - b.x) * 2 >= a.width + b.width - 1e-9 or \
                        abs(a.y - b.y) * 2 >= a.height + b.height - 1e-9
        root = ET.fromstring(draw_graph(graph, "title"))
        assert root.tag.endswith("svg")


# -- the pieces -----------------------------------------------------------------------------------------

def test_statuses_are_the_searchs():
    from nasseg.reporting.collect import SCORED, STATUSES
    from nasseg.search.failures import Status

    assert STATUSES == tuple(s.value for s in Status)
    assert SCORED == tuple(s.value for s in Status if s.scored)


def test_pareto_front():
    points = [(10.0, 0.5), (20.0, 0.6), (15.0, 0.4), (30.0, 0.6), (5.0, 0.1)]
    assert pareto_front(points) == [4, 0, 1]
    assert pareto_front([(1.0, 3.0), (2.0, 2.0), (3.0, 2.5)], higher_is_better=False) == [0, 1]


def test_metrics_and_params_diffs():
    old = {"miou": 0.5, "per_class_iou": {"road": 0.9, "sky": None}, "confusion_matrix": [[1, 2], [3, 4]],
           "models": [{"label": "cityscapes/1", "results": [{"size": "360x480", "backend": "eager",
                                                              "stats": {"median": 0.01}}]}], "task": "x"}
    flat = flatten_metrics(old)
    assert flat == {"miou": 0.5, "per_class_iou.road": 0.9,
                    "models[cityscapes/1].results[360x480/eager].stats.median": 0.01}
    new = json.loads(json.dumps(old))
    new["miou"] = 0.75
    new["per_class_iou"]["sky"] = 0.1
    changes = diff_metrics("m.json", old, new)
    assert changes == [Change("m.json", "miou", 0.5, 0.75), Change("m.json", "per_class_iou.sky", None, 0.1)]
    assert changes[0].delta == 0.25 and changes[1].delta is None
    params = diff_params("params.yaml", {"a": {"b": 1, "c": [1, 2]}}, {"a": {"b": 1.0, "c": [1, 3], "d": "x"}})
    assert [(c.key, c.old, c.new) for c in params] == [("a.c", [1, 2], [1, 3]), ("a.d", None, "x")]


def test_published_figures_are_the_specs():
    latency = {(f.arch, f.size): (f.value, f.std) for f in published_figures("latency", "wacv")}
    assert latency == {("arch0", (1024, 2048)): (52.25, 0.03), ("arch1", (1024, 2048)): (97.11, 0.24),
                       ("arch0", (360, 480)): (8.97, 0.10), ("arch1", (360, 480)): (11.51, 0.14)}
    assert all(f.device == "GTX 1080Ti" and "README" in f.source for f in published_figures("latency", "wacv"))
    assert published_figures("latency", "cvpr") == []
    assert {(f.arch, f.dataset, f.split, f.value) for f in published_figures("quality", "cvpr")
            if f.metric == "rmse"} == {
        ("arch0", "nyud", "test", 0.523), ("arch1", "nyud", "test", 0.526), ("arch2", "nyud", "test", 0.525)}


def test_rendering_escapes_text_and_embeds_images():
    from nasseg.reporting.figures import new_figure, png_bytes

    fig = new_figure(2, 1)
    fig.add_subplot().plot([0, 1])
    doc = Document("t <1>", "sub", (Section("s", "S & T", (
        Paragraph("a `code|x` and **bold** <b>"),
        Table(("a|b", "c"), (("<x>", "1"),), numeric=(False, True), row_styles=("published",)),
        DocImage("fig", png_bytes(fig), "a plot")),),))
    html = render_html(doc)
    assert "<code>code|x</code>" in html and "<strong>bold</strong>" in html and "&lt;b&gt;" in html
    assert "&lt;x&gt;" in html and 'class="published"' in html and 'class="num"' in html
    assert 'src="data:image/png;base64,' in html and "figures/" not in html
    md = render_markdown(doc)
    assert "| a\\|b | c |" in md and "|---|---:|" in md and "| *<x>* | *1* |" in md
    assert "![a plot](figures/fig.png)" in md
    with pytest.raises(ValueError, match="used twice"):
        render_html(Document("t", "", (Section("s", "S", (DocImage("x", b"", "a"), DocImage("x", b"", "b"))),)))
