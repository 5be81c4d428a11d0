"""Dataset fingerprint and plan, computed as nnU-Net computes them (``amos-zoo plan``).

The fingerprint collects, per labelled case: the voxel spacing, the shape after cropping to the non-zero region
(nnU-Net's ``crop_to_nonzero``: non-zero voxels of any channel, holes filled, bounding box) and samples of the
foreground intensities. Two samplings, one per nnU-Net version:

* ``nnunet-v2`` (``DatasetFingerprintExtractor``): ``int(1e8 // n_cases)`` intensities drawn with replacement from
  each case's foreground by ``numpy.random.RandomState(1234).choice``; images read as nnU-Net's AMOS conversion
  scripts configure (``NibabelIOWithReorient``: reoriented to RAS), array order (z, y, x).
* ``nnunet-v1`` (``DatasetAnalyzer``, the AMOS authors' fork): every 10th foreground voxel of each case, read with
  SimpleITK (the file's own voxel order), array order (z, y, x).

The plan derives from it what the data pipeline needs: the target spacing (median spacing, with nnU-Net's
anisotropy rule for the low-resolution axis), per-channel intensity statistics (0.5 / 99.5 percentiles, mean and
std of the pooled foreground samples: ``CTNormalization``'s parameters) and whether a per-case z-score uses the
non-zero mask (median relative size after cropping < 3/4). tests/test_plan.py checks each against nnU-Net's own
functions on the same data. Spacings here are in (x, y, z) order, as the rest of amos-zoo.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FINGERPRINT_METHODS",
    "CaseFingerprint",
    "Fingerprint",
    "Plan",
    "crop_to_nonzero_box",
    "case_fingerprint",
    "dataset_fingerprint",
    "target_spacing",
    "make_plan",
    "load_plan",
]

FINGERPRINT_METHODS = ("nnunet-v2", "nnunet-v1")
#: nnU-Net v2's total number of foreground intensities sampled over a dataset, and its seed
V2_FOREGROUND_SAMPLES = 10e7
V2_SEED = 1234
#: nnU-Net's anisotropy threshold (v1 ExperimentPlanner3D_v21 and v2 ExperimentPlanner)
ANISOTROPY_THRESHOLD = 3


def crop_to_nonzero_box(data: np.ndarray) -> tuple[tuple[slice, ...], np.ndarray]:
    """nnU-Net's crop: the bounding box of the non-zero voxels of any channel with holes filled, and that mask
    (``data``: channels first)."""
    from scipy.ndimage import binary_fill_holes

    mask = np.zeros(data.shape[1:], dtype=bool)
    for c in range(data.shape[0]):
        mask |= data[c] != 0
    mask = binary_fill_holes(mask)
    coords = np.nonzero(mask)
    if not coords[0].size:
        return tuple(slice(0, n) for n in mask.shape), mask
    box = tuple(slice(int(c.min()), int(c.max()) + 1) for c in coords)
    return box, mask[box]


@dataclass
class CaseFingerprint:
    """What the fingerprint keeps of one case (spacing and shape in (x, y, z))."""

    case_id: str
    spacing: tuple[float, ...]
    shape_after_crop: tuple[int, ...]
    relative_size_after_crop: float
    samples: list[np.ndarray]  # per channel: foreground intensity samples (float32)


def _read_zyx(paths: Sequence[str | Path], label: str | Path, method: str) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Channels (C, z, y, x) float32, label (z, y, x) and spacing (x, y, z), in nnU-Net's reading of the files."""
    import nibabel as nib

    channels, label_img = [], nib.load(str(label))
    if method == "nnunet-v2":  # NibabelIOWithReorient: RAS, then transposed to (z, y, x)
        label_img = nib.as_closest_canonical(label_img)
    for p in paths:
        img = nib.load(str(p))
        if method == "nnunet-v2":
            img = nib.as_closest_canonical(img)
        data = np.asanyarray(img.dataobj)
        arrays = [data[..., c] for c in range(data.shape[-1])] if data.ndim == 4 else [data]
        channels += [np.asarray(a, dtype=np.float32).transpose(2, 1, 0) for a in arrays]
    spacing = tuple(float(z) for z in nib.load(str(paths[0])).header.get_zooms()[:3])
    seg = np.asanyarray(label_img.dataobj).transpose(2, 1, 0)
    return np.stack(channels), seg, spacing


