"""``amos-zoo check-data``: validate a whole dataset up front and report every problem with its fix.

Checks the index (readable JSON, labels, no duplicate cases, paths inside the dataset, non-empty
splits, listed files present) and then every case in parallel processes: readable image and label,
3D (or 4D with the dataset's channel count), finite intensities, integer labels inside the label map,
and image/label on the same voxel grid (shape and affine).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from amos_zoo.data.index import CaseRecord, DatasetError, load_index
from amos_zoo.parallel import map_with_progress

__all__ = ["Problem", "check_dataset", "check_case"]


@dataclass(frozen=True)
class Problem:
    """One problem: the file, what is wrong, and what to do."""

    file: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.file}: {self.problem} -> {self.fix}"


def _load(path: Path) -> tuple[nib.Nifti1Image | None, np.ndarray | None, Problem | None]:
    if not path.is_file():
        return (
            None,
            None,
            Problem(str(path), "file listed in dataset.json does not exist", "add the file or remove the entry"),
        )
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except Exception as err:  # noqa: BLE001 - nibabel raises several types for corrupt files
        return (
            None,
            None,
            Problem(
                str(path),
                f"cannot be read ({type(err).__name__}: {err})",
                "re-export or re-download the file (it may be truncated)",
            ),
        )
    return img, data, None


def check_case(case: CaseRecord, label_ids: list[int], num_channels: int) -> list[Problem]:
    """All problems of one case.

    One function because it is a list of independent checks, each reporting its own problem.
    """
    problems: list[Problem] = []
    grids = []
    for path in case.images:
        img, data, err = _load(path)
        if err:
            problems.append(err)
            continue
        spatial = data.shape[:3]
        if data.ndim == 4 and len(case.images) == 1 and num_channels > 1:
            if data.shape[3] != num_channels:
                problems.append(
                    Problem(
                        str(path),
                        f"has {data.shape[3]} channels, the dataset declares {num_channels}",
                        "fix the dataset.json 'modality' entry or the image",
                    )
                )
        elif data.ndim == 3 and len(case.images) == 1 and num_channels > 1:
            problems.append(
                Problem(
                    str(path),
                    f"is 3D but the dataset declares {num_channels} channels",
                    "store the channels as a 4D image (x, y, z, channel) or fix 'modality'",
                )
            )
        elif data.ndim != 3:
            want = "3D" if num_channels == 1 else f"3D, or 4D with {num_channels} channels"
            problems.append(
                Problem(
                    str(path),
                    f"is {data.ndim}D with shape {data.shape}, expected {want}",
                    "convert the image to a single 3D volume per channel",
                )
            )
            continue
        if data.dtype.kind == "f" and not np.isfinite(data).all():
            problems.append(
                Problem(
                    str(path),
                    f"contains {int((~np.isfinite(data)).sum())} NaN or infinite values",
                    "replace them (e.g. with the minimum intensity) and re-save",
                )
            )
        grids.append((path, spatial, img.affine))
    if case.label is None:
        return problems
    img, data, err = _load(case.label)
    if err:
        return problems + [err]
    if data.ndim != 3:
        return problems + [
            Problem(
                str(case.label),
                f"label is {data.ndim}D with shape {data.shape}, expected 3D",
                "save the label as one 3D integer volume",
            )
        ]
    if data.dtype.kind == "f" and (not np.isfinite(data).all() or np.any(data != np.round(data))):
        problems.append(
            Problem(
                str(case.label),
                "label has non-integer values",
                "labels must be whole numbers: re-save with an integer type",
            )
        )
    values = set(np.unique(data).astype(np.int64).tolist())
    unknown = sorted(values - set(label_ids) - {0})
    if unknown:
        problems.append(
            Problem(
                str(case.label),
                f"label values {unknown} are not in the label map {sorted(label_ids)}",
                "fix the label or add the classes to dataset.json 'labels'",
            )
        )
    for path, spatial, affine in grids:
        if tuple(spatial) != tuple(data.shape):
            problems.append(
                Problem(
                    str(case.label),
                    f"shape {data.shape} differs from its image {path.name} {spatial}",
                    "resample the label onto the image grid",
                )
            )
        elif not np.allclose(affine, img.affine, atol=1e-3):
            problems.append(
                Problem(
                    str(case.label),
                    f"affine differs from its image {path.name}",
                    "write the label with the image's affine (same voxel grid)",
                )
            )
    return problems


def _job(args):
    return check_case(*args)


def check_dataset(
    root: str | Path, dataset_json: str | Path | None = None, workers: int | None = None, progress: bool = True
) -> list[Problem]:
    """Every problem of a dataset (an empty list when it is fine)."""
    root = Path(root)
    try:
        index = load_index(root, dataset_json)
    except DatasetError as err:
        text = str(err)
        file, _, problem = text.partition(": ")
        return [Problem(file, problem or text, "fix dataset.json as described, then run check-data again")]
    problems: list[Problem] = []
    cases: list[CaseRecord] = []
    for split, records in index.splits.items():
        if not records:
            problems.append(
                Problem(str(root / "dataset.json"), f"split '{split}' is empty", "list its cases or remove the split")
            )
        cases.extend(records)
    label_ids = sorted(index.labels.names)
    jobs = [(c, label_ids, index.num_channels) for c in cases]
    for found in map_with_progress(_job, jobs, workers, "check-data", progress):
        problems.extend(found)
    return problems
