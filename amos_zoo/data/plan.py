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
    "plan_3d_fullres",
    "pool_and_conv_props",
    "normalization_scheme",
    "to_xyz",
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
    #: nnU-Net v2's 3d_fullres configuration (:func:`plan_3d_fullres`: spacing, patch, batch, network topology), made
    #: for ``nnunet-v2`` fingerprints when the number of classes is known; None otherwise
    configuration: dict[str, Any] | None = None

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
    num_classes: int | None = None,
    channel_names: Sequence[str] | None = None,
) -> Plan:
    """Fingerprint ``cases`` and derive the plan; written atomically to ``out`` (``plan.json``) when given, and
    read back from there instead of recomputed when it was made from the same files with the same method.

    With ``num_classes`` (background included) an ``nnunet-v2`` plan also holds nnU-Net's whole 3d_fullres
    configuration (:func:`plan_3d_fullres`; ``channel_names`` as nnU-Net's dataset.json names the channels)."""
    from amos_zoo.io import write_json

    digest = _cases_hash(cases)
    wants_configuration = method == "nnunet-v2" and num_classes is not None
    if out is not None and Path(out).is_file():
        existing = load_plan(out)
        same = existing.dataset_hash == digest and existing.method == method and existing.protocol == protocol
        if same and (existing.configuration is not None or not wants_configuration):
            return existing
    fp = dataset_fingerprint(cases, method, workers, progress)
    stats = [(s["percentile_00_5"], s["percentile_99_5"], s["mean"], s["std"]) for s in fp.intensity]
    configuration = None
    if wants_configuration:
        configuration = plan_3d_fullres(
            fp.spacings,
            fp.shapes_after_crop,
            len(fp.intensity),
            num_classes,
            channel_names=channel_names,
            median_relative_size_after_crop=fp.median_relative_size_after_crop,
        )
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
        configuration=configuration,
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


# ---- the 3d_fullres configuration: nnU-Net v2's ExperimentPlanner ------------------------------------------------
#: nnU-Net v2's ExperimentPlanner constants (default_experiment_planner.py __init__)
UNET_BASE_FEATURES = 32
UNET_MAX_FEATURES_3D = 320
UNET_REFERENCE_VAL_3D = 560_000_000
UNET_REFERENCE_GB = 8
UNET_REFERENCE_BATCH_3D = 2
UNET_MIN_EDGE = 4
UNET_MIN_BATCH = 2
MAX_DATASET_COVERED = 0.05
LOWRES_CREATION_THRESHOLD = 0.25


def _pad_shape(shape: Sequence[int], divisible_by: Sequence[int]) -> list[int]:
    """network_topology.pad_shape: the next multiple of ``divisible_by`` (a shape already divisible stays)."""
    return [int(s + d - s % d - (d if s % d == 0 else 0)) for s, d in zip(shape, divisible_by)]


def pool_and_conv_props(
    spacing: Sequence[float], patch_size: Sequence[int], min_edge: int = UNET_MIN_EDGE, max_pool: int = 999999
) -> tuple[list[int], list[list[int]], list[list[int]], list[int], list[int]]:
    """nnU-Net v2's ``get_pool_and_conv_props``: pools per axis, pool kernels (strides), conv kernels, the patch
    padded to a multiple of the pooling, and that multiple. Axes in the order of ``spacing``."""
    dim = len(spacing)
    current_spacing, current_size = [float(s) for s in spacing], [float(s) for s in patch_size]
    pools: list[list[int]] = [[1] * dim]
    kernels: list[list[int]] = []
    num_pool, kernel = [0] * dim, [1] * dim
    while True:
        valid = [i for i in range(dim) if current_size[i] >= 2 * min_edge]
        if not valid:
            break
        finest = min(current_spacing[i] for i in valid)
        valid = [i for i in valid if current_spacing[i] / finest < 2 and num_pool[i] < max_pool]
        if len(valid) == 1 and current_size[valid[0]] < 3 * min_edge:
            break
        if not valid:
            break
        for d in range(dim):
            if kernel[d] != 3 and current_spacing[d] / min(current_spacing) < 2:
                kernel[d] = 3
        stride = [1] * dim
        for v in valid:
            stride[v] = 2
            num_pool[v] += 1
            current_spacing[v] *= 2
            current_size[v] = float(np.ceil(current_size[v] / 2))
        pools.append(stride)
        kernels.append(list(kernel))
    divisible = [2**n for n in num_pool]
    kernels.append([3] * dim)
    return num_pool, pools, kernels, _pad_shape(patch_size, divisible), divisible


