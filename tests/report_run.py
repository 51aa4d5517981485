"""A real, tiny run of one experiment for the report's tests: every stage the report reads.

:func:`tiny_run` synthesizes and prepares small stand-ins of the experiment's datasets,
then runs the real stage commands in-process (``stages.<name>.main(argv)``, the code the
pipeline runs) in the pipeline's layout under one root: a search of three architectures
with the ``ci`` preset, the ranking (k = 1), full training (2 epochs) and evaluation of
every slot on every dataset. :func:`fake_latency` writes a latency.json in the benchmark
stage's format (``nasseg-latency/1``) for those checkpoints, with made-up but plausible
timings, one failed backend and int8 accuracy figures.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import yaml

from nasseg.data import prepare_dataset, synthesize_dataset
from stages import evaluate, rank, search, train
from stages.train import DATASETS

ROOT = Path(__file__).resolve().parents[1]
#: (images, height, width) of each stand-in: as small as the ci preset's crops allow.
SIZES = {"cityscapes": (16, 64, 128), "camvid": (16, 60, 80), "voc": (16, 60, 80), "nyud": (12, 48, 64)}
SEARCH_DATA = {"wacv": "cityscapes", "cvpr": "voc"}
EVAL_SPLIT = {"cityscapes": "val", "camvid": "test", "voc": "val", "nyud": "test"}
SLOTS = ("1", "published", "random")


def _ok(status: int, what: str) -> None:
    assert status == 0, f"{what} failed with exit status {status}"


def write_params(root: Path) -> Path:
    """The repository's params.yaml with the ci preset (k = 1, two-epoch trainings)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["preset"] = "ci"
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def tiny_run(root: Path, experiment: str) -> None:
    """Data, search, rank, train and evaluate of ``experiment`` under ``root`` (pipeline layout)."""
    params = root / "params.yaml"
    if not params.exists():
        write_params(root)
    p = ["--params", str(params)]
    search_ds = SEARCH_DATA[experiment]
    for ds in dict.fromkeys([search_ds, *DATASETS[experiment]]):
        n, h, w = SIZES[ds]
        if not (root / "data/prepared" / ds).exists():
            synthesize_dataset(ds, root / "data/raw" / ds, num_images=n, seed=0, height=h, width=w)
            prepare_dataset(ds, root / "data/raw" / ds, root / "data/prepared" / ds)
    reports, runs, data = root / "reports" / experiment, root / "runs", root / "data/prepared"
    _ok(search.main(["--experiment", experiment, "--data", str(data / search_ds),
                     "--out", str(runs / "search" / experiment), "--metrics", str(reports / "search"),
                     "--no-progress", "--set", "num_archs=3", *p]), "search")
    _ok(rank.main(["--experiment", experiment, "--history", str(runs / "search" / experiment / "history.jsonl"),
                   "--out", str(reports / "rank"), *p]), "rank")
    for ds in DATASETS[experiment]:
        for slot in SLOTS:
            run = runs / "train" / experiment / ds / slot
            _ok(train.main(["--experiment", experiment, "--dataset", ds, "--genotype",
                            str(reports / "rank/top" / f"{slot}.json"), "--data", str(data / ds), "--out", str(run),
                            "--metrics", str(reports / "train" / ds / slot), "--no-progress", *p]), "train")
            _ok(evaluate.main(["--experiment", experiment, "--checkpoint", str(run / "best.pt"), "--data",
                               str(data / ds), "--split", EVAL_SPLIT[ds], "--out",
                               str(reports / "evaluate" / ds / slot / "metrics.json"), "--no-progress", *p]),
                "evaluate")


#: Fake timings: a backend's time per run as a fraction of eager's.
_FACTORS = {"eager": 1.0, "channels_last": 0.8, "compile": 0.55, "onnxruntime": 0.32, "int8": 0.22}


def fake_latency(root: Path, experiment: str, seed: int = 0) -> Path:
    """reports/<experiment>/benchmark/latency.json for the run's checkpoints (made-up timings)."""
    rng = random.Random(seed)
    sizes = [[360, 480], [512, 1024], [1024, 2048]]
    models = []
    for ds in DATASETS[experiment]:
        for slot in SLOTS:
            metrics = json.loads((root / "reports" / experiment / "train" / ds / slot / "metrics.json").read_text())
            genotype = json.loads((root / "reports" / experiment / "rank/top" / f"{slot}.json").read_text())["genotype"]
            params = metrics["params"]
            evaluated = json.loads((root / "reports" / experiment / "evaluate" / ds / slot / "metrics.json").read_text())
            results = []
            flops = {}
            for h, w in sizes:
                size = f"{h}x{w}"
                pixels = h * w / (360 * 480)
                flops[size] = params * 40.0 * h * w / 16
                eager = 0.004 * pixels * (params / 1e5) ** 0.5 * (1 + 0.1 * rng.random())
                for backend, factor in _FACTORS.items():
                    failed = backend == "compile" and slot == "random" and ds == DATASETS[experiment][1]
                    median = eager * factor * (1 + 0.05 * rng.random())
                    results.append({
                        "size": size, "height": h, "width": w, "backend": backend,
                        "status": "failed" if failed else "ok",
                        "reason": "torch.compile: inductor raised a fake error for the test" if failed else None,
                        "max_abs_diff": None if failed else (0.0 if backend == "eager" else 2e-6),
                        "stats": None if failed else {"median": median, "mean": median * 1.01, "std": median * 0.02,
                                                      "p90": median * 1.03, "min": median * 0.98,
                                                      "runs": max(1, int(1.0 / median)), "repeats": 5},
                        "speedup_vs_eager": None if failed else eager / median})
            int8 = None
            if metrics["task"] == "segmentation":
                fp32 = metrics["best"]["miou"]
                int8 = {"split": EVAL_SPLIT[ds], "num_images": 4, "miou_fp32": fp32, "miou_int8": fp32 - 0.004,
                        "delta": -0.004}
            models.append({"label": f"{ds}/{slot}", "checkpoint": f"runs/train/{experiment}/{ds}/{slot}/best.pt",
                           "dataset": ds, "slot": slot, "genotype": json.dumps(genotype),
                           "num_classes": len(evaluated.get("class_names", ["depth"])), "params": params,
                           "params_without_aux": metrics["params_without_aux"], "flops": flops,
                           "results": results, "int8": int8})
    data = {"format": "nasseg-latency/1",
            "environment": {"cpu": "Test CPU", "vector": ["avx2"], "torch": "2.x", "threads": 2,
                            "python": "3.11", "device": "cpu"},
            "settings": {"sizes": sizes, "backends": list(_FACTORS), "warmup": 3, "min_seconds": 1.0,
                         "repeats": 5, "threads": 2},
            "models": models}
    path = root / "reports" / experiment / "benchmark" / "latency.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    return path
