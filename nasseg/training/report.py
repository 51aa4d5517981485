"""What a training run reports: validation scores, the per-epoch TSV, metrics.json.

* :func:`scalar_scores` keeps the scalar scores of :func:`nasseg.evaluation.evaluate`
  (segmentation: ``miou`` -- without ``omit_classes`` -- ``mean_acc``, ``fwiou``,
  ``pixel_acc`` and, when classes are omitted, ``miou_all`` over every class; depth:
  ``rmse``, ``rmse_log``, ``abs_rel``, ``sq_rel``, ``log10``, ``delta1..3``).
* :func:`is_better`: the validation score that selects the best model -- mIoU
  (higher is better) or, for depth, RMSE (lower is better).
* :func:`metrics_tsv`: one row per epoch (epoch, step, train_loss, lr_enc, lr_dec,
  the validation scores -- empty in epochs without validation -- and seconds), a
  tab-separated file for ``dvc plots`` (no DVCLive).
* :func:`summary`: metrics.json -- best and last validation, epochs, steps,
  parameters with and without the auxiliary heads, training time. NaN is written as
  null (JSON has no NaN).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..metrics import segmentation_scores

__all__ = ["SEGMENTATION_COLUMNS", "DEPTH_COLUMNS", "score_name", "scalar_scores", "is_better",
           "metrics_tsv", "summary", "json_safe"]

SEGMENTATION_COLUMNS = ("miou", "mean_acc", "fwiou", "pixel_acc")
DEPTH_COLUMNS = ("rmse", "abs_rel", "log10", "delta1")


def score_name(task: str) -> str:
    """The validation score that picks the best model."""
    return "rmse" if task == "depth" else "miou"


def scalar_scores(task: str, scores: dict[str, Any], omit_classes: tuple[int, ...] = ()) -> dict[str, float]:
    """The scalar scores of an :func:`~nasseg.evaluation.evaluate` result."""
    if task == "depth":
        return {k: float(v) for k, v in scores.items()}
    out = {k: float(scores[k]) for k in SEGMENTATION_COLUMNS}
    if omit_classes:
        out["miou_all"] = float(segmentation_scores(np.asarray(scores["confusion_matrix"]))["miou"])
    return out


def is_better(task: str, new: float, old: float | None) -> bool:
    """Whether validation score ``new`` beats ``old`` (None: nothing yet; NaN never wins)."""
    if old is None or (math.isnan(old) and not math.isnan(new)):
        return True
    if math.isnan(new):
        return False
    return new < old if task == "depth" else new > old


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def metrics_tsv(rows: list[dict[str, Any]], task: str) -> str:
    """The per-epoch rows as tab-separated text with a header line."""
    columns = ["epoch", "step", "train_loss", "lr_enc", "lr_dec",
               *(f"val_{c}" for c in (DEPTH_COLUMNS if task == "depth" else SEGMENTATION_COLUMNS)), "seconds"]
    lines = ["\t".join(columns)]
    for row in rows:
        val = row.get("val") or {}
        values = {**row, **{f"val_{k}": v for k, v in val.items()}}
        lines.append("\t".join(_cell(values.get(c)) for c in columns))
    return "\n".join(lines) + "\n"


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN and infinities replaced by None (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def summary(*, task: str, rows: list[dict[str, Any]], best: dict[str, Any], steps: int,
            params: int, params_without_aux: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The contents of metrics.json."""
    validated = [r for r in rows if r.get("val")]
    last = validated[-1] if validated else None
    return json_safe({
        "task": task,
        "score": score_name(task),
        "best": {"epoch": best["epoch"], **best["scores"]},
        "last": {"epoch": last["epoch"], **last["val"]} if last else None,
        "epochs": len(rows),
        "steps": steps,
        "final_train_loss": rows[-1]["train_loss"] if rows else None,
        "params": params,
        "params_without_aux": params_without_aux,
        "train_seconds": sum(r["seconds"] for r in rows),
        **(extra or {}),
    })
