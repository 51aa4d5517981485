"""Tests for nasseg.metrics against plain-numpy references and hand-worked numbers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nasseg.metrics import (
    MIN_DEPTH,
    ConfusionMatrix,
    DepthMeter,
    confusion_matrix,
    depth_metrics,
    segmentation_scores,
)

NAN_KEYS = ("miou", "mean_acc", "fwiou", "pixel_acc", "reward")


# ---------------------------------------------------------------- references
def ref_confusion(pred, target, num_classes, ignore_index=255):
    p = np.asarray(pred).astype(np.int64).ravel()
    t = np.asarray(target).astype(np.int64).ravel()
    keep = t != ignore_index
    return np.bincount(
        num_classes * t[keep] + p[keep], minlength=num_classes**2
    ).reshape(num_classes, num_classes)


def ref_depth(pred, target):
    pred = np.asarray(pred, np.float64).ravel()
    target = np.asarray(target, np.float64).ravel()
    out = {k: [] for k in ("sq", "sql", "ar", "sr", "l10", "d1", "d2", "d3")}
    for p, t in zip(pred, target):
        if not (math.isfinite(t) and t > 0):
            continue
        p = max(p, MIN_DEPTH)
        out["sq"].append((p - t) ** 2)
        out["sql"].append((math.log(p) - math.log(t)) ** 2)
        out["ar"].append(abs(p - t) / t)
        out["sr"].append((p - t) ** 2 / t)
        out["l10"].append(abs(math.log10(p) - math.log10(t)))
        r = max(p / t, t / p)
        out["d1"].append(r < 1.25)
        out["d2"].append(r < 1.25**2)
        out["d3"].append(r < 1.25**3)
    m = {k: float(np.mean(v)) for k, v in out.items()}
    return {
        "rmse": math.sqrt(m["sq"]), "rmse_log": math.sqrt(m["sql"]),
        "abs_rel": m["ar"], "sq_rel": m["sr"], "log10": m["l10"],
        "delta1": m["d1"], "delta2": m["d2"], "delta3": m["d3"],
    }


def random_labels(rng, shape, num_classes, dtype, ignore_frac=0.1, ignore=255):
    pred = rng.integers(0, num_classes, shape).astype(dtype)
    target = rng.integers(0, num_classes, shape)
    target[rng.random(shape) < ignore_frac] = ignore
    return pred, target.astype(dtype)


# ---------------------------------------------------------- confusion matrix
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.int32, np.int64,
                                   np.int8, np.uint32, np.uint64])
@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5), (2, 33, 17), (2, 1, 64, 48)])
def test_confusion_matches_bincount(dtype, shape):
    rng = np.random.default_rng(sum(shape) + np.dtype(dtype).itemsize)
    ignore = 100 if dtype == np.int8 else 255
    pred, target = random_labels(rng, shape, 11, dtype, ignore=ignore)
    cm = confusion_matrix(pred, target, 11, ignore_index=ignore)
    assert cm.dtype == np.int64 and cm.shape == (11, 11)
    np.testing.assert_array_equal(cm, ref_confusion(pred, target, 11, ignore))


def test_mixed_dtypes_and_noncontiguous():
    rng = np.random.default_rng(1)
    pred, target = random_labels(rng, (40, 60), 19, np.int64)
    target = target.astype(np.uint8)
    p_view, t_view = pred[::2, ::3], target.T.T[::2, ::3]  # strided views
    np.testing.assert_array_equal(
        confusion_matrix(p_view, t_view, 19), ref_confusion(p_view, t_view, 19)
    )
    t_fortran = np.asfortranarray(target)
    np.testing.assert_array_equal(
        confusion_matrix(pred, t_fortran, 19), ref_confusion(pred, target, 19)
    )


def test_torch_tensors():
    rng = np.random.default_rng(2)
    pred, target = random_labels(rng, (2, 30, 20), 5, np.int64)
    expected = ref_confusion(pred, target, 5)
    tp = torch.from_numpy(pred)
    tt = torch.from_numpy(target.astype(np.uint8))
    np.testing.assert_array_equal(confusion_matrix(tp, tt, 5), expected)
    # argmax over logits, the shape used in validation loops
    logits = torch.randn(2, 5, 30, 20, requires_grad=True)
    am = logits.argmax(1)
    np.testing.assert_array_equal(
        confusion_matrix(am, tt, 5), ref_confusion(am.numpy(), target, 5)
    )


def test_all_pixels_of_one_class_go_to_one_cell():
    # Long runs of one label pair exercise the partial-histogram merge.
    target = np.full(1001, 3, np.uint8)
    pred = np.full(1001, 1, np.uint8)
    cm = confusion_matrix(pred, target, 4)
    assert cm[3, 1] == 1001 and cm.sum() == 1001


def test_ignore_index_variants():
    target = np.array([0, 1, -1, 2, -1], np.int64)
    pred = np.array([0, 2, 99, 2, -5], np.int64)  # bad preds only at ignored pixels
    cm = confusion_matrix(pred, target, 3, ignore_index=-1)
    np.testing.assert_array_equal(cm, [[1, 0, 0], [0, 0, 1], [0, 0, 1]])
    # ignore_index=None: every target must be a class
    with pytest.raises(ValueError, match=r"\{255\} \(1 pixels\)"):
        confusion_matrix(np.zeros(3, np.uint8), np.array([0, 255, 1], np.uint8), 3, None)
    # an ignore_index inside the class range removes that class
    cm = confusion_matrix(np.array([0, 1, 1]), np.array([0, 1, 0]), 2, ignore_index=0)
    np.testing.assert_array_equal(cm, [[0, 0], [0, 1]])


def test_all_ignored_gives_zero_matrix_and_nan_scores():
    target = np.full((8, 8), 255, np.uint8)
    pred = np.zeros((8, 8), np.uint8)
    cm = confusion_matrix(pred, target, 19)
    assert not cm.any()
    s = segmentation_scores(cm)
    for k in NAN_KEYS:
        assert math.isnan(s[k]), k
    assert np.isnan(s["iou"]).all() and np.isnan(s["acc"]).all()


def test_empty_input():
    cm = confusion_matrix(np.zeros((0, 4), np.uint8), np.zeros((0, 4), np.uint8), 3)
    assert cm.shape == (3, 3) and not cm.any()


def test_bad_target_labels_message():
    target = np.zeros((10, 10), np.uint8)
    target[0, :3] = 20
    target[1, :2] = 33
    target[2, 0] = 255
    with pytest.raises(ValueError) as err:
        confusion_matrix(np.zeros_like(target), target, 19)
    msg = str(err.value)
    assert "target" in msg and "{20, 33}" in msg and "(5 pixels)" in msg
    assert "[0, 19)" in msg and "255" in msg


def test_negative_target_and_bad_pred_message():
    target = np.array([0, -2, 1, 1, 255], np.int32)
    pred = np.array([7, 0, 1, 9, 42], np.int32)  # 42 sits on an ignored pixel
    with pytest.raises(ValueError) as err:
        confusion_matrix(pred, target, 3)
    msg = str(err.value)
    assert "target" in msg and "{-2} (1 pixels)" in msg
    assert "pred" in msg and "{7, 9} (2 pixels)" in msg and "42" not in msg


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(5, 4\)"):
        confusion_matrix(np.zeros((4, 5), np.uint8), np.zeros((5, 4), np.uint8), 3)


def test_rejects_non_integer_labels():
    with pytest.raises(TypeError, match="float"):
        confusion_matrix(np.zeros(3, np.float32), np.zeros(3, np.uint8), 3)


def test_accumulator_and_out():
    rng = np.random.default_rng(3)
    acc = ConfusionMatrix(6)
    out = np.zeros((6, 6), np.int64)
    all_p, all_t = [], []
    for _ in range(4):
        p, t = random_labels(rng, (17, 13), 6, np.uint8)
        acc.update(p, t)
        assert confusion_matrix(p, t, 6, out=out) is out
        all_p.append(p)
        all_t.append(t)
    expected = ref_confusion(np.concatenate(all_p), np.concatenate(all_t), 6)
    np.testing.assert_array_equal(acc.matrix, expected)
    np.testing.assert_array_equal(out, expected)
    # a bad batch raises and leaves the running matrix untouched
    before = acc.matrix.copy()
    bad = np.full((4, 4), 3, np.uint8)
    bad[0, 0] = 6
    with pytest.raises(ValueError, match=r"\{6\}"):
        acc.update(np.zeros((4, 4), np.uint8), bad)
    np.testing.assert_array_equal(acc.matrix, before)
    assert acc.scores()["miou"] == segmentation_scores(expected)["miou"]
    acc.reset()
    assert not acc.matrix.any()
    with pytest.raises(ValueError, match="out must be"):
        confusion_matrix(p, t, 6, out=np.zeros((6, 6), np.int32))


# -------------------------------------------------------- segmentation scores
def test_hand_computed_3x3():
    cm = np.array([[5, 1, 0],
                   [2, 3, 1],
                   [0, 0, 4]])
    s = segmentation_scores(cm)
    # IoU = tp / (row + col - tp): 5/(6+7-5), 3/(6+4-3), 4/(4+5-4)
    np.testing.assert_allclose(s["iou"], [5 / 8, 3 / 7, 4 / 5])
    np.testing.assert_allclose(s["acc"], [5 / 6, 3 / 6, 4 / 4])
    assert s["miou"] == pytest.approx((5 / 8 + 3 / 7 + 4 / 5) / 3)
    assert s["mean_acc"] == pytest.approx((5 / 6 + 1 / 2 + 1) / 3)
    assert s["fwiou"] == pytest.approx((6 * 5 / 8 + 6 * 3 / 7 + 4 * 4 / 5) / 16)
    assert s["pixel_acc"] == pytest.approx(12 / 16)
    assert s["reward"] == pytest.approx((s["miou"] * s["mean_acc"] * s["fwiou"]) ** (1 / 3))


def test_omitted_class_still_counts_as_confusion():
    cm = np.array([[5, 1, 0],
                   [2, 3, 1],
                   [0, 0, 4]])
    s = segmentation_scores(cm, omit_classes=(0,))
    # class 1 IoU keeps the 2 pixels confused with the omitted class 0
    np.testing.assert_allclose(s["iou"], [5 / 8, 3 / 7, 4 / 5])
    assert s["miou"] == pytest.approx((3 / 7 + 4 / 5) / 2)
    assert s["mean_acc"] == pytest.approx((1 / 2 + 1) / 2)
    assert s["fwiou"] == pytest.approx((6 * 3 / 7 + 4 * 4 / 5) / 10)
    assert s["pixel_acc"] == pytest.approx(12 / 16)  # over all pixels


def test_absent_class_is_nan_and_skipped():
    cm = np.array([[4, 0, 1],
                   [0, 0, 0],
                   [1, 0, 2]])
    s = segmentation_scores(cm)
    assert math.isnan(s["iou"][1]) and math.isnan(s["acc"][1])
    assert s["miou"] == pytest.approx((4 / 6 + 2 / 4) / 2)
    assert s["mean_acc"] == pytest.approx((4 / 5 + 2 / 3) / 2)


def test_class_only_in_predictions():
    # class 2 never occurs in the ground truth but is predicted twice
    cm = np.array([[3, 1, 2],
                   [0, 4, 0],
                   [0, 0, 0]])
    s = segmentation_scores(cm)
    assert s["iou"][2] == 0.0
    assert math.isnan(s["acc"][2])
    assert s["miou"] == pytest.approx((3 / 6 + 4 / 5 + 0.0) / 3)  # included
    assert s["mean_acc"] == pytest.approx((3 / 6 + 4 / 4) / 2)  # excluded
    assert s["fwiou"] == pytest.approx((6 * 3 / 6 + 4 * 4 / 5) / 10)


def test_scores_on_random_matrix_match_loop_reference():
    rng = np.random.default_rng(4)
    cm = rng.integers(0, 50, (7, 7))
    cm[3, :] = 0  # class 3 only predicted
    cm[5, :] = 0
    cm[:, 5] = 0  # class 5 absent
    omit = (0,)
    s = segmentation_scores(cm, omit_classes=omit)
    ious, accs, weights = [], [], []
    for c in range(7):
        tp, gt, pr = cm[c, c], cm[c].sum(), cm[:, c].sum()
        if c in omit or gt + pr == 0:
            continue
        ious.append(tp / (gt + pr - tp))
        if gt > 0:
            accs.append(tp / gt)
            weights.append((gt, tp / (gt + pr - tp)))
    assert s["miou"] == pytest.approx(np.mean(ious))
    assert s["mean_acc"] == pytest.approx(np.mean(accs))
    assert s["fwiou"] == pytest.approx(sum(g * i for g, i in weights) / sum(g for g, _ in weights))
    assert s["pixel_acc"] == pytest.approx(np.trace(cm) / cm.sum())


def test_scores_validate_input():
    with pytest.raises(ValueError, match="square"):
        segmentation_scores(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="square"):
        segmentation_scores(np.zeros(4))
    with pytest.raises(ValueError, match="non-negative"):
        segmentation_scores(np.array([[1, -1], [0, 2]]))
    with pytest.raises(ValueError, match="outside"):
        segmentation_scores(np.eye(3), omit_classes=(3,))
    with pytest.raises(ValueError, match="outside"):
        segmentation_scores(np.eye(3), omit_classes=(-1,))


def test_omitting_every_class_gives_nan():
    s = segmentation_scores(np.eye(2) * 5, omit_classes=(0, 1))
    assert math.isnan(s["miou"]) and math.isnan(s["reward"])
    assert s["pixel_acc"] == 1.0


# --------------------------------------------------------------------- depth
def random_depth(rng, shape):
    target = rng.uniform(0.5, 10.0, shape)
    target[rng.random(shape) < 0.15] = 0.0  # missing depth
    target.flat[0] = np.nan  # non-finite ground truth is invalid too
    pred = target * rng.uniform(0.6, 1.6, shape) + rng.normal(0, 0.2, shape)
    pred[rng.random(shape) < 0.05] = -0.3  # non-positive predictions
    pred.flat[1] = 0.0
    return pred, target


def test_depth_matches_reference():
    rng = np.random.default_rng(5)
    pred, target = random_depth(rng, (2, 40, 30))
    got = depth_metrics(pred, target)
    want = ref_depth(pred, target)
    assert set(got) == set(want)
    for k in want:
        assert math.isfinite(got[k]), k
        assert got[k] == pytest.approx(want[k], rel=1e-10), k


def test_depth_torch_input():
    rng = np.random.default_rng(6)
    pred, target = random_depth(rng, (1, 1, 16, 16))
    got = depth_metrics(torch.from_numpy(pred).float(), torch.from_numpy(target).float())
    want = ref_depth(pred.astype(np.float32), target.astype(np.float32))
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-6), k


def test_depth_hand_example():
    pred = np.array([2.0, 1.0, 5.0, 0.0])
    target = np.array([1.0, 1.0, 4.0, 0.0])  # last pixel invalid
    d = depth_metrics(pred, target)
    assert d["rmse"] == pytest.approx(math.sqrt((1 + 0 + 1) / 3))
    assert d["abs_rel"] == pytest.approx((1 + 0 + 0.25) / 3)
    assert d["sq_rel"] == pytest.approx((1 + 0 + 0.25) / 3)
    assert d["delta1"] == pytest.approx(1 / 3)  # ratios 2, 1, 1.25: only 1 is < 1.25
    assert d["delta2"] == pytest.approx(2 / 3)  # 1.25 < 1.5625 <= 2
    assert d["delta3"] == pytest.approx(2 / 3)  # 2 >= 1.953125
    assert d["rmse_log"] == pytest.approx(math.sqrt((math.log(2) ** 2 + math.log(1.25) ** 2) / 3))
    assert d["log10"] == pytest.approx(math.log10(2.5) / 3)


def test_depth_clamps_non_positive_predictions():
    d = depth_metrics(np.array([-1.0, 0.0]), np.array([2.0, 2.0]))
    assert d["abs_rel"] == pytest.approx((2 - MIN_DEPTH) / 2)
    assert d["log10"] == pytest.approx(math.log10(2 / MIN_DEPTH))
    assert d["rmse_log"] == pytest.approx(math.log(2 / MIN_DEPTH))
    assert d["delta3"] == 0.0


def test_depth_meter_equals_concatenation():
    rng = np.random.default_rng(7)
    meter = DepthMeter()
    preds, targets = [], []
    for n in (5, 11, 3):
        p, t = random_depth(rng, (n, 9))
        meter.update(p, t)
        preds.append(p)
        targets.append(t)
    whole = depth_metrics(np.concatenate(preds), np.concatenate(targets))
    got = meter.compute()
    for k in whole:
        assert got[k] == pytest.approx(whole[k], rel=1e-12), k
    # and it is not the mean of per-batch RMSEs
    per_batch = np.mean([depth_metrics(p, t)["rmse"] for p, t in zip(preds, targets)])
    assert got["rmse"] != pytest.approx(per_batch, rel=1e-6)
    meter.reset()
    assert all(math.isnan(v) for v in meter.compute().values())


def test_depth_no_valid_pixels_is_nan():
    d = depth_metrics(np.ones((3, 3)), np.zeros((3, 3)))
    assert all(math.isnan(v) for v in d.values())


def test_depth_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        depth_metrics(np.ones((2, 3)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="shape"):
        DepthMeter().update(np.ones((1, 2, 3)), np.ones((2, 3)))
