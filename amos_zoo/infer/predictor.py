"""Whole-scan inference: the recipe's preprocessing, gaussian sliding window (optional mirror TTA),
and the prediction resampled back onto the input's own voxel grid (same shape, same affine).

Mirroring runs inside each window, as nnU-Net's predictors do: a window's output is the mean over the window and its
mirrored copies, and the windows are blended afterwards. What is averaged and blended is the card's ``blend``:
``logits`` (nnU-Net v2's ``_internal_maybe_mirror_and_predict``; MONAI's ``sliding_window_inference``) or
``probabilities`` (nnU-Net v1's ``_internal_maybe_mirror_and_pred_3D``: softmax per window, then blended).

Inputs are NIfTI files, lists of channel files, or DICOM series folders (MONAI's PydicomReader; a
folder holding more than one series is refused).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai import transforms as mt
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference

from amos_zoo.card import ModelCard
from amos_zoo.console import quiet_warnings
from amos_zoo.data.recipes import Recipe
from amos_zoo.data.transforms import deterministic_transforms
from amos_zoo.infer.stitching import with_cpu_stitching_fallback
from amos_zoo.io import save_nifti

__all__ = [
    "Predictor",
    "fill_background",
    "cropped_faces",
    "resample_to_input_grid",
    "labels_on_input_grid",
    "load_scan",
    "nifti_header",
    "InputError",
    "check_dicom_series",
    "BLENDS",
    "TILINGS",
    "nnunet_sliding_window",
    "nnunet_steps",
    "nnunet_gaussian",
]


#: what mirroring averages and the sliding window blends
BLENDS = ("logits", "probabilities")
#: where the windows go: MONAI's ``sliding_window_inference`` or nnU-Net's tiling (:func:`nnunet_sliding_window`)
TILINGS = ("monai", "nnunet")


def nnunet_steps(image_size: tuple[int, ...], tile_size: tuple[int, ...], step: float) -> list[list[int]]:
    """Window start positions per axis as nnU-Net places them (``compute_steps_for_sliding_window``, the same in v1
    and v2): the fewest windows at most ``tile * step`` apart, spread evenly from the first voxel to the last."""
    steps = []
    for size, tile in zip(image_size, tile_size):
        count = int(np.ceil((size - tile) / (tile * step))) + 1
        actual = (size - tile) / (count - 1) if count > 1 else 0.0
        steps.append([int(np.round(actual * i)) for i in range(count)])
    return steps


def nnunet_gaussian(tile_size: tuple[int, ...], sigma_scale: float = 1.0 / 8) -> torch.Tensor:
    """nnU-Net's window weights (``compute_gaussian``): a unit impulse at the window's centre blurred by scipy's
    gaussian filter with sigma ``tile * sigma_scale``, scaled to a maximum of 1, zeros replaced by the smallest
    weight (nnU-Net scales to 10 in v2: the blend divides the scale out)."""
    from scipy.ndimage import gaussian_filter

    impulse = np.zeros(tile_size)
    impulse[tuple(t // 2 for t in tile_size)] = 1
    weights = gaussian_filter(impulse, [t * sigma_scale for t in tile_size], 0, mode="constant", cval=0)
    weights = torch.from_numpy(weights / weights.max()).float()
    weights[weights == 0] = weights[weights > 0].min()
    return weights


def nnunet_sliding_window(
    image: torch.Tensor,
    tile_size: tuple[int, ...],
    network,
    *,
    overlap: float = 0.5,
    gaussian: bool = True,
    batch_size: int = 1,
    device: str | torch.device | None = None,
    stitch_device: str | torch.device | None = None,
) -> torch.Tensor:
    """nnU-Net's sliding window (``predict_sliding_window_return_logits``): the volume padded with zeros to at least
    one window (centred, as acvl_utils' ``pad_nd_image``), windows at :func:`nnunet_steps` with step ``1 - overlap``,
    each output weighted by :func:`nnunet_gaussian` (or 1), summed and divided by the summed weights, the padding
    removed. ``image`` is (1, C, *spatial); ``network`` maps a batch of windows to outputs (B, K, *tile).
    nnU-Net accumulates in float16; this accumulates in float32."""
    device = torch.device(device) if device is not None else image.device
    stitch = torch.device(stitch_device) if stitch_device is not None else device
    spatial = tuple(image.shape[2:])
    padded_size = [max(s, t) for s, t in zip(spatial, tile_size)]
    below = [(p - s) // 2 for p, s in zip(padded_size, spatial)]
    pads = [v for b, p, s in reversed(list(zip(below, padded_size, spatial))) for v in (b, p - s - b)]
    data = torch.nn.functional.pad(image, pads) if any(pads) else image
    corners = list(itertools.product(*nnunet_steps(tuple(padded_size), tuple(tile_size), 1.0 - overlap)))
    weights = nnunet_gaussian(tuple(tile_size)).to(stitch) if gaussian else torch.ones(tuple(tile_size), device=stitch)
    total = counts = None
    for start in range(0, len(corners), batch_size):
        chunk = corners[start : start + batch_size]
        windows = [
            (slice(None), slice(None), *[slice(c, c + t) for c, t in zip(corner, tile_size)]) for corner in chunk
        ]
        outputs = network(torch.cat([data[w] for w in windows]).to(device)).to(stitch).float()
        if total is None:
            total = torch.zeros((1, outputs.shape[1], *padded_size), dtype=torch.float32, device=stitch)
            counts = torch.zeros(tuple(padded_size), dtype=torch.float32, device=stitch)
        for output, window in zip(outputs, windows):
            total[window] += output * weights
            counts[window[2:]] += weights
    total /= counts
    crop = tuple(slice(b, b + s) for b, s in zip(below, spatial))
    return total[(slice(None), slice(None), *crop)]


class InputError(ValueError):
    """An input scan cannot be used; the message names the file and the problem."""


def fill_background(probs: torch.Tensor) -> torch.Tensor:
    """Give class 0 the probability mass a resampled (C, *spatial) volume lacks: outside the preprocessed region
    (the foreground crop: air) every voxel is background. In place; returns ``probs``.

    A voxel interpolated between the region (probabilities p) and outside it (weight w outside) becomes
    ``(1 - w) p + w onehot(0)``, as if the air had been predicted as background. Used by the predictor and by
    exported bundles (after MONAI's ``Invertd``, which pads the crop with zeros)."""
    probs[0] += (1.0 - probs.sum(0)).clamp_min(0.0)
    return probs


def cropped_faces(image: MetaTensor) -> list[int] | None:
    """Voxels the recipe's foreground crop removed, ``[before, after]`` per spatial axis (None: no crop), read from
    the MetaTensor's applied operations."""
    for op in reversed(getattr(image, "applied_operations", None) or []):
        if op.get("class") == "CropForeground":
            return [int(v) for v in op["extra_info"]["cropped"]]
    return None


def _uncrop(scores: MetaTensor, cropped: list[int]) -> MetaTensor:
    """Probabilities on the grid before the foreground crop: the removed air is background (probability 1)."""
    shape = [n + cropped[2 * a] + cropped[2 * a + 1] for a, n in enumerate(scores.shape[1:])]
    full = torch.zeros((scores.shape[0], *shape), dtype=torch.float32)
    inner = tuple(slice(cropped[2 * a], cropped[2 * a] + n) for a, n in enumerate(scores.shape[1:]))
    full[(slice(None), *inner)] = torch.as_tensor(scores).float()
    fill_background(full)
    affine = torch.as_tensor(scores.affine, dtype=torch.float64).clone()
    affine[:3, 3] -= affine[:3, :3] @ torch.tensor([float(cropped[2 * a]) for a in range(3)], dtype=torch.float64)
    return MetaTensor(full, affine=affine)


def resample_to_input_grid(
    scores: MetaTensor, affine: np.ndarray, shape: tuple[int, ...], background_fill: bool = True
) -> torch.Tensor:
    """Resample class probabilities (C, *spatial) from the preprocessed grid onto the input grid.

    The output has exactly ``shape`` and lives on ``affine``: the prediction is never a voxel short. As MONAI's
    inverse of the recipe: the region the foreground crop removed (``scores.meta["cropped"]``) is air, predicted
    background; beyond the resampled volume's edge the border values continue (``Spacing``'s border padding).
    """
    cropped = scores.meta.get("cropped") if isinstance(scores, MetaTensor) else None
    if cropped is not None:
        scores = _uncrop(scores, cropped)
    resampler = mt.SpatialResample(mode="bilinear", padding_mode="border", dtype=torch.float32)
    out = resampler(scores, dst_affine=torch.as_tensor(affine, dtype=torch.float64), spatial_size=tuple(shape))
    if tuple(out.shape[1:]) != tuple(shape):
        raise RuntimeError(f"resampling returned {tuple(out.shape[1:])}, expected {tuple(shape)}")
    if background_fill:
        fill_background(out)
    return out


def labels_on_input_grid(
    scores: MetaTensor, affine: np.ndarray, shape: tuple[int, ...], interpolation: str = "linear"
) -> np.ndarray:
    """``resample_to_input_grid(scores, affine, shape).argmax(0)``, computed without resampling every class.

    ``interpolation="nearest"`` instead takes the argmax on the network's grid and copies each output voxel's
    nearest source label (what MONAI's ``Invertd(nearest_interp=True)`` does), on the exact input grid.

    Where the grid change is axis-aligned (orientation flips/permutations and spacing: the case after the
    recipe's Orientation + Spacing), each output voxel's bilinear value is a convex combination of its 8
    source neighbours. When those 8 share one argmax label, the combination has that label too (for every
    other class k, each neighbour's p[L] >= p[k], so the weighted sums keep the order), so only voxels at
    label boundaries need interpolated probabilities, and there only the classes that can win
    (:func:`_mixed_cell_labels`); the cells' labels are copied to the output axis by axis. Out-of-grid neighbours
    follow :func:`resample_to_input_grid`: background on the faces the foreground crop cut
    (``scores.meta["cropped"]``), the border value on the volume's own edges. Other (oblique) grid changes fall back
    to the full resampling.

    One function because the fast and full resampling paths share the grid arithmetic computed at its start.
    """
    src_affine = np.asarray(scores.affine, dtype=np.float64)
    m = np.linalg.inv(src_affine) @ np.asarray(affine, dtype=np.float64)  # output voxel index -> source index
    rot, shift = m[:3, :3], m[:3, 3]
    nonzero = np.abs(rot) > 1e-9 * np.abs(rot).max()
    if scores.ndim != 4 or not ((nonzero.sum(0) == 1).all() and (nonzero.sum(1) == 1).all()):
        return resample_to_input_grid(scores, affine, shape).argmax(0).numpy().astype(np.uint8)
    probs = scores.as_tensor() if isinstance(scores, MetaTensor) else torch.as_tensor(scores)
    probs = probs.float()
    n_classes = probs.shape[0]
    cropped = (scores.meta.get("cropped") if isinstance(scores, MetaTensor) else None) or [0] * 6
    # one voxel around the grid: the border value on the volume's edges, background where the crop cut air away
    labels = np.pad(probs.numpy().argmax(0).astype(np.uint8), 1, mode="edge")  # numpy's: ties to the first class too
    for a in range(3):
        for side, index in ((0, 0), (1, -1)):
            if cropped[2 * a + side]:
                labels[(slice(None),) * a + (index,)] = 0
    out_axis = [int(np.flatnonzero(nonzero[a])[0]) for a in range(3)]
    if interpolation == "nearest":
        near = []
        for a in range(3):
            coord = rot[a, out_axis[a]] * np.arange(shape[out_axis[a]], dtype=np.float64) + shift[a] + 1.0
            near.append(np.clip(np.rint(coord), 0, labels.shape[a] - 1).astype(np.int64))  # ties: half to even
        out = labels[np.ix_(near[0], near[1], near[2])]
        return np.ascontiguousarray(out.transpose(np.argsort(out_axis)))
    if interpolation != "linear":
        raise ValueError(f"interpolation must be 'linear' or 'nearest', got {interpolation!r}")
    lo, w = [], []  # per source axis: lower neighbour index (padded grid) and weight of the upper one
    for a in range(3):
        j = np.arange(shape[out_axis[a]], dtype=np.float64)
        coord = rot[a, out_axis[a]] * j + shift[a] + 1.0  # +1: the padding
        base = np.floor(coord)
        frac = coord - base
        size = labels.shape[a]
        base = np.clip(base, 0, size - 1).astype(np.int64)
        frac = np.where((coord < 0) | (coord > size - 1), 0.0, frac)  # far outside: the padding voxel's value
        lo.append(base)
        w.append(frac)
    # each output voxel lies in the source cell whose lower corner is lo: a cell's label when its 8 corners agree,
    # 255 (to be interpolated) when they do not; gathered axis by axis straight into the output's axis order
    corner_labels = np.pad(labels, ((0, 1),) * 3, mode="edge")  # corner lo + 1 of the last index: the index itself
    size = labels.shape
    first = corner_labels[: size[0], : size[1], : size[2]]
    uniform = np.ones(size, dtype=bool)
    for c in _CORNERS[1:]:
        uniform &= corner_labels[c[0] : c[0] + size[0], c[1] : c[1] + size[1], c[2] : c[2] + size[2]] == first
    source_of = np.argsort(out_axis)  # output axis -> source axis
    out = np.where(uniform, first, np.uint8(_MIXED)).transpose(source_of)
    for b in range(3):
        out = np.take(out, lo[source_of[b]], axis=b)
    out = np.ascontiguousarray(out)  # written through a flat view below
    todo = np.flatnonzero(out == _MIXED)
    if todo.size > 0.3 * out.size or n_classes >= _MIXED:  # labels change almost everywhere: resample it all
        return resample_to_input_grid(scores, affine, shape).argmax(0).numpy().astype(np.uint8)
    if todo.size:
        position = np.unravel_index(todo, out.shape)
        out.reshape(-1)[todo] = _mixed_cell_labels(
            probs,
            cropped,
            corner_labels,
            ~uniform,
            [lo[a][position[out_axis[a]]] for a in range(3)],
            [w[a][position[out_axis[a]]] for a in range(3)],
        )
    return out


#: the 8 corners of a source cell, as offsets from its lower corner
_CORNERS = [(c0, c1, c2) for c0 in (0, 1) for c1 in (0, 1) for c2 in (0, 1)]
#: marks output voxels whose source cell's corners disagree (labels are < 255)
_MIXED = 255


def _mixed_cell_labels(
    probs: torch.Tensor,
    cropped: list[int],
    corner_labels: np.ndarray,
    mixed: np.ndarray,
    cell: list[np.ndarray],
    weight: list[np.ndarray],
) -> np.ndarray:
    """Argmax of the trilinearly interpolated probabilities at voxels in cells whose corners disagree.

    ``probs`` (C, *source); ``corner_labels`` the argmax on the source grid padded by one voxel before and two after
    each axis (as :func:`labels_on_input_grid` pads it); ``mixed`` which cells (by lower corner, on the padded grid)
    disagree; per voxel its cell's lower corner per axis and the weight of the upper neighbour.

    Only classes that can win are interpolated: with S the corners' argmax classes, the winner's value is at least
    ``B = min over corners of sum(p[S]) / |S|`` (the mean over S of the interpolated values), and a class ``k``
    never exceeds its largest corner value, so classes outside S whose largest corner value is below B cannot win.
    Candidates are kept in class order, so ties go to the lowest class, as ``argmax`` breaks them.
    """
    size = mixed.shape
    n_classes = probs.shape[0]
    # probabilities on the padded grid: replicated edges, one-hot background where the crop cut air away
    padded = torch.nn.functional.pad(probs[None], (1, 1, 1, 1, 1, 1), mode="replicate")[0]
    for a in range(3):
        for side, index in ((0, 0), (1, -1)):
            if cropped[2 * a + side]:
                plane = (slice(None),) + (slice(None),) * a + (index,)
                padded[plane] = 0.0
                padded[(0,) + plane[1:]] = 1.0
    flat = padded.reshape(n_classes, -1).numpy()
    cells = np.flatnonzero(mixed)
    corner = np.unravel_index(cells, size)
    corner_index = [
        np.ravel_multi_index([np.minimum(corner[a] + c[a], size[a] - 1) for a in range(3)], size) for c in _CORNERS
    ]
    values = np.stack([flat[:, i].T for i in corner_index], 1).astype(np.float64)  # (cells, corners, classes)
    winners = np.stack([corner_labels[tuple(corner[a] + c[a] for a in range(3))] for c in _CORNERS], 1)
    in_s = np.zeros((cells.size, n_classes), dtype=bool)
    np.put_along_axis(in_s, winners.astype(np.int64), True, axis=1)
    bound = (values * in_s[:, None, :]).sum(2).min(1) / in_s.sum(1)
    candidate = in_s | (values.max(1) >= bound[:, None] - 1e-6)  # margin: float rounding
    count = candidate.sum(1)

    local = np.full(mixed.size, -1, dtype=np.int64)  # cell (flat, padded grid) -> row in ``cells``
    local[cells] = np.arange(cells.size)
    voxel_cell = local[np.ravel_multi_index(cell, size)]
    labels = np.empty(voxel_cell.size, dtype=np.uint8)
    voxel_count = count[voxel_cell]
    for m in np.unique(count):
        group = np.flatnonzero(count == m)
        classes = np.sort(np.where(candidate[group], np.arange(n_classes), n_classes), axis=1)[:, :m]
        # (corners, cells of the group, candidates): one contiguous gather per corner
        group_values = np.take_along_axis(values[group], classes[:, None, :], 2)
        group_values = np.ascontiguousarray(group_values.transpose(1, 0, 2))
        if m == 2:  # the first class wins where the interpolated difference of the two is >= 0
            group_values = group_values[:, :, :1] - group_values[:, :, 1:]
        row = np.full(cells.size, -1, dtype=np.int64)
        row[group] = np.arange(group.size)
        voxels = np.flatnonzero(voxel_count == m)
        voxel_row = row[voxel_cell[voxels]]
        # trilinear weights of the 8 corners: products of each axis' (1 - w, w)
        axis_weight = [(1.0 - wa, wa) for wa in (weight[a][voxels] for a in range(3))]
        plane_weight = {(c0, c1): axis_weight[0][c0] * axis_weight[1][c1] for c0 in (0, 1) for c1 in (0, 1)}
        acc = np.zeros((voxels.size, group_values.shape[2]))
        for c, (c0, c1, c2) in enumerate(_CORNERS):
            acc += group_values[c][voxel_row] * (plane_weight[c0, c1] * axis_weight[2][c2])[:, None]
        if m == 2:
            labels[voxels] = np.where(acc[:, 0] >= 0, classes[voxel_row, 0], classes[voxel_row, 1])
        else:
            labels[voxels] = classes[voxel_row, acc.argmax(1)]
    return labels


def check_dicom_series(folder: Path) -> list[Path]:
    """The DICOM files of a folder that holds exactly one series; an error naming the folder otherwise."""
    import pydicom

    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    series: dict[str, int] = {}
    usable = []
    for f in files:
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - non-DICOM files in the folder are skipped
            continue
        uid = str(getattr(ds, "SeriesInstanceUID", "unknown"))
        series[uid] = series.get(uid, 0) + 1
        usable.append(f)
    if not usable:
        raise InputError(f"{folder}: no DICOM files found; pass a folder of one DICOM series or a NIfTI file")
    if len(series) > 1:
        detail = ", ".join(f"{uid} ({n} files)" for uid, n in series.items())
        raise InputError(f"{folder}: holds {len(series)} DICOM series ({detail}); put each series in its own folder")
    return usable


def _one_line(err: BaseException) -> str:
    """An exception as one line: its type and the first line of its message (MONAI's reader errors append the
    traceback of every reader they tried)."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0].strip() if lines else ''}".rstrip(": ")


def load_scan(source: str | Path | list[str | Path]) -> MetaTensor:
    """Load a scan channel-first in its file's voxel order, with its affine (RAS) in the metadata."""
    if isinstance(source, (list, tuple)):
        paths = [str(p) for p in source]
        for p in paths:
            if not Path(p).is_file():
                raise InputError(f"{p}: file not found")
        reader = "NibabelReader"
        target: str | list[str] = paths
    else:
        path = Path(source)
        if path.is_dir():
            check_dicom_series(path)
            reader, target = "PydicomReader", str(path)
        elif path.is_file():
            reader, target = "NibabelReader", str(path)
        else:
            raise InputError(f"{path}: not found")
    integers = False
    try:
        img = _load_nifti_3d(target) if reader == "NibabelReader" and isinstance(target, str) else None
        if img is None:
            img = mt.LoadImage(reader=reader, ensure_channel_first=True, image_only=True)(target)
        else:
            img, integers = img
    except Exception as err:  # readers raise many types for corrupt or truncated files
        reason = _one_line(err)
        if reader == "NibabelReader" and isinstance(target, str):
            try:  # nibabel's own reason, instead of MONAI's list of every reader it tried
                nib.load(target).header  # noqa: B018
            except Exception as nib_err:  # noqa: BLE001 - the reason is reported, not handled
                reason = f"not a NIfTI file nibabel can open: {_one_line(nib_err)}"
        raise InputError(f"{source}: cannot read the scan ({reason})") from err
    if img.ndim != 4:
        raise InputError(f"{source}: expected a 3D scan (optionally with channels), got shape {tuple(img.shape)}")
    if not integers and not torch.isfinite(img).all():
        raise InputError(f"{source}: contains NaN or infinite intensities; fix or re-export the scan")
    return img


def _load_nifti_3d(path: str) -> tuple[MetaTensor, bool] | None:
    """A 3D NIfTI file as MONAI's ``LoadImage(NibabelReader, ensure_channel_first=True)`` returns it (float32,
    channel first, RAS affine and the same metadata keys), read in one piece: the file decompressed in one call
    and the voxels converted once, instead of streaming decompression and MONAI's intermediate copies (about
    half of a small network's prediction time; tests/test_predict.py checks equality with LoadImage).
    None for anything else (4D files, other formats): those go through MONAI's reader."""
    import gzip

    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    try:
        img = nib.Nifti1Image.from_bytes(raw)
    except Exception:  # noqa: BLE001 - NIfTI-2, Analyze...: MONAI's reader knows them
        return None
    if len(img.shape) != 3:
        return None
    data = np.asanyarray(img.dataobj)
    integers = np.issubdtype(data.dtype, np.integer)
    affine = torch.as_tensor(img.affine, dtype=torch.float64)
    # NibabelReader's metadata: the header's numeric fields (MONAI leaves the text fields out of a MetaTensor)
    meta = {key: img.header[key] for key in img.header if img.header[key].dtype.kind not in "SU"}
    meta |= {
        "original_pixdim": img.header["pixdim"],
        "as_closest_canonical": False,
        "filename_or_obj": path,
        "original_affine": img.affine,
        "affine": affine.clone(),
        "spatial_shape": np.asarray(img.shape),
        "original_channel_dim": float("nan"),
        "space": "RAS",
    }
    data = np.ascontiguousarray(data)
    if not data.flags.writeable:
        data = data.copy()
    tensor = torch.from_numpy(data).to(torch.float32)[None]  # torch's cast uses every thread
    return MetaTensor(tensor, affine=affine, meta=meta), integers


@dataclass
class Predictor:
    """Segment scans with a trained network and a preprocessing recipe.

    Args:
        model: a module returning logits (B, C, *spatial).
        recipe: the preprocessing recipe the model was trained with.
        roi_size: sliding-window size (the training patch size).
        sw_batch_size: windows per forward pass.
        overlap: sliding-window overlap.
        device: where the network runs.
        tta: average each window's output over all mirrorings of the axes the recipe's training mirrored
            (``recipe.mirror_axes``: 8 passes in 3D); refused for a recipe trained without mirroring, whose
            network never saw a mirrored body (measured: mean Dice 0.43 -> 0.05 on the synthetic phantoms).
        blend: what mirroring averages and the windows blend: ``logits`` (nnU-Net v2, MONAI) or ``probabilities``
            (softmax per window: nnU-Net v1).
        sw_tiling: where the windows go and how they are weighted: ``monai`` (``sliding_window_inference``) or
            ``nnunet`` (:func:`nnunet_sliding_window`: nnU-Net's window positions, padding and gaussian).
        in_channels: channels the model expects (checked per scan).
        amp: bfloat16 autocast on CUDA.
        precision: ``auto`` (bf16 autocast on CUDA when ``amp``, fp32 on CPU), ``fp32`` or ``bf16`` (autocast on
            any device: about 2x faster on CPUs with native bf16, e.g. AMX/AVX512-BF16; labels can differ from
            fp32 at near-ties, measured in benchmarks/bench_predict.py).
        skip_constant_windows: reuse the network's output for windows of one constant value (air, padding)
            instead of running it again (the same numbers; see :meth:`_network`). Off by default: after the
            recipes' foreground crop few windows are constant, and the saving was within the noise
            (benchmarks/bench_predict.py: 0.91x and 1.05x in two runs).
        interpolation: how labels reach the input grid: ``linear`` (class probabilities interpolated, as
            nnU-Net exports) or ``nearest`` (argmax on the network's grid, nearest label: MONAI's Invertd).
    """

    model: torch.nn.Module
    recipe: Recipe
    roi_size: tuple[int, ...]
    sw_batch_size: int = 4
    overlap: float = 0.5
    device: str | torch.device = "cpu"
    tta: bool = False
    in_channels: int | None = None
    amp: bool = True
    label_names: dict[int, str] = field(default_factory=dict)
    interpolation: str = "linear"
    precision: str = "auto"
    sw_mode: str = "gaussian"
    skip_constant_windows: bool = False
    blend: str = "logits"
    sw_tiling: str = "monai"

    @classmethod
    @quiet_warnings
    def from_card(cls, model: torch.nn.Module, card: ModelCard, **overrides) -> Predictor:
        """A predictor with the card's recipe, window, overlap, window batch, channels and labels; ``overrides``
        replace any of them (``overlap``, ``sw_batch_size``, ``device``, ``tta``, ``precision``...)."""
        settings = {
            "recipe": card.recipe,
            "roi_size": card.roi_size,
            "sw_batch_size": card.sw_batch_size,
            "overlap": card.sw_overlap,
            "sw_mode": card.sw_mode,
            "tta": card.tta,
            "blend": card.blend,
            "sw_tiling": card.sw_tiling,
            "interpolation": card.interpolation,
            "in_channels": card.in_channels,
            "label_names": {i: n for i, n in (card.labels or {}).items() if i != 0},
        }
        settings.update({k: v for k, v in overrides.items() if v is not None})
        return cls(model, **settings)

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16", "auto"):
            raise ValueError(f"precision must be fp32, bf16 or auto; got {self.precision!r}")
        if self.blend not in BLENDS:
            raise ValueError(f"blend must be one of {BLENDS}; got {self.blend!r}")
        if self.sw_tiling not in TILINGS:
            raise ValueError(f"sw_tiling must be one of {TILINGS}; got {self.sw_tiling!r}")
        if self.tta and not self.recipe.mirror_axes:
            raise ValueError(
                f"tta: recipe {self.recipe.name} trains without mirroring (flip_prob {self.recipe.flip_prob}), so "
                "mirrored test-time passes would average in predictions the network never learned (left and right "
                "organs swap); predict without --tta, or train with a mirroring recipe"
            )
        self.model = self.model.to(self.device).eval()
        if torch.device(self.device).type == "cuda":
            torch.backends.cudnn.benchmark = True  # one window shape per model: autotuned once, then reused
        self._constant_outputs: dict = {}
        self._stitch_on_cpu = False
        self.skipped_windows = 0
        self.preprocess = mt.Compose(deterministic_transforms(self.recipe, keys=("image",), load=False))

    @property
    def autocast_bf16(self) -> bool:
        """Whether the network runs under bf16 autocast on this device."""
        if self.precision == "auto":
            return self.amp and torch.device(self.device).type == "cuda"
        return self.precision == "bf16"

    def _window_output(self, windows: torch.Tensor) -> torch.Tensor:
        """One batch of windows through the network in fp32: logits, or softmax with ``blend="probabilities"``; with
        ``tta`` the mean over the windows and their mirrorings (each output flipped back), as nnU-Net averages
        inside each window."""

        def forward(x: torch.Tensor) -> torch.Tensor:
            out = self.model(x).float()
            return torch.softmax(out, dim=1) if self.blend == "probabilities" else out

        total = forward(windows)
        if not self.tta:
            return total
        spatial = [2 + axis for axis in self.recipe.mirror_axes if 2 + axis < windows.ndim]
        flips = [c for r in range(1, len(spatial) + 1) for c in itertools.combinations(spatial, r)]
        for dims in flips:
            total += forward(torch.flip(windows, dims)).flip(dims)
        return total / (len(flips) + 1)

    def _network(self, windows: torch.Tensor) -> torch.Tensor:
        """The network on a batch of windows, in fp32 for stitching; a window of one constant value (air around
        the body, padding) gets the network's output for that constant window, computed once and reused: the
        same numbers (a window's output depends only on its content), without the forward pass."""
        if not self.skip_constant_windows:
            return self._window_output(windows)
        flat = windows.flatten(1)
        constant = (flat == flat[:, :1]).all(1)
        if not bool(constant.any()):
            return self._window_output(windows)
        out = torch.empty((0,), device=windows.device)
        todo = (~constant).nonzero().flatten()
        if len(todo):
            computed = self._window_output(windows[todo])
            out = computed.new_empty((windows.shape[0], *computed.shape[1:]))
            out[todo] = computed
        for i in constant.nonzero().flatten().tolist():
            key = (float(flat[i, 0]), tuple(windows.shape[1:]), self.autocast_bf16)
            if key not in self._constant_outputs:
                self._constant_outputs[key] = self._window_output(windows[i : i + 1])
            cached = self._constant_outputs[key]
            if out.numel() == 0:
                out = cached.new_empty((windows.shape[0], *cached.shape[1:]))
            out[i] = cached[0]
        self.skipped_windows += int(constant.sum())
        return out

    def _sliding(self, x: torch.Tensor, stitch_device: str | None) -> torch.Tensor:
        kind = torch.device(self.device).type
        extra = {} if stitch_device is None else {"sw_device": self.device, "device": stitch_device}
        with torch.autocast(kind, dtype=torch.bfloat16, enabled=self.autocast_bf16):
            if self.sw_tiling == "nnunet":
                return nnunet_sliding_window(
                    x,
                    tuple(self.roi_size),
                    self._network,
                    overlap=self.overlap,
                    gaussian=self.sw_mode == "gaussian",
                    batch_size=self.sw_batch_size,
                    device=self.device,
                    stitch_device=stitch_device,
                )
            return sliding_window_inference(
                x, self.roi_size, self.sw_batch_size, self._network, overlap=self.overlap, mode=self.sw_mode, **extra
            ).float()

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """Sliding-window logits; when the whole-volume output does not fit beside the network, the windows stay on
        the accelerator and the stitched output lives in CPU memory, for this and every later pass (TTA)."""
        return with_cpu_stitching_fallback(
            self, lambda stitch_device: self._sliding(x, stitch_device), self.device, f"a {tuple(x.shape[2:])} volume"
        )

    def check_channels(self, image: MetaTensor) -> None:
        """A clear error when a scan's channel count differs from the model's."""
        if self.in_channels is not None and image.shape[0] != self.in_channels:
            raise InputError(
                f"{image.meta.get('filename_or_obj', 'scan')}: has {image.shape[0]} channel(s), the model expects "
                f"{self.in_channels}"
            )

    @quiet_warnings
    def probabilities(self, image: MetaTensor, modality: str = "CT") -> MetaTensor:
        """Class probabilities on the preprocessed grid (C, *spatial), with that grid's affine."""
        self.check_channels(image)
        return self.probabilities_from_preprocessed(self.preprocess({"image": image, "modality": modality}))

    @torch.inference_mode()
    def probabilities_from_preprocessed(self, data: dict, image: MetaTensor | None = None) -> MetaTensor:
        """Probabilities for the output of :attr:`preprocess` (``image`` is only used for its channel count)."""
        if image is not None:
            self.check_channels(image)
        x = data["image"].unsqueeze(0).to(self.device)
        blended = self._logits(x)  # mirroring (tta) runs inside each window: self._window_output
        probs = torch.softmax(blended, dim=1) if self.blend == "logits" else blended
        out = MetaTensor(probs[0].cpu(), affine=data["image"].affine)
        out.meta["cropped"] = cropped_faces(data["image"])
        return out

    @quiet_warnings
    def to_input_grid(
        self, image: MetaTensor, probs: MetaTensor, with_probabilities: bool = True
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Labels (and probabilities) resampled onto ``image``'s own voxel grid, with its affine.

        Without probabilities the labels come from :func:`labels_on_input_grid`: the same labels, with only
        the voxels at label boundaries interpolated.
        """
        affine = image.affine.numpy() if isinstance(image.affine, torch.Tensor) else np.asarray(image.affine)
        if not with_probabilities:
            return labels_on_input_grid(probs, affine, tuple(image.shape[1:]), self.interpolation), affine, None
        on_input = resample_to_input_grid(probs, affine, tuple(image.shape[1:]))
        return on_input.argmax(0).numpy().astype(np.uint8), affine, on_input.numpy()

    @quiet_warnings
    def predict_case(
        self, source, modality: str = "CT", with_probabilities: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Labels of one scan in the scan's own voxel order, the scan's affine, and (optionally) probabilities."""
        image = load_scan(source)
        return self.to_input_grid(image, self.probabilities(image, modality), with_probabilities)

    @quiet_warnings
    def predict_to_file(self, source, out_path: str | Path, modality: str = "CT") -> Path:
        """Predict one scan and write the label NIfTI (atomically) on the scan's grid and header."""
        labels, affine, _ = self.predict_case(source, modality)
        return save_nifti(labels, affine, out_path, header=nifti_header(source))


def nifti_header(source) -> nib.Nifti1Header | None:
    """The header of a NIfTI input (first channel file), to copy into its prediction; None for DICOM."""
    first = source[0] if isinstance(source, (list, tuple)) else source
    if Path(first).is_file() and str(first).endswith((".nii", ".nii.gz")):
        return nib.load(str(first)).header.copy()
    return None