def _feature_map_size(patch: Sequence[int], arch: dict[str, Any], in_channels: int, num_classes: int) -> int:
    """dynamic_network_architectures' ``compute_conv_feature_map_size`` of the planned PlainConvUNet (nnU-Net's
    VRAM estimate: get_network_from_plans leaves deep supervision off), built on the meta device."""
    import torch

    from amos_zoo.models.nnunet import plain_conv_unet

    with torch.device("meta"):
        net = plain_conv_unet(arch, in_channels, num_classes, deep_supervision=False, initialize=False)
    return int(net.compute_conv_feature_map_size(tuple(int(p) for p in patch)))


def _configuration(
    spacing: np.ndarray,
    median_shape: Sequence[float],
    n_voxels_dataset: float,
    in_channels: int,
    num_classes: int,
    vram_gb: float,
    cache: dict,
) -> dict[str, Any]:
    """ExperimentPlanner.get_plans_for_configuration (3D, PlainConvUNet): patch, batch and topology (nnU-Net's
    transposed axis order)."""

    def arch_for(n_stages: int, kernels: list, strides: list) -> dict[str, Any]:
        return {
            "n_stages": n_stages,
            "features_per_stage": [min(UNET_MAX_FEATURES_3D, UNET_BASE_FEATURES * 2**i) for i in range(n_stages)],
            "kernel_sizes": [list(k) for k in kernels],
            "strides": [list(s) for s in strides],
            "n_conv_per_stage": [2] * n_stages,
            "n_conv_per_stage_decoder": [2] * (n_stages - 1),
            "conv_bias": True,
            "norm_op_kwargs": {"eps": 1e-5, "affine": True},
            "nonlin_kwargs": {"inplace": True},
        }

    def estimate(patch: list[int], arch: dict[str, Any]) -> int:
        key = f"{patch}_{arch['strides']}"
        if key not in cache:
            cache[key] = _feature_map_size(patch, arch, in_channels, num_classes)
        return cache[key]

    tmp = 1 / np.array(spacing)
    initial = [round(i) for i in tmp * (256**3 / np.prod(tmp)) ** (1 / 3)]
    initial = np.array([min(i, j) for i, j in zip(initial, median_shape[:3])])
    _, strides, kernels, patch, divisible = pool_and_conv_props(spacing, initial)
    arch = arch_for(len(strides), kernels, strides)
    current = estimate(patch, arch)
    reference = UNET_REFERENCE_VAL_3D * (vram_gb / UNET_REFERENCE_GB)
    while current / UNET_REFERENCE_BATCH_3D * 2 > reference:
        axis = int(np.argsort([i / j for i, j in zip(patch, median_shape[:3])])[-1])
        trial = list(patch)
        trial[axis] -= divisible[axis]
        _, _, _, _, divisible = pool_and_conv_props(spacing, trial)
        patch = list(patch)
        patch[axis] -= divisible[axis]
        _, strides, kernels, patch, divisible = pool_and_conv_props(spacing, patch)
        arch = arch_for(len(strides), kernels, strides)
        current = estimate(patch, arch)
    batch = round((reference / current) * UNET_REFERENCE_BATCH_3D)
    cap = round(n_voxels_dataset * MAX_DATASET_COVERED / np.prod(patch, dtype=np.float64))
    batch = max(min(batch, cap), UNET_MIN_BATCH)
    from amos_zoo.models.nnunet import nnunet_architecture

    return {
        "spacing": [float(s) for s in spacing],
        "patch_size": [int(p) for p in patch],
        "batch_size": int(batch),
        "median_image_size_in_voxels": [float(m) for m in median_shape],
        "architecture": nnunet_architecture(arch),
    }


#: nnU-Net v2's channel name -> normalisation (map_channel_name_to_normalization.py; any other name: z-score)
_NORMALIZATION_BY_CHANNEL_NAME = {
    "ct": "CTNormalization",
    "nonorm": "NoNormalization",
    "zscore": "ZScoreNormalization",
    "rescale_to_0_1": "RescaleTo01Normalization",
    "rgb_to_0_1": "RGBTo01Normalization",
}


def normalization_scheme(channel_name: str) -> str:
    """nnU-Net v2's ``get_normalization_scheme``: the normalisation a dataset.json channel name selects. Of these,
    only ZScoreNormalization is restricted to the non-zero mask when cropping shrank the median case below 3/4."""
    return _NORMALIZATION_BY_CHANNEL_NAME.get(channel_name.casefold(), "ZScoreNormalization")


def _compute_new_shape(shape: Sequence[int], spacing: Sequence[float], new_spacing: Sequence[float]) -> np.ndarray:
    """nnU-Net's compute_new_shape."""
    return np.array([int(round(i / j * k)) for i, j, k in zip(spacing, new_spacing, shape)])


