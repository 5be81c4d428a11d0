"""Per-case, per-organ metrics: Dice, NSD, HD95 and ASSD in physical units.

Conventions for empty masks (``empty_policy``):

* ``"score"`` (default; FLARE22's evaluation, MONAI ``compute_dice(ignore_empty=False)``): organ absent
  from both reference and prediction: Dice 1, NSD 1, HD95 0, ASSD 0. Absent from exactly one: Dice 0,
  NSD 0, HD95 and ASSD = ``worst_distance`` (default: the image's physical diagonal in mm). Every
  (case, organ) pair then has a finite value and counts in every mean.
* ``"ignore"`` (MONAI ``ignore_empty=True``): organ absent from the reference: every metric is NaN and the
  pair is left out of means (aggregation reports how many were left out), whether or not it was predicted.
  Absent from the prediction only: as in ``"score"``.
* ``"nnunet"`` (nnU-Net v2's ``compute_metrics_on_folder``, and v1's evaluator): organ absent from both
  reference and prediction: every metric is NaN, left out of the means. Absent from exactly one: as in
  ``"score"`` (Dice 0: a predicted organ the reference lacks is a false positive). Per organ the mean then
  equals nnU-Net's ``np.nanmean`` over cases (tests/test_metrics_nnunet.py compares with nnunetv2 2.8.1).

How the AMOS 2022 challenge itself scored absent organs is not documented in a source we could
verify; ``"score"`` is the common choice of its successors (FLARE22/23).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from scipy import ndimage

from amos_zoo.metrics.surface import _surface_distances_cropped
from amos_zoo.metrics.tolerances import TolerancePreset, get_tolerances

__all__ = ["METRICS", "EMPTY_POLICIES", "evaluate_case", "label_bounding_boxes", "dice_score"]

METRICS = ("dice", "nsd", "hd95", "assd")
EMPTY_POLICIES = ("score", "ignore", "nnunet")


def label_bounding_boxes(labels: np.ndarray, max_label: int) -> list[tuple[slice, ...] | None]:
    """Bounding box (slices) of every label 1..max_label in one pass; ``None`` where absent."""
    arr = labels if labels.dtype.kind in "iu" else labels.astype(np.int32)
    boxes = ndimage.find_objects(arr, max_label=max_label)
    return boxes + [None] * (max_label - len(boxes))


def _union(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    if a is None:
        return b
    if b is None:
        return a
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


def dice_score(gt: np.ndarray, pred: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty (MONAI ``ignore_empty=False``)."""
    denom = int(np.count_nonzero(gt)) + int(np.count_nonzero(pred))
    if denom == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(gt & pred)) / denom


