"""Table-2 metrics on small arrays whose values were worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dicom_node.training.metrics import average_precision, confusion, format_table, overall, scores, series_metrics


def test_counts_and_scores_by_hand() -> None:
    ref = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], dtype=bool)
    pred = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0], dtype=bool)
    c = confusion(pred, ref)
    assert (c.tp, c.fp, c.fn, c.tn) == (3, 1, 1, 5)
    s = scores(c)
    assert s["dice"] == pytest.approx(6 / 8)  # 2*3 / (2*3 + 1 + 1)
    assert s["iou"] == pytest.approx(3 / 5)
    assert s["precision"] == pytest.approx(3 / 4)
    assert s["recall"] == pytest.approx(3 / 4)


def test_empty_masks_and_shape_check() -> None:
    empty = np.zeros((2, 3, 3), dtype=bool)
    assert scores(confusion(empty, empty)) == {"dice": 1.0, "iou": 1.0, "precision": 1.0, "recall": 1.0}
    some = empty.copy()
    some[0, 0, 0] = True
    assert scores(confusion(empty, some))["dice"] == 0.0
    assert scores(confusion(empty, some))["precision"] == 0.0
    with pytest.raises(ValueError):
        confusion(empty, np.zeros((2, 3, 4), dtype=bool))


def test_average_precision_by_hand() -> None:
    # Ranked by score: P, N, P, N -> precision at each recall step: 1/1, 2/3 -> AP = 0.5*1 + 0.5*2/3
    scores_ = np.array([0.9, 0.8, 0.7, 0.1])
    ref = np.array([1, 0, 1, 0], dtype=bool)
    assert average_precision(scores_, ref) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # a perfect ranking has AP 1; hard scores use their single threshold
    assert average_precision(np.array([0.9, 0.8, 0.2, 0.1]), np.array([1, 1, 0, 0], dtype=bool)) == pytest.approx(1.0)
    assert average_precision(np.array([1, 1, 1, 0]), ref) == pytest.approx(2 / 3)  # recall 1 at precision 2/3
    # tied scores form one threshold
    assert average_precision(np.array([0.5, 0.5, 0.5, 0.5]), ref) == pytest.approx(0.5)
    assert math.isnan(average_precision(np.array([0.3, 0.2]), np.zeros(2, dtype=bool)))


def test_series_and_overall_pool_pixels() -> None:
    ref_a = np.array([1, 1, 0, 0], dtype=bool)
    ref_b = np.array([1, 1, 1, 1], dtype=bool)
    a = series_metrics(np.array([1, 0, 0, 0], dtype=bool), ref_a)  # tp1 fn1: dice 2/3
    b = series_metrics(ref_b.copy(), ref_b)  # perfect
    assert a["dice"] == pytest.approx(2 / 3) and b["dice"] == 1.0
    total = overall({"a": a, "b": b})
    # pooled: tp 5, fp 0, fn 1 -> dice 10/11, iou 5/6, recall 5/6, precision 1
    assert total["dice"] == pytest.approx(10 / 11)
    assert total["iou"] == pytest.approx(5 / 6)
    assert total["recall"] == pytest.approx(5 / 6)
    assert total["precision"] == 1.0
    assert total["mean_dice"] == pytest.approx((2 / 3 + 1) / 2)
    assert total["series"] == 2
    table = format_table({"a": a, "b": b}, total)
    assert "overall" in table and "0.9091" in table
