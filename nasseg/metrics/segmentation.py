"""Confusion matrices and the segmentation scores derived from them.

The counting runs in the Cython kernel `nasseg.metrics._confusion` (one pass,
no GIL); this module converts inputs, turns the kernel's bad-label count into
a readable error and computes the scores the search uses as its reward.
"""
from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

import numpy as np

from nasseg.metrics._confusion import accumulate as _accumulate

__all__ = ["ConfusionMatrix", "confusion_matrix", "segmentation_scores"]

# dtypes the kernel is compiled for; others are converted to int64 first.
_KERNEL_DTYPES = frozenset(
    np.dtype(t) for t in (np.uint8, np.int16, np.uint16, np.int32, np.int64)
)
_MAX_LISTED = 20  # offending values quoted in an error message


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """Return `x` as a numpy array; torch tensors are moved to the CPU.

    torch is only consulted when it is already imported: if it is not, `x`
    cannot be a tensor, and importing it here would cost a second per process.
    """
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integer labels, got dtype {arr.dtype}")
    return arr


def _flat_labels(arr: np.ndarray) -> np.ndarray:
    """Contiguous 1-D view (a copy only when the layout or dtype requires it)."""
    if arr.dtype not in _KERNEL_DTYPES:
        if arr.dtype == np.uint64 and arr.size and arr.max() > np.iinfo(np.int64).max:
            # Would wrap to negative values; clip keeps them out of range.
            arr = np.minimum(arr, np.iinfo(np.int64).max)
        arr = arr.astype(np.int64)
    return np.ascontiguousarray(arr).reshape(-1)


def _describe(values: np.ndarray) -> str:
    uniq = np.unique(values)
    shown = ", ".join(str(int(v)) for v in uniq[:_MAX_LISTED])
    more = f", ... ({uniq.size - _MAX_LISTED} more)" if uniq.size > _MAX_LISTED else ""
    return "{" + shown + more + "}"


def _bad_label_error(
    pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int | None
) -> ValueError:
    """Build the error message; only runs after the kernel reported bad pixels.

    Works on the caller's arrays (not the int64 copies) so that the values
    quoted are the real ones, e.g. for uint64 labels beyond the int64 range.
    """
    t = target.reshape(-1)
    p = pred.reshape(-1)
    kept = np.ones(t.shape, bool) if ignore_index is None else t != ignore_index
    bad_t = kept & ((t < 0) | (t >= num_classes))
    bad_p = kept & ((p < 0) | (p >= num_classes))
    parts = []
    other = "" if ignore_index is None else f" other than ignore_index {ignore_index}"
    if bad_t.any():
        parts.append(
            f"target has labels outside [0, {num_classes}){other}: "
            f"{_describe(t[bad_t])} ({int(bad_t.sum())} pixels)"
        )
    if bad_p.any():
        parts.append(
            f"pred has labels outside [0, {num_classes}) at non-ignored pixels: "
            f"{_describe(p[bad_p])} ({int(bad_p.sum())} pixels)"
        )
    return ValueError("; ".join(parts))


def confusion_matrix(
    pred: Any,
    target: Any,
    num_classes: int,
    ignore_index: int | None = 255,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Count (ground truth, prediction) pairs: rows = target, columns = pred.

    `pred` and `target` are numpy arrays or torch tensors of any (equal) shape
    with an integer dtype; uint8, int16, uint16, int32 and int64 are read in
    place, other integer dtypes are converted to int64. Pixels whose target
    equals `ignore_index` (None: ignore nothing) are skipped, whatever their
    prediction. Any other target outside [0, num_classes), or a prediction
    outside it at a non-ignored pixel, raises ValueError listing the values
    and the number of pixels.

    With `out` (a C-contiguous int64 (num_classes, num_classes) array) the
    counts are added to it in place and `out` is returned; this is what
    validation loops use (see also `ConfusionMatrix`). On error `out` is left
    unchanged.
    """
    num_classes = int(num_classes)
    if num_classes <= 0:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    if ignore_index is not None:
        ignore_index = int(ignore_index)
        if not -(2**63) <= ignore_index < 2**63:
            raise ValueError(f"ignore_index {ignore_index} does not fit in int64")
    p = _to_numpy(pred, "pred")
    t = _to_numpy(target, "target")
    if p.shape != t.shape:
        raise ValueError(
            f"pred and target must have the same shape, got pred {tuple(p.shape)} "
            f"and target {tuple(t.shape)}"
        )
    if out is None:
        out = np.zeros((num_classes, num_classes), dtype=np.int64)
    elif (
        not isinstance(out, np.ndarray)
        or out.dtype != np.int64
        or out.shape != (num_classes, num_classes)
        or not out.flags.c_contiguous
        or not out.flags.writeable
    ):
        raise ValueError(
            f"out must be a writeable C-contiguous int64 array of shape "
            f"({num_classes}, {num_classes})"
        )
    if t.size == 0:
        return out
    p_flat = _flat_labels(p)
    t_flat = _flat_labels(t)
    n_bad, _ = _accumulate(p_flat, t_flat, num_classes, ignore_index, out.reshape(-1))
    if n_bad:
        raise _bad_label_error(p, t, num_classes, ignore_index)
    return out


class ConfusionMatrix:
    """Running confusion matrix for validation loops.

    >>> cm = ConfusionMatrix(19)
    >>> for pred, target in batches:          # doctest: +SKIP
    ...     cm.update(pred, target)
    >>> cm.scores()["miou"]                   # doctest: +SKIP
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255) -> None:
        if int(num_classes) <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, pred: Any, target: Any) -> ConfusionMatrix:
        """Add one batch; a batch with bad labels raises and adds nothing."""
        confusion_matrix(pred, target, self.num_classes, self.ignore_index, out=self.matrix)
        return self

    def reset(self) -> None:
        self.matrix[...] = 0

    def scores(self, omit_classes: Iterable[int] = ()) -> dict[str, Any]:
        return segmentation_scores(self.matrix, omit_classes)