def evaluate_case(
    gt: np.ndarray,
    pred: np.ndarray,
    spacing: Sequence[float],
    label_ids: Iterable[int],
    *,
    tolerance: str | float | dict | TolerancePreset = "uniform-2mm",
    metrics: Sequence[str] = METRICS,
    empty_policy: str = "score",
    worst_distance: float | None = None,
    hd_percentile: float = 95.0,
) -> dict[int, dict[str, float]]:
    """Metrics of one case for each label id.

    Args:
        gt: reference label volume (integers).
        pred: predicted label volume, same shape.
        spacing: voxel size in mm per axis.
        label_ids: labels to score (usually 1..N-1).
        tolerance: NSD tolerance preset name, a number in mm, or id -> mm.
        metrics: any of ``dice``, ``nsd``, ``hd95``, ``assd``.
        empty_policy: ``"score"``, ``"ignore"`` or ``"nnunet"`` (module docstring).
        worst_distance: distance given when exactly one mask is empty; default the image diagonal in mm.
        hd_percentile: percentile of the robust Hausdorff distance.

    Returns:
        label id -> {metric: value, "gt_voxels": n, "pred_voxels": n}.

    One function because every metric shares the per-organ crop, surfaces and distances computed once here.
    """
    if gt.shape != pred.shape:
        raise ValueError(f"shapes differ: reference {gt.shape} vs prediction {pred.shape}")
    if empty_policy not in EMPTY_POLICIES:
        raise ValueError(f"empty_policy must be one of {EMPTY_POLICIES}, got {empty_policy!r}")
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; available: {METRICS}")
    spacing = tuple(float(s) for s in spacing)
    tol = get_tolerances(tolerance)
    if worst_distance is None:
        worst_distance = float(math.sqrt(sum((n * s) ** 2 for n, s in zip(gt.shape, spacing))))
    label_ids = [int(i) for i in label_ids]
    max_label = max(label_ids) if label_ids else 0
    boxes_gt = label_bounding_boxes(gt, max_label)
    boxes_pred = label_bounding_boxes(pred, max_label)
    need_surface = any(m in metrics for m in ("nsd", "hd95", "assd"))

    out: dict[int, dict[str, float]] = {}
    for lid in label_ids:
        bg, bp = boxes_gt[lid - 1], boxes_pred[lid - 1]
        row: dict[str, float] = {}
        if bg is None and empty_policy == "ignore":
            row.update({m: float("nan") for m in metrics})
            row["gt_voxels"] = 0
            row["pred_voxels"] = 0 if bp is None else int(np.count_nonzero(pred[bp] == lid))
            out[lid] = row
            continue
        box = _union(bg, bp)
        if box is None and empty_policy == "nnunet":  # absent from both: nnU-Net's NaN, left out of means
            out[lid] = {**{m: float("nan") for m in metrics}, "gt_voxels": 0, "pred_voxels": 0}
            continue
        if box is None:  # absent from both
            row.update({"dice": 1.0, "nsd": 1.0, "hd95": 0.0, "assd": 0.0})
            out[lid] = {**{m: row[m] for m in metrics}, "gt_voxels": 0, "pred_voxels": 0}
            continue
        if lid in tol.z_restricted and bg is not None and bp is not None:
            # only the reference's axial slices (FLARE22: gt[:, :, z_lower:z_upper], the last slice excluded)
            z = slice(bg[2].start, bg[2].stop - 1)
            box = (box[0], box[1], slice(max(box[2].start, z.start), min(box[2].stop, z.stop)))
            if box[2].stop <= box[2].start:  # a one-slice reference leaves nothing to score (FLARE22 gives NaN)
                row.update({m: float("nan") for m in metrics})
                out[lid] = {**row, "gt_voxels": int(np.count_nonzero(gt[bg] == lid)), "pred_voxels": 0}
                continue
        g, p = gt[box] == lid, pred[box] == lid
        n_g, n_p = int(np.count_nonzero(g)), int(np.count_nonzero(p))
        row["gt_voxels"], row["pred_voxels"] = n_g, n_p
        dice = 2.0 * int(np.count_nonzero(g & p)) / (n_g + n_p) if n_g + n_p else 1.0
        if "dice" in metrics:
            row["dice"] = dice
        if need_surface:
            if n_g == 0 or n_p == 0:
                row.update({"nsd": 0.0, "hd95": worst_distance, "assd": worst_distance})
            elif tol.nsd_min_dice is not None and dice < tol.nsd_min_dice and "nsd" in metrics:
                row["nsd"] = 0.0  # FLARE22: NSD 0 below Dice 0.2
                if "hd95" in metrics or "assd" in metrics:
                    sd = _surface_distances_cropped(g, p, spacing, presorted="hd95" in metrics)
                    row["hd95"] = sd.robust_hausdorff(hd_percentile)
                    a, b = sd.average_surface_distance()
                    row["assd"] = (a + b) / 2.0
            else:
                near = (tol.for_label(lid),) if "nsd" in metrics else ()
                sd = _surface_distances_cropped(g, p, spacing, presorted="hd95" in metrics, exact_near=near)
                if "nsd" in metrics:
                    row["nsd"] = sd.surface_dice(tol.for_label(lid))
                if "hd95" in metrics:
                    row["hd95"] = sd.robust_hausdorff(hd_percentile)
                if "assd" in metrics:
                    a, b = sd.average_surface_distance()
                    row["assd"] = (a + b) / 2.0
        if tol.decimals is not None:
            row.update({m: round(row[m], tol.decimals) for m in ("dice", "nsd") if m in row})
        out[lid] = {**{m: row[m] for m in metrics}, "gt_voxels": n_g, "pred_voxels": n_p}
    return out
