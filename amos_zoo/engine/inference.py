"""Whole-scan inference: the recipe's preprocessing, gaussian sliding window (optional mirror TTA),
and the prediction resampled back onto the input's own voxel grid (same shape, same affine).

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

from amos_zoo.data.recipes import Recipe, deterministic_transforms
from amos_zoo.io import save_nifti

__all__ = [
    "Predictor",
    "resample_to_input_grid",
    "load_scan",
    "nifti_header",
    "InputError",
    "check_dicom_series",
]


class InputError(ValueError):
    """An input scan cannot be used; the message names the file and the problem."""


def resample_to_input_grid(
    scores: MetaTensor, affine: np.ndarray, shape: tuple[int, ...], background_fill: bool = True
) -> torch.Tensor:
    """Resample class probabilities (C, *spatial) from the preprocessed grid onto the input grid.

    The output has exactly ``shape`` and lives on ``affine``: the prediction is never a voxel short.
    Outside the preprocessed region (the foreground crop: air) the missing probability mass goes to
    class 0 (background), so every voxel's probabilities sum to 1.
    """
    resampler = mt.SpatialResample(mode="bilinear", padding_mode="zeros", dtype=torch.float32)
    out = resampler(scores, dst_affine=torch.as_tensor(affine, dtype=torch.float64), spatial_size=tuple(shape))
    if tuple(out.shape[1:]) != tuple(shape):
        raise RuntimeError(f"resampling returned {tuple(out.shape[1:])}, expected {tuple(shape)}")
    if background_fill:
        out[0] += (1.0 - out.sum(0)).clamp_min(0.0)
    return out


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
    try:
        img = mt.LoadImage(reader=reader, ensure_channel_first=True, image_only=True)(target)
    except Exception as err:  # readers raise many types for corrupt or truncated files
        raise InputError(f"{source}: cannot read the scan ({type(err).__name__}: {err})") from err
    if img.ndim != 4:
        raise InputError(f"{source}: expected a 3D scan (optionally with channels), got shape {tuple(img.shape)}")
    if not torch.isfinite(img).all():
        raise InputError(f"{source}: contains NaN or infinite intensities; fix or re-export the scan")
    return img


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
        tta: average the softmax over all mirrorings of the spatial axes (8 passes in 3D).
        in_channels: channels the model expects (checked per scan).
        amp: bfloat16 autocast on CUDA.
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

    def __post_init__(self) -> None:
        self.model = self.model.to(self.device).eval()
        self.preprocess = mt.Compose(deterministic_transforms(self.recipe, keys=("image",), load=False))

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        use_amp = self.amp and torch.device(self.device).type == "cuda"
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
            return sliding_window_inference(
                x, self.roi_size, self.sw_batch_size, self.model, overlap=self.overlap, mode="gaussian"
            ).float()

    def check_channels(self, image: MetaTensor) -> None:
        """A clear error when a scan's channel count differs from the model's."""
        if self.in_channels is not None and image.shape[0] != self.in_channels:
            raise InputError(
                f"{image.meta.get('filename_or_obj', 'scan')}: has {image.shape[0]} channel(s), the model expects "
                f"{self.in_channels}"
            )

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
        probs = torch.softmax(self._logits(x), dim=1)
        if self.tta:
            spatial = list(range(2, x.ndim))
            flips = [c for r in range(1, len(spatial) + 1) for c in itertools.combinations(spatial, r)]
            for dims in flips:
                probs += torch.softmax(self._logits(torch.flip(x, dims)), dim=1).flip(dims)
            probs /= len(flips) + 1
        return MetaTensor(probs[0].cpu(), affine=data["image"].affine)

    def to_input_grid(self, image: MetaTensor, probs: MetaTensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Labels and probabilities resampled onto ``image``'s own voxel grid, with its affine."""
        affine = image.affine.numpy() if isinstance(image.affine, torch.Tensor) else np.asarray(image.affine)
        on_input = resample_to_input_grid(probs, affine, tuple(image.shape[1:]))
        return on_input.argmax(0).numpy().astype(np.uint8), affine, on_input.numpy()

    def predict_case(self, source, modality: str = "CT") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Labels of one scan in the scan's own voxel order, the scan's affine, and the probabilities."""
        image = load_scan(source)
        return self.to_input_grid(image, self.probabilities(image, modality))

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