def _check_matrix(cm: Any) -> np.ndarray:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(cm, torch.Tensor):
        cm = cm.detach().cpu().numpy()
    m = np.asarray(cm)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"confusion matrix must be square 2-D, got shape {m.shape}")
    if not (np.issubdtype(m.dtype, np.integer) or np.issubdtype(m.dtype, np.floating)):
        raise ValueError(f"confusion matrix must be numeric, got dtype {m.dtype}")
    m = m.astype(np.float64)
    if not np.all(np.isfinite(m)) or np.any(m < 0):
        raise ValueError("confusion matrix entries must be finite and non-negative")
    return m


def segmentation_scores(cm: Any, omit_classes: Iterable[int] = ()) -> dict[str, Any]:
    """Per-class and averaged scores from a confusion matrix (rows = truth).

    Returns a dict with
      iou       per-class IoU, NaN where the class is in neither truth nor pred;
      acc       per-class accuracy (recall), NaN where the class has no truth;
      miou      mean IoU over kept classes present in truth or predictions;
      mean_acc  mean accuracy over kept classes present in truth;
      fwiou     IoU weighted by truth pixel counts over kept classes in truth;
      pixel_acc trace / total over all counted pixels (omitted classes too);
      reward    (miou * mean_acc * fwiou) ** (1/3), the search's reward.

    IoU is computed on the full matrix, so pixels of an omitted class (e.g.
    VOC background, `omit_classes=(0,)`) still count as errors for the
    classes they were confused with; `omit_classes` only removes classes from
    the averages. An average with no class to average over (an all-zero
    matrix, e.g. every pixel ignored) is NaN, and so is the reward: a silent
    0 would look like a real, terrible score.

    Unlike the authors' original code, a class seen only in predictions gets
    accuracy NaN (not a 2.0/1.0 placeholder) and IoU 0, and presence is read
    from the counts rather than from `iou != 1.0`; such a class counts in
    `miou` (it is all false positives) but not in `mean_acc` or `fwiou`.
    """
    m = _check_matrix(cm)
    n = m.shape[0]
    keep = np.ones(n, dtype=bool)
    for c in omit_classes:
        if isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, np.integer)):
            raise ValueError(f"omit_classes must hold class indices, got {c!r}")
        if not 0 <= int(c) < n:
            raise ValueError(f"omitted class {c} outside [0, {n})")
        keep[int(c)] = False

    tp = np.diag(m)
    gt = m.sum(axis=1)
    pr = m.sum(axis=0)
    union = gt + pr - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gt > 0, tp / gt, np.nan)

    in_any = keep & (union > 0)
    in_gt = keep & (gt > 0)
    miou = float(iou[in_any].mean()) if in_any.any() else float("nan")
    mean_acc = float(acc[in_gt].mean()) if in_gt.any() else float("nan")
    fwiou = (
        float((iou[in_gt] * gt[in_gt]).sum() / gt[in_gt].sum()) if in_gt.any() else float("nan")
    )
    total = m.sum()
    pixel_acc = float(tp.sum() / total) if total > 0 else float("nan")
    reward = float(np.cbrt(miou * mean_acc * fwiou))
    return {
        "iou": iou,
        "acc": acc,
        "miou": miou,
        "mean_acc": mean_acc,
        "fwiou": fwiou,
        "pixel_acc": pixel_acc,
        "reward": reward,
    }
