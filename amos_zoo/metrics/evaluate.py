"""Folder evaluation: score prediction NIfTIs against reference labels, in parallel, into reports.

``evaluate_folders`` pairs files by name, checks geometry (shape and affine must match: a mismatch is
an error naming both files), scores each case with :func:`evaluate_case`, and writes a per-case CSV,
a summary JSON (per organ, per modality, overall), a markdown table and a box plot. A missing
prediction is scored as an empty prediction (Dice 0 and NSD 0 for every organ present in the
reference) and listed under ``missing_predictions`` in the summary.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from amos_zoo.data.index import case_id_from_path, modality_for
from amos_zoo.data.labels import AMOS_LABELS, LabelMap
from amos_zoo.metrics.aggregate import CaseResult, MetricAccumulator
from amos_zoo.metrics.case import METRICS, evaluate_case
from amos_zoo.metrics.regions import Region, evaluate_regions, regions_label_map
from amos_zoo.metrics.tolerances import get_tolerances
from amos_zoo.parallel import map_with_progress

__all__ = ["CaseResult", "evaluate_pair", "evaluate_folders", "summarise", "GeometryMismatchError", "markdown_table"]

_NII = (".nii.gz", ".nii")


class GeometryMismatchError(ValueError):
    """Prediction and reference do not share a voxel grid."""


def evaluate_pair(
    pred_path: str | Path | None,
    gt_path: str | Path,
    label_ids: Sequence[int],
    tolerance="uniform-2mm",
    metrics: Sequence[str] = METRICS,
    empty_policy: str = "score",
    modality: str = "CT",
    affine_atol: float = 1e-4,
    regions: Sequence[Region] | None = None,
) -> CaseResult:
    """Score one prediction file against its reference (``pred_path=None``: missing, scored as empty); with
    ``regions``, each region (keyed 1..R) instead of each label id."""
    gt_img = nib.load(str(gt_path))
    gt = np.asanyarray(gt_img.dataobj)
    if gt.ndim != 3:
        raise ValueError(f"{gt_path}: reference labels must be 3D, got shape {gt.shape}")
    gt = _as_labels(gt, gt_path)
    spacing = tuple(float(z) for z in gt_img.header.get_zooms()[:3])
    if pred_path is None:
        pred = np.zeros_like(gt)
    else:
        pred_img = nib.load(str(pred_path))
        if pred_img.shape != gt_img.shape:
            raise GeometryMismatchError(
                f"{pred_path} has shape {pred_img.shape} but its reference {gt_path} has {gt_img.shape}; "
                "predictions must be on the reference's voxel grid (resample them back to the input geometry)"
            )
        if not np.allclose(pred_img.affine, gt_img.affine, atol=affine_atol):
            raise GeometryMismatchError(
                f"{pred_path} and its reference {gt_path} have different affines:\n{pred_img.affine}\nvs\n"
                f"{gt_img.affine}\npredictions must be written with the input scan's affine"
            )
        pred = _as_labels(np.asanyarray(pred_img.dataobj), pred_path)
    if regions:
        values = evaluate_regions(gt, pred, spacing, regions, tolerance, metrics=metrics, empty_policy=empty_policy)
    else:
        values = evaluate_case(
            gt, pred, spacing, label_ids, tolerance=tolerance, metrics=metrics, empty_policy=empty_policy
        )
    return CaseResult(case_id_from_path(gt_path), modality, values, missing_prediction=pred_path is None)


def _as_labels(arr: np.ndarray, path) -> np.ndarray:
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"{path}: label values must be whole numbers (found non-integer or NaN values)")
    if arr.min() < 0:
        raise ValueError(f"{path}: label values must be >= 0 (found {arr.min()})")
    return arr.astype(np.int32 if arr.max() > 255 else np.uint8)


def _job(args):
    return evaluate_pair(*args[:-1], **args[-1])


def evaluate_folders(
    pred_dir: str | Path,
    gt_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    labels: LabelMap = AMOS_LABELS,
    tolerance="uniform-2mm",
    metrics: Sequence[str] = METRICS,
    empty_policy: str = "score",
    modality_override: dict[str, str] | None = None,
    workers: int | None = None,
    progress: bool = True,
    case_ids: Sequence[str] | None = None,
    regions: Sequence[Region] | None = None,
) -> dict:
    """Evaluate every reference label in ``gt_dir`` against the same-named file in ``pred_dir``.

    Args:
        pred_dir: folder of predicted label NIfTIs (``<case>.nii.gz``).
        gt_dir: folder of reference label NIfTIs.
        out_dir: where to write ``per_case.csv``, ``summary.json``, ``summary.md`` and ``boxplot.png``.
        labels: label map (AMOS by default).
        tolerance: NSD tolerance preset, mm, or id -> mm.
        metrics: metrics to compute.
        empty_policy: ``score``, ``ignore`` or ``nnunet`` (see :mod:`amos_zoo.metrics.case`).
        modality_override: case id -> CT/MRI instead of the AMOS id rule.
        workers: processes (default: all cores); 1 evaluates in this process.
        progress: show a progress bar.
        case_ids: evaluate only these cases.
        regions: score these label sets instead of each label (:mod:`amos_zoo.metrics.regions`; BraTS' regions).

    Returns:
        The summary dictionary (also written to ``summary.json``).
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    if not gt_dir.is_dir():
        raise FileNotFoundError(f"{gt_dir}: reference folder not found")
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"{pred_dir}: prediction folder not found")
    gts = sorted(p for p in gt_dir.iterdir() if p.name.endswith(_NII) and not p.name.startswith("."))
    if case_ids is not None:
        wanted = set(case_ids)
        gts = [g for g in gts if case_id_from_path(g) in wanted]
    if not gts:
        raise FileNotFoundError(f"{gt_dir}: no reference NIfTI files (*.nii.gz) to evaluate")
    preds = {
        case_id_from_path(p): p for p in pred_dir.iterdir() if p.name.endswith(_NII) and not p.name.startswith(".")
    }
    kwargs = {"tolerance": tolerance, "metrics": tuple(metrics), "empty_policy": empty_policy}
    if regions:
        kwargs["regions"] = tuple(regions)
        labels = regions_label_map(regions)
    jobs = []
    for g in gts:
        cid = case_id_from_path(g)
        modality = modality_for(cid, ["CT"], modality_override)
        jobs.append((preds.get(cid), g, labels.foreground_ids, {**kwargs, "modality": modality}))
    results: list[CaseResult] = list(map_with_progress(_job, jobs, workers, "evaluate", progress))
    summary = summarise(results, labels, metrics, tolerance)
    if out_dir is not None:
        write_reports(results, summary, labels, metrics, Path(out_dir))
    return summary


