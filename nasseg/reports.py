"""The evaluate stage's files: metrics JSON, per-class IoU CSV, confusion-matrix plot.

What: :func:`evaluation_report` turns :func:`nasseg.evaluation.evaluate`'s scores
into plain JSON data -- for segmentation mIoU, per-class IoU keyed by class
name, mean accuracy, frequency-weighted IoU, pixel accuracy and the confusion
matrix (rows: ground truth, columns: prediction); for depth the depth metrics --
and :func:`write_report` writes it with, for segmentation, a CSV of the
per-class IoU (``class,iou``, for ``dvc plots``) and a PNG of the row-normalised
confusion matrix, each file atomically.

Why plain data: JSON has no NaN, so a score that is undefined (a class in
neither truth nor prediction) is written as ``null``, never as a made-up 0.
The plot is drawn on an Agg canvas without pyplot, so it needs no display and
changes no global matplotlib state (a notebook keeps its own backend).
The authors' code printed the per-class IoU to the log and wrote no files.
"""
from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .io import atomic_write_bytes, atomic_write_json, atomic_write_text

__all__ = ["evaluation_report", "write_report", "plot_confusion", "iou_csv", "CONFUSION_PNG",
           "IOU_CSV"]

#: File names of the plots written beside the metrics file (or into the plots folder).
CONFUSION_PNG = "confusion_matrix.png"
IOU_CSV = "per_class_iou.csv"

_SEGMENTATION_KEYS = ("miou", "mean_acc", "fwiou", "pixel_acc")


def _number(x: Any) -> float | None:
    """A float for JSON: NaN and infinities become None (JSON has no NaN)."""
    x = float(x)
    return x if math.isfinite(x) else None


def evaluation_report(scores: Mapping[str, Any], *, task: str, class_names: Sequence[str],
                      **info: Any) -> dict[str, Any]:
    """Plain JSON data of ``scores`` (from :func:`nasseg.evaluation.evaluate`).

    ``info`` (checkpoint, data, split, flip, scales, ...) is stored first, as given.
    """
    report: dict[str, Any] = {"task": task, **info}
    if "num_images" in scores:
        report["num_images"] = int(scores["num_images"])
    if task == "segmentation":
        iou = np.asarray(scores["iou"], dtype=np.float64)
        acc = np.asarray(scores["acc"], dtype=np.float64)
        if len(class_names) != iou.size:
            raise ValueError(f"{len(class_names)} class names for {iou.size} classes")
        for key in _SEGMENTATION_KEYS:
            report[key] = _number(scores[key])
        report["per_class_iou"] = {name: _number(v) for name, v in zip(class_names, iou)}
        report["per_class_acc"] = {name: _number(v) for name, v in zip(class_names, acc)}
        report["class_names"] = list(class_names)
        report["confusion_matrix"] = [[int(v) for v in row] for row in scores["confusion_matrix"]]
    elif task == "depth":
        from .metrics.depth import DEPTH_METRICS
        for key in DEPTH_METRICS:
            report[key] = _number(scores[key])
    else:
        raise ValueError(f"unknown task {task!r}: segmentation or depth")
    return report


def iou_csv(report: Mapping[str, Any]) -> str:
    """``class,iou`` lines of a segmentation report (an undefined IoU is left empty)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["class", "iou"])
    for name, value in report["per_class_iou"].items():
        writer.writerow([name, "" if value is None else f"{value:.6f}"])
    return buf.getvalue()


def plot_confusion(matrix: Any, class_names: Sequence[str], *, title: str = "") -> bytes:
    """PNG bytes of the row-normalised confusion matrix (rows: truth, columns: prediction).

    A row without ground-truth pixels stays empty (white). Cells are annotated
    with their percentage when there are at most 25 classes.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    m = np.asarray(matrix, dtype=np.float64)
    n = m.shape[0]
    if m.shape != (n, n) or len(class_names) != n:
        raise ValueError(f"confusion matrix of shape {m.shape} for {len(class_names)} class names")
    totals = m.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(totals > 0, m / totals, np.nan)
    side = max(4.0, 0.38 * n + 2.5)
    fig = Figure(figsize=(side + 1.2, side), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(norm), cmap="Blues", vmin=0.0, vmax=1.0,
                   interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ax.set_xticks(range(n), labels=list(class_names), rotation=90, fontsize=8)
    ax.set_yticks(range(n), labels=list(class_names), fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if title:
        ax.set_title(title, fontsize=10)
    if n <= 25:
        for i in range(n):
            for j in range(n):
                if np.isfinite(norm[i, j]) and norm[i, j] >= 0.005:
                    ax.text(j, i, f"{100 * norm[i, j]:.0f}", ha="center", va="center", fontsize=6,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_report(report: Mapping[str, Any], out: str | os.PathLike,
                 plots_dir: str | os.PathLike | None = None) -> list[Path]:
    """Write ``report`` as JSON to ``out`` and, for segmentation, the per-class IoU CSV
    and the confusion-matrix PNG into ``plots_dir`` (default: ``out``'s folder).

    Returns the files written. Each is written atomically.
    """
    out = Path(out)
    plots = Path(plots_dir) if plots_dir is not None else out.parent
    written = []
    if report["task"] == "segmentation":
        title = f"{report.get('split', '')}: mIoU {report['miou']:.3f}" if report.get("miou") is not None \
            else str(report.get("split", ""))
        atomic_write_bytes(plots / CONFUSION_PNG,
                           plot_confusion(report["confusion_matrix"], report["class_names"], title=title))
        atomic_write_text(plots / IOU_CSV, iou_csv(report))
        written += [plots / CONFUSION_PNG, plots / IOU_CSV]
    # The metrics last: a pipeline that sees them finds the plots complete.
    atomic_write_json(out, dict(report))
    return [out, *written]
