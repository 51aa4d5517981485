"""Evaluation metrics: confusion matrix (Cython), segmentation and depth scores.

`confusion_matrix` counts label pairs in one single-threaded pass (see
`benchmarks/confusion_matrix.py`); `ConfusionMatrix` accumulates it over a
validation set; `segmentation_scores` turns it into IoU/accuracy and the
search reward; `depth_metrics`/`DepthMeter` score NYUD depth.
"""
from nasseg.metrics.depth import DEPTH_METRICS, MIN_DEPTH, DepthMeter, depth_metrics
from nasseg.metrics.segmentation import ConfusionMatrix, confusion_matrix, segmentation_scores

__all__ = [
    "DEPTH_METRICS",
    "MIN_DEPTH",
    "ConfusionMatrix",
    "DepthMeter",
    "confusion_matrix",
    "depth_metrics",
    "segmentation_scores",
]