def summarise(results: Sequence[CaseResult], labels: LabelMap, metrics: Sequence[str], tolerance="uniform-2mm") -> dict:
    """Aggregate per organ, per modality and overall with the one accumulator (:mod:`amos_zoo.metrics.aggregate`)."""
    tol = get_tolerances(tolerance)
    acc = MetricAccumulator(labels.display_names, metrics)
    for r in results:
        acc.add(r)
    return acc.summary({"preset": tol.name, "source": tol.source, "verified": tol.verified})


def markdown_table(summary: dict, labels: LabelMap, metrics: Sequence[str]) -> str:
    """Per-organ means (rows) per modality and overall (columns)."""
    groups = [("all", summary["all"])] + list(summary["per_modality"].items())
    header = "| organ | " + " | ".join(f"{m.upper()} ({g})" for g, _ in groups for m in metrics) + " |"
    lines = [header, "|" + "---|" * (1 + len(groups) * len(metrics))]

    def fmt(v):
        return "" if v is None else f"{v:.4f}"

    for lid in labels.foreground_ids:
        name = labels.display_name(lid)
        cells = [fmt(b["per_organ"][name][m]) for _, b in groups for m in metrics]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    cells = [fmt(b["overall"][m]) for _, b in groups for m in metrics]
    lines.append("| **mean** | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_reports(results: Sequence[CaseResult], summary: dict, labels: LabelMap, metrics: Sequence[str], out: Path):
    """per_case.csv, summary.json, summary.md and boxplot.png (all written atomically)."""
    from amos_zoo.io import write_json, write_text
    from amos_zoo.viz import metric_boxplot

    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(
        ["case", "modality", "label_id", "organ", *metrics, "gt_voxels", "pred_voxels", "missing_prediction"]
    )
    for r in results:
        for lid in labels.foreground_ids:
            v = r.values[lid]
            writer.writerow(
                [
                    r.case_id,
                    r.modality,
                    lid,
                    labels.display_name(lid),
                    *[v[m] for m in metrics],
                    v["gt_voxels"],
                    v["pred_voxels"],
                    r.missing_prediction,
                ]
            )
    write_text(out / "per_case.csv", buf.getvalue())
    write_json(out / "summary.json", summary)
    write_text(out / "summary.md", markdown_table(summary, labels, metrics))
    box_metrics = [m for m in ("dice", "nsd") if m in metrics]
    if box_metrics:
        data = {
            m: {labels.display_name(lid): [r.values[lid][m] for r in results] for lid in labels.foreground_ids}
            for m in box_metrics
        }
        metric_boxplot(data, out / "boxplot.png")
