"""Aggregation under the ``ignore`` empty-mask policy: an organ absent from a reference leaves its means (it is
not a zero and not a one), is counted under ``excluded``, and an organ absent everywhere has mean None and
leaves the overall mean."""

from __future__ import annotations

import numpy as np
import pytest

from amos_zoo.metrics.aggregate import CaseResult, MetricAccumulator
from amos_zoo.metrics.case import evaluate_case


def _cases():
    a_gt = np.zeros((10, 10, 4), np.uint8)
    a_gt[0:4, 0:4] = 1  # 64 voxels
    a_gt[6:10, 6:10] = 2  # 64 voxels
    a_pred = a_gt.copy()
    a_pred[6:10, 6:8] = 0  # organ 2: 32 of 64 found -> Dice 2*32/(64+32) = 2/3
    b_gt = np.zeros((10, 10, 4), np.uint8)
    b_gt[0:4, 0:4] = 1
    b_pred = np.zeros_like(b_gt)
    b_pred[0:4, 0:2] = 1  # organ 1: Dice 2*32/(64+32) = 2/3
    b_pred[8:10, 8:10] = 2  # organ 2 predicted where the reference has none: ignored, not scored 0
    return {"a": (a_gt, a_pred), "b": (b_gt, b_pred)}


def test_ignore_policy_leaves_absent_organs_out_of_the_means():
    acc = MetricAccumulator({1: "spleen", 2: "kidney", 3: "liver"}, ["dice"])
    for case_id, (gt, pred) in _cases().items():
        values = evaluate_case(gt, pred, (1.0, 1.0, 1.0), [1, 2, 3], metrics=("dice",), empty_policy="ignore")
        acc.add(CaseResult(case_id, "CT", values))
    s = acc.summary()["all"]
    assert s["per_organ"]["spleen"]["dice"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert s["per_organ"]["kidney"]["dice"] == pytest.approx(2 / 3) and s["per_organ"]["kidney"]["dice_n"] == 1
    assert s["per_organ"]["liver"]["dice"] is None and s["per_organ"]["liver"]["dice_n"] == 0
    assert s["excluded"] == 3  # kidney in b, liver in a and b
    assert s["overall"]["dice"] == pytest.approx(((1.0 + 2 / 3) / 2 + 2 / 3) / 2)  # liver leaves the mean
    assert s["pooled"]["dice"] == pytest.approx((1.0 + 2 / 3 + 2 / 3) / 3)


def test_score_policy_counts_a_false_positive_organ_as_zero():
    """The contrast: under the default policy the same kidney prediction on case b scores 0 and stays in."""
    acc = MetricAccumulator({1: "spleen", 2: "kidney"}, ["dice"])
    for case_id, (gt, pred) in _cases().items():
        acc.add(CaseResult(case_id, "CT", evaluate_case(gt, pred, (1.0, 1.0, 1.0), [1, 2], metrics=("dice",))))
    s = acc.summary()["all"]
    assert s["per_organ"]["kidney"]["dice"] == pytest.approx((2 / 3 + 0.0) / 2) and s["excluded"] == 0
