"""The latency benchmark: every network, at every size, in every backend -- checked, then timed.

What: :func:`benchmark` takes networks (a trained model file and its card, or a
published genotype freshly initialised) and :class:`BenchmarkParams`, and for each
network

* makes it deployable (:func:`nasseg.export.deployable`: eval mode, BatchNorm
  folded, the auxiliary heads and unread ``adapt`` convolutions removed) and checks
  that folding kept its outputs (a difference beyond float rounding is a bug and
  stops the run);
* counts its parameters with and without the auxiliary heads, and its FLOPs per
  size (``torch.utils.flop_counter``: convolutions and matrix products, 2 per
  multiply-add, as the papers count them; interpolation and element-wise ops are
  not counted);
* per size (batch 1) and backend (:mod:`nasseg.backends`): prepares the backend,
  compares its output on a fixed random input with ``eager``'s -- a backend that
  disagrees is recorded as ``mismatch`` and not timed; one that cannot run here is
  recorded as ``unavailable`` or ``failed`` with the reason -- and times it with
  :func:`nasseg.latency.measure` (eval mode enforced, calibrated runs, repeats);
* for the first int8 backend (``int8``: ONNX Runtime, ``int8_openvino``: OpenVINO), measures
  its change in mIoU (RMSE for depth) against the float32 network in the same runtime on a
  split of the network's dataset, when one is given.

The result is plain data (:data:`FORMAT`), written by :func:`write_results` as JSON,
as a CSV with one row per network, size and backend, and as a metrics JSON keyed
``label -> size -> backend`` (what ``dvc metrics diff`` compares).

Why eager is the reference of every check: it is the network the papers' numbers
describe. The authors' WACV paper first timed their models in *training* mode;
their README corrects arch0 at 2048x1024 from 95.7 ms to 52.25 ms. Here a network
with any module in training mode is refused (:func:`nasseg.latency.check_eval_mode`).
"""
from __future__ import annotations

import csv
import io
import logging
import math
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .backends import INT8_BASELINE, LOW_PRECISION, BackendContext, BackendUnavailable, Predictor, backend, torch_threads
from .benchmark_config import BenchmarkParams
from .checkpoint import ModelCard
from .errors import InputError
from .export import deployable
from .io import atomic_write_json, atomic_write_text
from .latency import check_eval_mode, environment, measure
from .models.segmenter import count_parameters

__all__ = ["FORMAT", "Network", "BenchmarkError", "count_flops", "compare_outputs", "benchmark",
           "benchmark_network", "write_results", "csv_rows", "metrics_of", "CSV_FIELDS"]

log = logging.getLogger(__name__)

#: The ``format`` tag of the results JSON.
FORMAT = "nasseg-latency/1"
#: Folding may move outputs by float rounding only: this much of max|output| at most.
FOLD_RTOL = 1e-3


class BenchmarkError(InputError, RuntimeError):
    """A network that cannot be benchmarked (e.g. folding changed its outputs)."""


@dataclass(frozen=True)
class Network:
    """One network to benchmark: its label (``cityscapes/1``), card and loaded model;
    ``checkpoint`` the file it came from (None: a freshly initialised genotype)."""
    label: str
    card: ModelCard
    model: nn.Module
    checkpoint: str | None = None

    @property
    def slot(self) -> str:
        """The part of the label after the last ``/`` (the ranking slot in the pipeline)."""
        return self.label.rsplit("/", 1)[-1]