def case_fingerprint(
    case_id: str, images: Sequence[str | Path], label: str | Path, method: str = "nnunet-v2", num_samples: int = 10000
) -> CaseFingerprint:
    """One case's fingerprint, sampled as nnU-Net ``method`` samples it."""
    if method not in FINGERPRINT_METHODS:
        raise ValueError(f"fingerprint method must be one of {FINGERPRINT_METHODS}, got {method!r}")
    data, seg, spacing = _read_zyx(list(images), label, method)
    box, _ = crop_to_nonzero_box(data)
    cropped, seg_c = data[(slice(None), *box)], seg[box]
    foreground = seg_c > 0  # labels keep their value inside the box; only background outside the mask becomes -1
    rng = np.random.RandomState(V2_SEED)  # nnU-Net v2 seeds once per case and draws channel after channel
    samples = []
    for c in range(cropped.shape[0]):
        pixels = cropped[c][foreground]
        if method == "nnunet-v2":
            samples.append(rng.choice(pixels, num_samples, replace=True) if pixels.size else pixels[:0])
        else:
            samples.append(pixels[::10])
    shape_zyx = cropped.shape[1:]
    return CaseFingerprint(
        case_id,
        spacing,
        tuple(int(s) for s in shape_zyx[::-1]),
        float(np.prod(shape_zyx) / np.prod(data.shape[1:])),
        samples,
    )


def _job(args: tuple) -> CaseFingerprint:
    return case_fingerprint(*args)


@dataclass
class Fingerprint:
    """A dataset's fingerprint: per-case spacings and cropped shapes (x, y, z), pooled intensity statistics."""

    method: str
    case_ids: list[str]
    spacings: list[tuple[float, ...]]
    shapes_after_crop: list[tuple[int, ...]]
    median_relative_size_after_crop: float
    intensity: list[dict[str, float]]  # per channel: mean, std, median, min, max, percentile_00_5, percentile_99_5


