"""The ``nnunet`` empty-organ rule against nnU-Net v2's own evaluator (``compute_metrics_on_folder``, nnunetv2 2.8.1).

Cases cover every empty-mask combination: organ in both, only in the reference, only in the prediction, in neither,
and an organ absent from every case and every prediction.
"""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest

from amos_zoo.data.labels import LabelMap
from amos_zoo.metrics.evaluate import evaluate_folders

pytest.importorskip("nnunetv2")

LABELS = {0: "background", 1: "a", 2: "b", 3: "c", 4: "never"}


def _cases(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    shape = (20, 18, 12)
    cases = {}
    for i in range(5):
        gt = np.zeros(shape, np.uint8)
        pred = np.zeros(shape, np.uint8)
        # organ 1: in both (overlap drawn at random)
        x = int(rng.integers(2, 8))
        gt[x : x + 6, 2:8, 2:6] = 1
        pred[x + int(rng.integers(-2, 3)) : x + 6, 2:9, 2:6] = 1
        if i % 2 == 0:  # organ 2: reference only (missed) on even cases, else in neither
            gt[12:16, 10:14, 6:10] = 2
        if i == 1:  # organ 3: prediction only (false positive) on case 1, in both on case 2, else in neither
            pred[14:18, 3:6, 8:11] = 3
        if i == 2:
            gt[13:18, 3:7, 7:11] = 3
            pred[14:18, 3:6, 8:11] = 3
        cases[f"amos_{i:04d}"] = (gt, pred)
    return cases


def test_nnunet_rule_equals_nnunetv2_compute_metrics_on_folder(tmp_path):
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
    from nnunetv2.imageio.nibabel_reader_writer import NibabelIO

    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir()
    pred.mkdir()
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    for cid, (g, p) in _cases(np.random.default_rng(0)).items():
        nib.save(nib.Nifti1Image(g, affine), ref / f"{cid}.nii.gz")
        nib.save(nib.Nifti1Image(p, affine), pred / f"{cid}.nii.gz")

    theirs = compute_metrics_on_folder(str(ref), str(pred), None, NibabelIO(), ".nii.gz", [1, 2, 3, 4], num_processes=1)
    ours = evaluate_folders(
        pred, ref, None, labels=LabelMap(LABELS), metrics=("dice",), empty_policy="nnunet", workers=1, progress=False
    )
    per_case_theirs = {r["reference_file"].split("/")[-1][:-7]: r["metrics"] for r in theirs["metric_per_case"]}

    names = {1: "a", 2: "b", 3: "c", 4: "never"}
    for lid, name in names.items():
        mean_theirs = theirs["mean"][lid]["Dice"]
        mean_ours = ours["all"]["per_organ"][name]["dice"]
        if math.isnan(mean_theirs):
            assert mean_ours is None  # no scored case: nnU-Net's nanmean is NaN, ours None
        else:
            assert mean_ours == pytest.approx(mean_theirs, abs=1e-12)
        scored = sum(not math.isnan(m[lid]["Dice"]) for m in per_case_theirs.values())
        assert ours["all"]["per_organ"][name]["dice_n"] == scored
    # the pairs left out are exactly nnU-Net's NaNs: organ 2 on odd cases, organ 3 outside cases 1-2, organ 4 always
    nan_pairs = sum(math.isnan(m[lid]["Dice"]) for m in per_case_theirs.values() for lid in names)
    assert ours["all"]["excluded"] == nan_pairs == 2 + 3 + 5
    # a prediction the reference lacks is a false positive (Dice 0), not left out
    assert per_case_theirs["amos_0001"][3]["Dice"] == 0.0
    # nnU-Net's foreground mean is NaN when an organ is never scored; over the scored organs it equals ours
    assert math.isnan(theirs["foreground_mean"]["Dice"])
    scored_means = [theirs["mean"][lid]["Dice"] for lid in (1, 2, 3)]
    assert ours["all"]["overall"]["dice"] == pytest.approx(float(np.mean(scored_means)), abs=1e-12)
    # per-case means leave the organs absent from both out
    for cid, m in per_case_theirs.items():
        expected = np.nanmean([m[lid]["Dice"] for lid in names])
        assert ours["per_case"][cid]["dice"] == pytest.approx(float(expected), abs=1e-12)


def test_score_rule_counts_organs_absent_from_both(tmp_path):
    """The default ``score`` rule differs from nnU-Net's exactly where an organ is absent from both (Dice 1)."""
    from amos_zoo.metrics.case import evaluate_case

    gt = np.zeros((6, 6, 6), np.uint8)
    pred = np.zeros_like(gt)
    gt[1:3, 1:3, 1:3] = 1
    pred[1:3, 1:3, 1:3] = 1
    pred[4:6, 4:6, 4:6] = 3
    score = evaluate_case(gt, pred, (1, 1, 1), [1, 2, 3], metrics=("dice", "nsd"), empty_policy="score")
    nnunet = evaluate_case(gt, pred, (1, 1, 1), [1, 2, 3], metrics=("dice", "nsd"), empty_policy="nnunet")
    assert score[2]["dice"] == 1.0 and math.isnan(nnunet[2]["dice"]) and math.isnan(nnunet[2]["nsd"])
    assert score[3]["dice"] == nnunet[3]["dice"] == 0.0
    assert score[1]["dice"] == nnunet[1]["dice"] == 1.0