def count_flops(model: nn.Module, size: tuple[int, int], *, batch: int = 1) -> int:
    """FLOPs of one forward pass of ``model`` (eval mode) on a ``batch x 3 x H x W`` input,
    as ``torch.utils.flop_counter`` counts them (2 per multiply-add of convolutions and
    matrix products)."""
    check_eval_mode(model)
    x = torch.zeros(batch, 3, *size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


def compare_outputs(got: torch.Tensor, ref: torch.Tensor, *, low_precision: bool, rtol: float,
                    int8_tolerance: float) -> tuple[bool, float, str]:
    """Whether ``got`` matches the eager output ``ref``: (ok, max |difference|, the rule and numbers).

    Float32 backends: max |difference| <= ``rtol`` x max |ref| (+1e-6). Low-precision
    backends: relative RMS error ||got - ref|| / ||ref|| <= ``int8_tolerance``.
    """
    got, ref = got.detach().float().cpu(), ref.detach().float().cpu()
    if got.shape != ref.shape:
        return False, math.inf, f"output shape {tuple(got.shape)}, eager's {tuple(ref.shape)}"
    diff = float((got - ref).abs().max())
    if low_precision:
        rel = float((got - ref).norm() / ref.norm().clamp_min(1e-12))
        ok = rel <= int8_tolerance
        return ok, diff, f"relative RMS error {rel:.3g} ({'<=' if ok else 'above'} the tolerance {int8_tolerance:g})"
    tol = rtol * float(ref.abs().max()) + 1e-6
    ok = diff <= tol          # False for NaN too
    return ok, diff, f"max |difference| {diff:.3g} ({'<=' if ok else 'above'} the tolerance {tol:.3g})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def _safe_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label) or "model"


class _OnnxModule(nn.Module):
    """An ONNX Runtime predictor as an eval-mode module, for nasseg.evaluation.evaluate."""

    def __init__(self, predictor: Predictor) -> None:
        super().__init__()
        self.predictor = predictor
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictor(x)


def _quality(card: ModelCard, scores: dict[str, Any]) -> tuple[str, float]:
    return ("miou", float(scores["miou"])) if card.task == "segmentation" else ("rmse", float(scores["rmse"]))


def int8_accuracy(network: Network, model: nn.Module, ctx: BackendContext, data: Path, split: str,
                  limit: int | None, backend_name: str = "int8") -> dict[str, Any]:
    """mIoU (segmentation) or RMSE (depth) of the int8 backend ``backend_name`` and of the float32
    backend of the same runtime (:data:`nasseg.backends.INT8_BASELINE`) on ``split`` of ``data``
    (at most ``limit`` images), full resolution, and the change. ``model``: the network's
    deployable copy (the one the backends were timed with)."""
    from .data import PreparedDataset, eval_transform
    from .evaluation import evaluate

    dataset = PreparedDataset(data, split, eval_transform(), task=network.card.task)
    n = len(dataset) if limit is None else min(limit, len(dataset))

    def batches() -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(n):
            image, target = dataset[i]
            yield image[None], target[None]

    results: dict[str, Any] = {"split": split, "num_images": n, "backend": backend_name,
                               "fp32_backend": INT8_BASELINE[backend_name]}
    for name, key in ((INT8_BASELINE[backend_name], "fp32"), (backend_name, "int8")):
        module = _OnnxModule(_any_size(backend(name), model, ctx))
        scores = evaluate(module, batches(), task=network.card.task, num_classes=network.card.num_classes,
                          ignore_index=dataset.ignore_index)
        metric, value = _quality(network.card, scores)
        results[f"{metric}_{key}"] = value
    metric = "miou" if network.card.task == "segmentation" else "rmse"
    results["metric"] = metric
    results["delta"] = results[f"{metric}_int8"] - results[f"{metric}_fp32"]
    return results


def _any_size(prepare: Callable[[nn.Module, torch.Tensor, BackendContext], Predictor], model: nn.Module,
              ctx: BackendContext) -> Predictor:
    """A predictor for inputs of any size: backends that compile for one size (OpenVINO) are
    prepared again for each new size (whole images of a split differ in size)."""
    cache: dict[tuple[int, ...], Predictor] = {}

    def run(x: torch.Tensor) -> torch.Tensor:
        shape = tuple(x.shape)
        if shape not in cache:
            cache[shape] = prepare(model, x, ctx)
        return cache[shape](x)
    return run


def calibration_batches(data: Path, task: str, count: int, split: str = "train") -> list[torch.Tensor]:
    """The first ``count`` images of ``split`` (normalised, batch 1 each), for int8 calibration."""
    from .data import PreparedDataset, eval_transform

    dataset = PreparedDataset(data, split, eval_transform(), task=task)
    return [dataset[i][0][None] for i in range(min(count, len(dataset)))]


def _time_backend(name: str, model: nn.Module, x: torch.Tensor, ref: torch.Tensor, ctx: BackendContext,
                  params: BenchmarkParams) -> dict[str, Any]:
    """One backend at one size: prepare, check against ``ref``, time. Never raises for the
    backend's own failure: it is recorded with its status and reason."""
    record: dict[str, Any] = {"backend": name, "status": "ok", "reason": None, "max_abs_diff": None,
                              "check": None, "stats": None}
    try:
        predictor = backend(name)(model, x, ctx)
        with torch.inference_mode():
            out = predictor(x)
    except BackendUnavailable as exc:
        return {**record, "status": "unavailable", "reason": str(exc)}
    except Exception as exc:   # the backend's own failure (an exporter or compiler error)
        log.warning("%s failed: %s", name, _first_line(exc))
        return {**record, "status": "failed", "reason": _first_line(exc)}
    ok, diff, rule = compare_outputs(out, ref, low_precision=name in LOW_PRECISION, rtol=params.rtol,
                                     int8_tolerance=params.int8_tolerance)
    record.update(max_abs_diff=diff if math.isfinite(diff) else None, check=rule)
    if not ok:
        log.warning("%s disagrees with eager: %s; not timed", name, rule)
        return {**record, "status": "mismatch", "reason": f"disagrees with eager: {rule}"}
    with torch.inference_mode():
        stats = measure(lambda: predictor(x), device=params.device, warmup=params.warmup,
                        min_seconds=params.min_seconds, repeats=params.repeats)
    record["stats"] = stats.to_dict()
    return record


def benchmark_network(network: Network, params: BenchmarkParams, *, workdir: Path,
                      data: Path | None = None, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The results of one network (one entry of the results JSON's ``models``)."""
    card = network.card
    original = network.model.to(params.device)
    check_eval_mode(original)
    model, fold = deployable(original)
    check_eval_mode(model)
    calibration: list[torch.Tensor] = []
    calibration_split = params.calibration_split.get(card.dataset)
    if LOW_PRECISION & set(params.backends) and data is not None and calibration_split is not None:
        calibration = calibration_batches(data, card.task, params.calibration_images, calibration_split)
    ctx = BackendContext(threads=params.threads, workdir=workdir, calibration=calibration,
                         device=params.device, name=_safe_name(network.label))
    entry: dict[str, Any] = {
        "label": network.label, "checkpoint": network.checkpoint, "dataset": card.dataset or None,
        "slot": network.slot, "genotype": str(card.genotype), "space": card.space,
        "num_classes": card.num_classes, "task": card.task,
        "params": count_parameters(original), "params_without_aux": count_parameters(original, include_aux=False),
        "params_deployed": count_parameters(model), "batchnorm": fold.to_dict(), "flops": {}, "results": [],
        "int8": None,
    }
    gen = torch.Generator().manual_seed(0)
    for h, w in params.size_pairs():
        size = f"{h}x{w}"
        entry["flops"][size] = count_flops(model, (h, w))
        x = torch.randn(1, 3, h, w, generator=gen).to(params.device)
        with torch.inference_mode():
            ref = model(x)
            before = original(x)
        ok, diff, rule = compare_outputs(ref, before, low_precision=False, rtol=FOLD_RTOL, int8_tolerance=0)
        if not ok:
            raise BenchmarkError(f"{network.label}: folding BatchNorm changed the outputs at {size}: {rule}")
        eager_median = None
        for name in params.backends:
            if progress is not None:
                progress(f"{network.label} {size} {name}")
            record = {"size": size, "height": h, "width": w,
                      **_time_backend(name, model, x, ref, ctx, params)}
            if name == "eager" and record["status"] == "ok":
                eager_median = record["stats"]["median"]
            record["speedup_vs_eager"] = (eager_median / record["stats"]["median"]
                                          if eager_median and record["stats"] else None)
            entry["results"].append(record)
            if record["stats"]:
                log.info("%s %s %s: median %.2f ms", network.label, size, name, 1e3 * record["stats"]["median"])
    split = params.accuracy_split.get(card.dataset)
    ok = {r["backend"] for r in entry["results"] if r["status"] == "ok"}
    measured = [name for name in params.backends if name in INT8_BASELINE and name in ok]
    if measured and data is not None and split is not None and calibration:
        entry["int8"] = int8_accuracy(network, model, ctx, data, split, params.accuracy_images, measured[0])
    return entry


def benchmark(networks: Sequence[Network], params: BenchmarkParams, *,
              data: dict[str, Path] | None = None, workdir: Path | None = None,
              progress: bool = True) -> dict[str, Any]:
    """The results JSON (:data:`FORMAT`) of every network; ``data`` maps a dataset name to its
    prepared folder (int8 calibration and accuracy); ``workdir`` keeps the ONNX files
    (default: a temporary folder)."""
    from tqdm.auto import tqdm

    if not networks:
        raise ValueError("no networks to benchmark")
    labels = [n.label for n in networks]
    if len(set(labels)) != len(labels):
        raise ValueError(f"network labels must be unique, got {labels}")
    data = data or {}
    total = len(networks) * len(params.sizes) * len(params.backends)
    with tempfile.TemporaryDirectory(prefix="nasseg-bench-") as tmp, torch_threads(params.threads):
        root = Path(workdir) if workdir is not None else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=total, desc="benchmark", unit="run", disable=not progress)

        def step(text: str) -> None:
            bar.set_postfix_str(text)
            bar.update(1)

        models = [benchmark_network(n, params, workdir=root, data=data.get(n.card.dataset), progress=step)
                  for n in networks]
        bar.close()
    env = environment(params.device)
    env["threads"] = params.threads
    env["versions"] = _versions()
    return {"format": FORMAT, "environment": env, "settings": {**params.model_dump(mode="json"),
            "sizes": [list(s) for s in params.size_pairs()]}, "models": models}


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for package in ("torch", "torchvision", "onnx", "onnxruntime", "numpy"):
        try:
            out[package] = md.version(package)
        except md.PackageNotFoundError:
            pass
    return out


#: Columns of the CSV (one row per network, size and backend; times in milliseconds).
CSV_FIELDS = ("label", "dataset", "slot", "size", "backend", "status", "median_ms", "mean_ms", "std_ms",
              "p90_ms", "min_ms", "runs", "repeats", "speedup_vs_eager", "max_abs_diff", "params",
              "params_without_aux", "flops", "reason")


def csv_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for m in results["models"]:
        for r in m["results"]:
            s = r["stats"] or {}
            rows.append({
                "label": m["label"], "dataset": m["dataset"], "slot": m["slot"], "size": r["size"],
                "backend": r["backend"], "status": r["status"],
                **{f"{k}_ms": (1e3 * s[k] if k in s else None) for k in ("median", "mean", "std", "p90", "min")},
                "runs": s.get("runs"), "repeats": s.get("repeats"), "speedup_vs_eager": r["speedup_vs_eager"],
                "max_abs_diff": r["max_abs_diff"], "params": m["params"],
                "params_without_aux": m["params_without_aux"], "flops": m["flops"][r["size"]],
                "reason": r["reason"]})
    return rows


def metrics_of(results: dict[str, Any]) -> dict[str, Any]:
    """``label -> {params, size -> {backend: median ms}, int8 change}``: the numbers
    ``dvc metrics diff`` compares (failed backends are left out)."""
    out: dict[str, Any] = {}
    for m in results["models"]:
        entry: dict[str, Any] = {"params": m["params"], "params_without_aux": m["params_without_aux"]}
        for r in m["results"]:
            if r["stats"]:
                entry.setdefault(r["size"], {})[f"{r['backend']}_ms"] = round(1e3 * r["stats"]["median"], 4)
        if m["int8"]:
            entry[f"int8_{m['int8']['metric']}_delta"] = m["int8"]["delta"]
        out[m["label"]] = entry
    return out


def write_results(results: dict[str, Any], out: Path, *, metrics: Path | None = None) -> list[Path]:
    """Write ``out`` (the JSON), the CSV beside it (same name, ``.csv``) and, if given,
    the metrics JSON; each atomically. Returns the paths written."""
    out = Path(out)
    atomic_write_json(out, results)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in csv_rows(results):
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    table = out.with_suffix(".csv")
    atomic_write_text(table, buf.getvalue())
    written = [out, table]
    if metrics is not None:
        atomic_write_json(metrics, metrics_of(results))
        written.append(Path(metrics))
    return written
