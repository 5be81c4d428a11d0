"""The MONAI transforms of a recipe: per-modality normalisation, the deterministic chain (instantiated from
:func:`amos_zoo.data.recipes.preprocessing_spec`) and the random training chain (patches and augmentation)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai import transforms as mt
from monai.config import KeysCollection

from amos_zoo.data.recipes import Recipe, preprocessing_spec

__all__ = ["ModalityNormalized", "deterministic_transforms", "train_transforms", "positive", "nonzero"]


def positive(x: torch.Tensor) -> torch.Tensor:
    """Foreground of a normalised image: voxels above 0 (the ``normalized`` crop's ``select_fn``)."""
    return x > 0


def nonzero(x: torch.Tensor) -> torch.Tensor:
    """Non-zero voxels of a raw image (the ``nonzero`` crop's ``select_fn``, as nnU-Net crops)."""
    return x != 0


class ModalityNormalized(mt.MapTransform):
    """Intensity normalisation chosen per case by its ``modality`` entry (the recipe's settings).

    CT (``ct_normalization``): ``window`` clips to the HU window and scales to [0, 1]; ``nnunet`` clips to the
    training foreground's percentiles and z-scores with its mean and std (``intensity_stats`` = lower, upper, mean,
    std; nnU-Net's ``CTNormalization``). MRI (``mri_normalization``): ``percentile`` rescales between percentiles of
    the case's non-zero voxels to [0, 1]; ``zscore`` subtracts the case's mean and divides by its std (nnU-Net's
    ``ZScoreNormalization`` without mask); ``ct`` applies the CT normalisation (what the AMOS fork did in Task 2).
    """

    def __init__(
        self,
        keys: KeysCollection,
        ct_window: Sequence[float] = (-175.0, 250.0),
        mri_percentiles: Sequence[float] = (0.5, 99.5),
        modality_key: str = "modality",
        ct_normalization: str = "window",
        mri_normalization: str = "percentile",
        intensity_stats: Sequence[float] | None = None,
    ) -> None:
        super().__init__(keys)
        self.ct_window = tuple(float(v) for v in ct_window)
        self.mri_percentiles = tuple(mri_percentiles)
        self.modality_key = modality_key
        self.ct_normalization = ct_normalization
        self.mri_normalization = mri_normalization
        self.intensity_stats = tuple(float(v) for v in intensity_stats) if intensity_stats is not None else None
        if ct_normalization == "nnunet" and self.intensity_stats is None:
            raise ValueError(
                "nnU-Net CT normalisation needs the training foreground's intensity statistics: run "
                "`amos-zoo plan --data DIR --protocol nnunet-v2` (the data module does it before training)"
            )

    def _ct(self, img: torch.Tensor) -> torch.Tensor:
        if self.ct_normalization == "nnunet":
            lower, upper, mean, std = self.intensity_stats
            return (img.clamp(lower, upper) - mean) / max(std, 1e-8)
        lo, hi = self.ct_window
        return ((img - lo) / (hi - lo)).clamp(0.0, 1.0)

    def _percentile(self, img: torch.Tensor) -> torch.Tensor:
        out = img.clone()
        for c in range(img.shape[0]):
            chan = img[c]
            values = chan[chan > 0]
            if values.numel() == 0:
                continue
            lo, hi = torch.quantile(
                values.float()[:: max(1, values.numel() // 1_000_000)],
                torch.tensor([p / 100 for p in self.mri_percentiles]),
            )
            out[c] = ((chan - lo) / max(float(hi - lo), 1e-6)).clamp(0.0, 1.0)
        return out

    @staticmethod
    def _zscore(img: torch.Tensor) -> torch.Tensor:
        out = img.clone()
        for c in range(img.shape[0]):
            chan = img[c].double()
            out[c] = ((chan - chan.mean()) / max(float(chan.std(unbiased=False)), 1e-8)).to(img.dtype)
        return out

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        modality = str(d.get(self.modality_key, "CT")).upper()
        if modality not in ("CT", "MRI"):
            raise ValueError(f"case {d.get('case_id', '?')}: modality must be CT or MRI, got {modality!r}")
        for key in self.key_iterator(d):
            img = d[key].float() if isinstance(d[key], torch.Tensor) else torch.as_tensor(d[key]).float()
            if modality == "CT" or self.mri_normalization == "ct":
                d[key] = self._ct(img)
            elif self.mri_normalization == "zscore":
                d[key] = self._zscore(img)
            else:
                d[key] = self._percentile(img)
        return d


def deterministic_transforms(recipe: Recipe, keys: Sequence[str] = ("image", "label"), load: bool = True) -> list:
    """The recipe's deterministic transforms (:func:`preprocessing_spec`, instantiated): cacheable."""
    return [spec.instantiate() for spec in preprocessing_spec(recipe, keys, load)]


def train_transforms(recipe: Recipe) -> list:
    """Random patch sampling and augmentation of the recipe (after the cached part)."""
    keys = ["image", "label"]
    chain: list = [
        mt.EnsureTyped(["label"], dtype=torch.float32, track_meta=True),
        mt.SpatialPadd(keys, spatial_size=recipe.patch_size),
        mt.RandCropByPosNegLabeld(
            keys,
            label_key="label",
            spatial_size=recipe.patch_size,
            pos=recipe.pos,
            neg=recipe.neg,
            num_samples=recipe.num_samples,
            image_key="image",
            image_threshold=0,
        ),
    ]
    if recipe.flip_prob > 0:
        chain += [mt.RandFlipd(keys, prob=recipe.flip_prob, spatial_axis=axis) for axis in range(3)]
    if recipe.rot90_prob > 0 and recipe.patch_size[0] == recipe.patch_size[1]:  # keep batch shapes equal
        chain.append(mt.RandRotate90d(keys, prob=recipe.rot90_prob, max_k=3, spatial_axes=(0, 1)))
    if recipe.intensity_prob > 0:
        chain += [
            mt.RandScaleIntensityd("image", factors=recipe.intensity_factor, prob=recipe.intensity_prob),
            mt.RandShiftIntensityd("image", offsets=recipe.intensity_factor, prob=recipe.intensity_prob),
        ]
    return chain