def _pooled_stats(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {k: float("nan") for k in ("mean", "std", "median", "min", "max", "percentile_00_5", "percentile_99_5")}
    p005, median, p995 = np.percentile(values, (0.5, 50.0, 99.5))
    return {
        "mean": float(np.mean(values)),
        "std": float(np.std(values)),
        "median": float(median),
        "min": float(np.min(values)),
        "max": float(np.max(values)),
        "percentile_00_5": float(p005),
        "percentile_99_5": float(p995),
    }


def dataset_fingerprint(
    cases: Sequence[tuple[str, Sequence[str | Path], str | Path]],
    method: str = "nnunet-v2",
    workers: int | None = None,
    progress: bool = True,
) -> Fingerprint:
    """The fingerprint of ``cases`` (case id, image channel files, label file), in parallel with a progress bar."""
    from amos_zoo.parallel import map_with_progress

    if not cases:
        raise ValueError("a fingerprint needs at least one labelled case")
    num_samples = int(V2_FOREGROUND_SAMPLES // len(cases))
    jobs = [(cid, list(images), label, method, num_samples) for cid, images, label in cases]
    results = list(map_with_progress(_job, jobs, workers, "fingerprint", progress))
    channels = len(results[0].samples)
    pooled = [np.concatenate([r.samples[c] for r in results]) for c in range(channels)]
    if method == "nnunet-v1":  # v1 pools Python lists of every 10th voxel into one list before the statistics
        pooled = [np.asarray(p, dtype=np.float32) for p in pooled]
    return Fingerprint(
        method=method,
        case_ids=[r.case_id for r in results],
        spacings=[r.spacing for r in results],
        shapes_after_crop=[r.shape_after_crop for r in results],
        median_relative_size_after_crop=float(np.median([r.relative_size_after_crop for r in results])),
        intensity=[_pooled_stats(p) for p in pooled],
    )


def target_spacing(spacings: Sequence[Sequence[float]], sizes: Sequence[Sequence[int]]) -> tuple[float, ...]:
    """nnU-Net's full-resolution target spacing: the median spacing, except that a much coarser axis with much
    fewer voxels takes the 10th percentile of its spacings (at least the finest other axis + 1e-5)."""
    spacings_arr = np.vstack([np.asarray(s, dtype=float) for s in spacings])
    target = np.percentile(spacings_arr, 50, 0)
    target_size = np.percentile(np.vstack([np.asarray(s, dtype=float) for s in sizes]), 50, 0)
    worst = int(np.argmax(target))
    others = [i for i in range(len(target)) if i != worst]
    other_spacings = [target[i] for i in others]
    other_sizes = [target_size[i] for i in others]
    aniso_spacing = target[worst] > ANISOTROPY_THRESHOLD * max(other_spacings)
    aniso_voxels = target_size[worst] * ANISOTROPY_THRESHOLD < min(other_sizes)
    if aniso_spacing and aniso_voxels:
        axis_target = np.percentile(spacings_arr[:, worst], 10)
        if axis_target < max(other_spacings):
            axis_target = max(max(other_spacings), axis_target) + 1e-5
        target[worst] = axis_target
    return tuple(float(t) for t in target)


@dataclass
class Plan:
    """What a protocol's data pipeline takes from a dataset's fingerprint (spacing in (x, y, z))."""

    protocol: str
    method: str
    spacing: tuple[float, ...]
    intensity_stats: list[tuple[float, float, float, float]]  # per channel: (0.5 %, 99.5 %, mean, std)
    zscore_nonzero_mask: bool
    cases: list[str]
    dataset_hash: str
    fingerprint: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary (plan.json)."""
        return asdict(self)


def _cases_hash(cases: Sequence[tuple[str, Sequence[str | Path], str | Path]]) -> str:
    h = hashlib.sha256()
    for cid, images, label in sorted(cases, key=lambda c: c[0]):
        for p in [*images, label]:
            st = Path(p).stat()
            h.update(f"{cid}:{Path(p).name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def make_plan(
    cases: Sequence[tuple[str, Sequence[str | Path], str | Path]],
    protocol: str,
    method: str,
    out: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> Plan:
    """Fingerprint ``cases`` and derive the plan; written atomically to ``out`` (``plan.json``) when given, and
    read back from there instead of recomputed when it was made from the same files with the same method."""
    from amos_zoo.io import write_json

    digest = _cases_hash(cases)
    if out is not None and Path(out).is_file():
        existing = load_plan(out)
        if existing.dataset_hash == digest and existing.method == method and existing.protocol == protocol:
            return existing
    fp = dataset_fingerprint(cases, method, workers, progress)
    stats = [(s["percentile_00_5"], s["percentile_99_5"], s["mean"], s["std"]) for s in fp.intensity]
    plan = Plan(
        protocol=protocol,
        method=method,
        spacing=target_spacing(fp.spacings, fp.shapes_after_crop),
        intensity_stats=stats,
        zscore_nonzero_mask=fp.median_relative_size_after_crop < 3 / 4,
        cases=fp.case_ids,
        dataset_hash=digest,
        fingerprint={
            "spacings": [list(s) for s in fp.spacings],
            "shapes_after_crop": [list(s) for s in fp.shapes_after_crop],
            "median_relative_size_after_crop": fp.median_relative_size_after_crop,
            "intensity_per_channel": fp.intensity,
        },
    )
    if out is not None:
        write_json(out, plan.to_dict())
    return plan


def load_plan(path: str | Path) -> Plan:
    """A plan written by :func:`make_plan`."""
    data = json.loads(Path(path).read_text())
    data["spacing"] = tuple(data["spacing"])
    data["intensity_stats"] = [tuple(s) for s in data["intensity_stats"]]
    return Plan(**data)
