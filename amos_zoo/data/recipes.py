"""Named preprocessing recipes and the MONAI transform chains built from them.

A recipe is data: target spacing, intensity normalisation per modality, patch size, sampling and
augmentation. The deterministic part (load, RAS orientation, resampling, normalisation, foreground
crop) is cached to disk once; the random part (patch sampling, augmentation) runs every epoch.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from monai import transforms as mt
from monai.config import KeysCollection

__all__ = ["Recipe", "RECIPES", "get_recipe", "ModalityNormalized", "deterministic_transforms", "train_transforms"]


@dataclass(frozen=True)
class Recipe:
    """Preprocessing, sampling and augmentation settings of a training recipe (spatial order x, y, z)."""

    name: str
    spacing: tuple[float, float, float]
    patch_size: tuple[int, int, int]
    ct_window: tuple[float, float] = (-175.0, 250.0)
    mri_percentiles: tuple[float, float] = (0.5, 99.5)
    crop_foreground: bool = True
    num_samples: int = 4
    pos: float = 1.0
    neg: float = 1.0
    flip_prob: float = 0.2
    rot90_prob: float = 0.2
    intensity_prob: float = 0.1
    intensity_factor: float = 0.1
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain dictionary (stored in checkpoints and run folders)."""
        return asdict(self)


RECIPES: dict[str, Recipe] = {
    "btcv": Recipe(
        "btcv",
        spacing=(1.5, 1.5, 2.0),
        patch_size=(96, 96, 96),
        source="research-contributions Swin-UNETR/UNETR BTCV recipe: RAS, 1.5x1.5x2.0 mm, CT window -175..250 HU "
        "-> [0, 1], crop foreground, pos/neg 1/1 crops of 96^3 x 4, flips p 0.2, rot90 p 0.2, intensity 0.1 p 0.1",
    ),
    "amos-nnunet": Recipe(
        "amos-nnunet",
        spacing=(1.5, 1.5, 2.0),
        patch_size=(160, 160, 64),
        num_samples=2,
        pos=1.0,
        neg=2.0,
        source="AMOS authors' nnU-Net v1.7 fork: CT and CT+MR patches 64x160x160 (z, y, x); Adam 3e-4. Spacing, "
        "sampling ratio (nnU-Net oversamples foreground 1/3) and augmentation follow this project's pipeline",
    ),
    "amos-mr-nnunet": Recipe(
        "amos-mr-nnunet",
        spacing=(1.5, 1.5, 2.0),
        patch_size=(224, 160, 48),
        num_samples=2,
        pos=1.0,
        neg=2.0,
        source="AMOS authors' nnU-Net v1.7 fork: MR patches 48x160x224 (z, y, x)",
    ),
    "quickstart": Recipe(
        "quickstart",
        spacing=(3.5, 3.5, 5.0),
        patch_size=(64, 64, 32),
        num_samples=2,
        flip_prob=0.0,
        rot90_prob=0.0,
        source="amos-zoo synthetic phantoms: their native resolution, patches that fit a CPU. Flips and rotations "
        "are off: left and right organs (kidneys, adrenal glands) are told apart by side",
    ),
    "tiny": Recipe(
        "tiny",
        spacing=(7.0, 7.0, 10.0),
        patch_size=(32, 32, 16),
        num_samples=1,
        flip_prob=0.0,
        rot90_prob=0.0,
        source="amos-zoo test recipe: coarse grid for fast CPU tests",
    ),
}


def get_recipe(name: str | Recipe, **overrides: Any) -> Recipe:
    """A recipe by name, with fields replaced by non-None ``overrides``."""
    recipe = name if isinstance(name, Recipe) else RECIPES.get(name)
    if recipe is None:
        raise KeyError(f"unknown recipe {name!r}; available: {', '.join(RECIPES)}")
    changes = {k: (tuple(v) if isinstance(v, list) else v) for k, v in overrides.items() if v is not None}
    return replace(recipe, **changes) if changes else recipe


def _positive(x: torch.Tensor) -> torch.Tensor:
    return x > 0


class ModalityNormalized(mt.MapTransform):
    """Intensity normalisation chosen per case by its ``modality`` entry.

    CT: clip to the HU window and scale to [0, 1]. MRI: the window is the [lower, upper] percentile of
    the non-zero voxels of the case, scaled to [0, 1] and clipped. An MRI is never CT-windowed.
    """

    def __init__(
        self,
        keys: KeysCollection,
        ct_window: Sequence[float],
        mri_percentiles: Sequence[float],
        modality_key: str = "modality",
    ) -> None:
        super().__init__(keys)
        self.ct = mt.ScaleIntensityRange(ct_window[0], ct_window[1], 0.0, 1.0, clip=True)
        self.mri_percentiles = tuple(mri_percentiles)
        self.modality_key = modality_key

    def _mri(self, img: torch.Tensor) -> torch.Tensor:
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

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        modality = str(d.get(self.modality_key, "CT")).upper()
        if modality not in ("CT", "MRI"):
            raise ValueError(f"case {d.get('case_id', '?')}: modality must be CT or MRI, got {modality!r}")
        for key in self.key_iterator(d):
            img = d[key].float() if isinstance(d[key], torch.Tensor) else torch.as_tensor(d[key]).float()
            d[key] = self.ct(img) if modality == "CT" else self._mri(img)
        return d


def deterministic_transforms(recipe: Recipe, keys: Sequence[str] = ("image", "label"), load: bool = True) -> list:
    """Load (NIfTI via nibabel), orient to RAS, resample, normalise and crop: cacheable.

    With ``load=False`` the chain starts from already loaded channel-first MetaTensors.
    """
    keys = list(keys)
    has_label = "label" in keys
    modes = ["bilinear", "nearest"] if has_label else ["bilinear"]
    chain: list = (
        [mt.LoadImaged(keys, reader="NibabelReader", ensure_channel_first=True, image_only=True)] if load else []
    )
    chain += [
        mt.EnsureTyped(keys, dtype=torch.float32, track_meta=True),
        mt.Orientationd(keys, axcodes="RAS"),
        mt.Spacingd(keys, pixdim=recipe.spacing, mode=modes),
        ModalityNormalized(["image"], recipe.ct_window, recipe.mri_percentiles),
    ]
    if recipe.crop_foreground:
        chain.append(mt.CropForegroundd(keys, source_key="image", select_fn=_positive, allow_smaller=True))
    if has_label:
        chain.append(mt.EnsureTyped(["label"], dtype=torch.uint8, track_meta=True))
    return chain


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
