"""Whole-scan inference: the recipe's preprocessing, gaussian sliding window, and the prediction
resampled back onto the input's own voxel grid (same shape, same affine), written as NIfTI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai import transforms as mt
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference

from amos_zoo.data.recipes import Recipe, deterministic_transforms
from amos_zoo.io import save_nifti

__all__ = ["Predictor", "resample_to_input_grid"]


def resample_to_input_grid(scores: MetaTensor, affine: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    """Resample per-class scores (C, *spatial) from the preprocessed grid onto the input grid.

    The output has exactly ``shape`` and lives on ``affine``: the prediction is never a voxel short.
    """
    resampler = mt.SpatialResample(mode="bilinear", padding_mode="zeros", dtype=torch.float32)
    out = resampler(scores, dst_affine=torch.as_tensor(affine, dtype=torch.float64), spatial_size=tuple(shape))
    if tuple(out.shape[1:]) != tuple(shape):
        raise RuntimeError(f"resampling returned {tuple(out.shape[1:])}, expected {tuple(shape)}")
    return out


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
    """

    model: torch.nn.Module
    recipe: Recipe
    roi_size: tuple[int, ...]
    sw_batch_size: int = 4
    overlap: float = 0.5
    device: str | torch.device = "cpu"

    def __post_init__(self) -> None:
        self.model = self.model.to(self.device).eval()
        self.preprocess = mt.Compose(deterministic_transforms(self.recipe, keys=("image",)))

    @torch.inference_mode()
    def predict_case(self, image: str | Path | list[str], modality: str = "CT") -> tuple[np.ndarray, np.ndarray]:
        """Label volume of one scan in the scan's own voxel order, and the scan's affine."""
        first = image[0] if isinstance(image, (list, tuple)) else image
        ref = nib.load(str(first))
        shape, affine = ref.shape[:3], ref.affine
        data = self.preprocess({"image": str(image) if not isinstance(image, list) else image, "modality": modality})
        x = data["image"].unsqueeze(0).to(self.device)
        logits = sliding_window_inference(
            x, self.roi_size, self.sw_batch_size, self.model, overlap=self.overlap, mode="gaussian"
        )
        probs = torch.softmax(logits[0].float(), dim=0).cpu()
        scores = MetaTensor(probs, affine=data["image"].affine)
        on_input = resample_to_input_grid(scores, affine, shape)
        labels = on_input.argmax(0).numpy().astype(np.uint8)
        return labels, affine

    def predict_to_file(self, image: str | Path, out_path: str | Path, modality: str = "CT") -> Path:
        """Predict one scan and write the label NIfTI (atomically) with the scan's affine and header."""
        labels, affine = self.predict_case(image, modality)
        header = nib.load(str(image)).header.copy()
        return save_nifti(labels, affine, out_path, header=header)