def plan_3d_fullres(
    spacings: Sequence[Sequence[float]],
    shapes_after_crop: Sequence[Sequence[int]],
    in_channels: int,
    num_classes: int,
    num_training: int | None = None,
    vram_gb: float = 8,
    channel_names: Sequence[str] | None = None,
    median_relative_size_after_crop: float = 1.0,
) -> dict[str, Any]:
    """nnU-Net v2's 3d_fullres configuration (``ExperimentPlanner.plan_experiment``) of a fingerprint, with the
    ``batch_dice`` its 3d_lowres search decides. ``spacings`` / ``shapes_after_crop`` per case in (x, y, z), as
    amos-zoo stores them; ``num_classes`` with background (nnU-Net's ``len(labels)``).

    The returned dictionary is in amos-zoo's (x, y, z) order: ``spacing``, ``patch_size``, ``batch_size``,
    ``batch_dice``, ``architecture`` (PlainConvUNet's arguments: stages, features, kernels, strides...),
    ``normalization_schemes`` and ``use_mask_for_norm`` (from ``channel_names``, nnU-Net's dataset.json channel
    names, and the median relative size after cropping), and ``nnunet``: the same configuration in nnU-Net's own
    (transposed z, y, x) order with ``transpose_forward``.
    """
    num_training = len(spacings) if num_training is None else num_training
    spacings_zyx = [list(s)[::-1] for s in spacings]
    shapes_zyx = [list(s)[::-1] for s in shapes_after_crop]
    fullres_zyx = np.array(target_spacing(spacings, shapes_after_crop)[::-1])
    worst = int(np.argmax(fullres_zyx))
    transpose = [worst] + [i for i in range(3) if i != worst]
    spacing_t = fullres_zyx[transpose]
    new_shapes = [_compute_new_shape(j, i, fullres_zyx) for i, j in zip(spacings_zyx, shapes_zyx)]
    median_t = np.median(new_shapes, 0)[transpose]
    n_voxels = float(np.prod(median_t, dtype=np.float64) * num_training)
    cache: dict = {}
    fullres = _configuration(spacing_t, median_t, n_voxels, in_channels, num_classes, vram_gb, cache)

    # the 3d_lowres search only decides batch_dice here (True for 3d_fullres when a 3d_lowres stage is planned)
    median_voxels = np.prod(median_t, dtype=np.float64)
    patch_voxels = np.prod(fullres["patch_size"], dtype=np.float64)
    lowres_spacing = np.array(spacing_t, dtype=float)
    lowres = None
    while patch_voxels / median_voxels < LOWRES_CREATION_THRESHOLD:
        max_spacing = max(lowres_spacing)
        if np.any((max_spacing / lowres_spacing) > 2):
            lowres_spacing[(max_spacing / lowres_spacing) > 2] *= 1.03
        else:
            lowres_spacing *= 1.03
        median_voxels = np.prod(spacing_t / lowres_spacing * median_t, dtype=np.float64)
        lowres = _configuration(
            lowres_spacing,
            tuple(round(i) for i in spacing_t / lowres_spacing * median_t),
            float(median_voxels * num_training),
            in_channels,
            num_classes,
            vram_gb,
            cache,
        )
        patch_voxels = np.prod(lowres["patch_size"], dtype=np.int64)
    if np.prod(median_t, dtype=np.float64) / median_voxels < 2:
        lowres = None
    fullres["batch_dice"] = bool(lowres is not None)
    fullres["transpose_forward"] = transpose
    schemes = [normalization_scheme(c) for c in (channel_names or ["CT"] * in_channels)]
    fullres["normalization_schemes"] = schemes
    fullres["use_mask_for_norm"] = [
        bool(median_relative_size_after_crop < 3 / 4 and s == "ZScoreNormalization") for s in schemes
    ]
    return to_xyz(fullres)


def to_xyz(configuration: dict[str, Any]) -> dict[str, Any]:
    """An nnU-Net configuration (axes transposed by ``transpose_forward`` from (z, y, x)) in amos-zoo's (x, y, z)
    order, the nnU-Net original kept under ``nnunet``."""
    transpose = list(configuration.get("transpose_forward", [0, 1, 2]))
    # nnU-Net's axis i is (z, y, x) axis transpose[i], i.e. (x, y, z) axis 2 - transpose[i]
    order = [transpose.index(2 - a) for a in range(3)]  # for each (x, y, z) axis, its nnU-Net axis

    def xyz(values: Sequence) -> list:
        return [values[i] for i in order]

    from amos_zoo.models.nnunet import ARCH_KEYS

    arch = {k: v for k, v in configuration["architecture"]["arch_kwargs"].items() if k in ARCH_KEYS}
    arch["kernel_sizes"] = [xyz(k) for k in arch["kernel_sizes"]]
    arch["strides"] = [xyz(s) for s in arch["strides"]]
    return {
        "spacing": xyz(configuration["spacing"]),
        "patch_size": xyz(configuration["patch_size"]),
        "batch_size": configuration["batch_size"],
        "batch_dice": configuration.get("batch_dice"),
        "normalization_schemes": configuration.get("normalization_schemes"),
        "use_mask_for_norm": configuration.get("use_mask_for_norm"),
        "architecture": arch,
        "nnunet": configuration,
    }
