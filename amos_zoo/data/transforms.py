"""The MONAI transforms of a recipe: per-modality normalisation, the deterministic chain (instantiated from
:func:`amos_zoo.data.recipes.preprocessing_spec`) and the random training chain (patches and augmentation)."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai import transforms as mt
from monai.config import KeysCollection

from amos_zoo.data.recipes import Recipe, preprocessing_spec

__all__ = [
    "ModalityNormalized",
    "ClassLocationsd",
    "OversampledCropd",
    "deterministic_transforms",
    "train_transforms",
    "positive",
    "nonzero",
]


def positive(x: torch.Tensor) -> torch.Tensor:
    """Foreground of a normalised image: voxels above 0 (the ``normalized`` crop's ``select_fn``)."""
    return x > 0


def nonzero(x: torch.Tensor) -> torch.Tensor:
    """Non-zero voxels of a raw image (the ``nonzero`` crop's ``select_fn``, as nnU-Net crops)."""
    return x != 0


class ModalityNormalized(mt.MapTransform):
    """Intensity normalisation chosen per case by its ``modality`` entry (the recipe's settings).

    CT (``ct_normalization``): ``window`` clips to the HU window and scales to [0, 1]; ``nnunet`` clips to the
    training foreground's percentiles and z-scores with its mean and std (``intensity_stats`` = per channel lower,
    upper, mean, std; nnU-Net's ``CTNormalization``); ``zscore`` as an MRI's ``zscore``.
    MRI (``mri_normalization``): ``percentile`` rescales between percentiles of the case's non-zero voxels to
    [0, 1]; ``zscore`` subtracts the case's mean and divides by its std (nnU-Net's ``ZScoreNormalization``, over the
    non-zero region with ``zscore_nonzero_mask``); ``ct`` applies the CT normalisation (the AMOS fork's Task 2).
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
        zscore_nonzero_mask: bool = False,
    ) -> None:
        super().__init__(keys)
        self.ct_window = tuple(float(v) for v in ct_window)
        self.mri_percentiles = tuple(mri_percentiles)
        self.modality_key = modality_key
        self.ct_normalization = ct_normalization
        self.mri_normalization = mri_normalization
        self.zscore_nonzero_mask = zscore_nonzero_mask
        if intensity_stats is not None and not isinstance(intensity_stats[0], Sequence):
            intensity_stats = [intensity_stats]  # one channel's (lower, upper, mean, std)
        self.intensity_stats = (
            [tuple(float(v) for v in s) for s in intensity_stats] if intensity_stats is not None else None
        )
        if ct_normalization == "nnunet" and self.intensity_stats is None:
            raise ValueError(
                "nnU-Net CT normalisation needs the training foreground's intensity statistics: run "
                "`amos-zoo plan --data DIR --protocol nnunet-v2` (the data module does it before training)"
            )

    def _ct(self, img: torch.Tensor) -> torch.Tensor:
        if self.ct_normalization == "nnunet":
            out = img.clone()
            for c in range(img.shape[0]):
                lower, upper, mean, std = self.intensity_stats[min(c, len(self.intensity_stats) - 1)]
                out[c] = (img[c].clamp(lower, upper) - mean) / max(std, 1e-8)
            return out
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

    def _zscore(self, img: torch.Tensor) -> torch.Tensor:
        """nnU-Net's ZScoreNormalization: per case and channel; with ``zscore_nonzero_mask`` only over the non-zero
        region (holes filled), the rest left as it is."""
        out = img.clone()
        if self.zscore_nonzero_mask:
            from scipy.ndimage import binary_fill_holes

            mask = torch.from_numpy(binary_fill_holes((img != 0).any(0).numpy()))
        for c in range(img.shape[0]):
            chan = img[c].double()
            values = chan[mask] if self.zscore_nonzero_mask else chan
            normalised = (chan - values.mean()) / max(float(values.std(unbiased=False)), 1e-8)
            out[c] = torch.where(mask, normalised, chan).to(img.dtype) if self.zscore_nonzero_mask else normalised
        return out

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        modality = str(d.get(self.modality_key, "CT")).upper()
        if modality not in ("CT", "MRI"):
            raise ValueError(f"case {d.get('case_id', '?')}: modality must be CT or MRI, got {modality!r}")
        for key in self.key_iterator(d):
            img = d[key].float() if isinstance(d[key], torch.Tensor) else torch.as_tensor(d[key]).float()
            if (modality == "CT" and self.ct_normalization == "zscore") or (
                modality != "CT" and self.mri_normalization == "zscore"
            ):
                d[key] = self._zscore(img)
            elif modality == "CT" or self.mri_normalization == "ct":
                d[key] = self._ct(img)
            else:
                d[key] = self._percentile(img)
        return d


def deterministic_transforms(recipe: Recipe, keys: Sequence[str] = ("image", "label"), load: bool = True) -> list:
    """The recipe's deterministic transforms (:func:`preprocessing_spec`, instantiated): cacheable."""
    return [spec.instantiate() for spec in preprocessing_spec(recipe, keys, load)]


class ClassLocationsd(mt.MapTransform):
    """Sample once, per case, where each class and the background are: cached with the case, so that a training
    crop costs an index lookup instead of a search of the whole volume.

    ``class_locations``: per foreground class up to ``per_class`` voxel coordinates (at least ``min_coverage`` of the
    class), drawn without replacement by ``numpy.random.RandomState(seed)``, as nnU-Net v2's preprocessing samples
    them (``_sample_foreground_locations``: 10,000 and 1 %). ``fg_indices`` / ``bg_indices``: up to ``max_indices``
    flat indices of foreground voxels and of background voxels inside the image (image > ``image_threshold``), the
    precomputed indices MONAI's RandCropByPosNegLabeld accepts.
    """

    def __init__(
        self,
        label_key: str = "label",
        image_key: str = "image",
        per_class: int = 10000,
        min_coverage: float = 0.01,
        max_indices: int = 100_000,
        image_threshold: float = 0.0,
        seed: int = 1234,
        class_locations: bool = True,
    ) -> None:
        super().__init__([label_key])
        self.label_key, self.image_key, self.class_locations = label_key, image_key, class_locations
        self.per_class, self.min_coverage, self.max_indices = per_class, min_coverage, max_indices
        self.image_threshold, self.seed = image_threshold, seed

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        import numpy as np

        d = dict(data)
        label = np.asarray(torch.as_tensor(d[self.label_key])[0])
        image = np.asarray(torch.as_tensor(d[self.image_key])).max(0)
        rng = np.random.RandomState(self.seed)
        locations = {}
        present = [int(v) for v in np.unique(label) if v > 0] if self.class_locations else []
        for c in present:
            coords = np.argwhere(label == c)
            n = max(min(self.per_class, len(coords)), int(np.ceil(len(coords) * self.min_coverage)))
            locations[c] = coords[rng.choice(len(coords), n, replace=False)].astype(np.int32)
        if self.class_locations:
            d["class_locations"] = locations
        flat_label, flat_image = label.reshape(-1), image.reshape(-1)
        for key, mask in (
            ("fg_indices", flat_label > 0),
            ("bg_indices", (flat_label == 0) & (flat_image > self.image_threshold)),
        ):
            idx = np.flatnonzero(mask)
            if len(idx) > self.max_indices:
                idx = np.sort(rng.choice(idx, self.max_indices, replace=False))
            d[key] = idx
        return d


class OversampledCropd(mt.Randomizable, mt.MapTransform):
    """nnU-Net's patch sampling: a random patch, or for the last ``oversample`` share of each batch a patch centred
    on a voxel of a random present class (``class_locations`` from :class:`ClassLocationsd`).

    As nnU-Net v2's data loader (``get_bbox``): a patch may reach beyond the volume by half the padding the patch
    needs, random lower corners are drawn uniformly, and sample ``i`` of a batch of ``B`` is forced to hold foreground
    when ``i >= round(B * (1 - oversample))``. The batch position comes from the sampler
    (:class:`~amos_zoo.data.resumable.EpochSeededDataset` calls :meth:`set_batch_slot`).
    """

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: Sequence[int],
        num_samples: int = 1,
        oversample: float = 0.33,
        batch_size: int = 2,
        label_key: str = "label",
    ) -> None:
        mt.MapTransform.__init__(self, keys)
        self.spatial_size = tuple(int(s) for s in spatial_size)
        self.num_samples, self.oversample, self.batch_size = num_samples, oversample, batch_size
        self.label_key = label_key
        self.slot = 0

    def set_batch_slot(self, slot: int, batch_size: int) -> None:
        """This volume's position in its batch (and the batch size)."""
        self.slot, self.batch_size = slot, batch_size

    def _lower(self, shape: Sequence[int], force_fg: bool, locations: dict) -> list[int]:
        pad = [max(p - s, 0) for p, s in zip(self.spatial_size, shape)]
        lbs = [-pad[a] // 2 for a in range(len(shape))]
        ubs = [shape[a] + pad[a] // 2 + pad[a] % 2 - self.spatial_size[a] for a in range(len(shape))]
        present = [c for c, locs in sorted(locations.items()) if len(locs)]
        if force_fg and present:
            locs = locations[present[self.R.randint(len(present))]]
            voxel = locs[self.R.randint(len(locs))]
            return [max(lbs[a], int(voxel[a]) - self.spatial_size[a] // 2) for a in range(len(shape))]
        return [int(self.R.randint(lbs[a], ubs[a] + 1)) for a in range(len(shape))]

    def _crop(self, x: torch.Tensor, lower: list[int]) -> torch.Tensor:
        x = torch.as_tensor(x)
        src, pads = [], []
        for a, (lo, size) in enumerate(zip(lower, self.spatial_size)):
            n = x.shape[a + 1]
            start, stop = max(lo, 0), min(lo + size, n)
            src.append(slice(start, stop))
            pads.append((start - lo, lo + size - stop))
        out = x[(slice(None), *src)]
        flat = [v for before_after in reversed(pads) for v in before_after]
        return torch.nn.functional.pad(out, flat) if any(flat) else out

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        d = dict(data)
        shape = torch.as_tensor(d[self.label_key]).shape[1:]
        locations = d.get("class_locations") or {}
        total = self.batch_size * self.num_samples
        samples = []
        for j in range(self.num_samples):
            position = self.slot * self.num_samples + j
            force_fg = not position < round(total * (1 - self.oversample))
            lower = self._lower(shape, force_fg, locations)
            sample = {k: v for k, v in d.items() if k not in ("class_locations", "fg_indices", "bg_indices")}
            for key in self.key_iterator(d):
                sample[key] = self._crop(d[key], lower)
            samples.append(sample)
        return samples


#: nnU-Net v2 nnUNetTrainer.get_training_transforms / v1 default_3D_augmentation_params, as MONAI transforms
_DEG = math.pi / 180.0


def _nnunet_augmentation(recipe: Recipe, keys: list[str]) -> list:
    """nnU-Net's augmentation (v2 or v1, the AMOS fork's) with MONAI transforms: the probabilities and ranges are
    nnU-Net's; the mechanisms are MONAI's (amos_zoo/protocols/*.yaml lists each)."""
    v2 = recipe.augmentation == "nnunet-v2"
    anisotropic = max(recipe.patch_size) / min(recipe.patch_size) > 3  # nnU-Net's dummy-2D rule (ANISO_THRESHOLD)
    angle = (180.0 if anisotropic else 30.0) if v2 else 15.0
    rotate = {"range_z": angle * _DEG} if anisotropic else {f"range_{a}": angle * _DEG for a in "xyz"}
    scale = (0.7, 1.4) if v2 else (0.85, 1.25)
    chain: list = []
    if not v2:  # v1 default: elastic deformation p 0.2 (alpha 0..900, sigma 9..13)
        chain.append(
            mt.Rand3DElasticd(
                keys,
                sigma_range=(9, 13),
                magnitude_range=(0, 900),
                prob=0.2,
                mode=("bilinear", "nearest"),
                padding_mode="zeros",
            )
        )
    chain += [
        mt.RandRotated(keys, prob=0.2, mode=("bilinear", "nearest"), padding_mode="zeros", keep_size=True, **rotate),
        mt.RandZoomd(  # nnU-Net scales coordinates by s in `scale`: a zoom of 1 / s, the same on every axis
            keys, prob=0.2, min_zoom=1 / scale[1], max_zoom=1 / scale[0], mode=("trilinear", "nearest"), keep_size=True
        ),
    ]
    if v2:
        chain += [
            mt.RandGaussianNoised("image", prob=0.1, mean=0.0, std=math.sqrt(0.1), sample_std=True),
            mt.RandGaussianSmoothd("image", prob=0.2, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0)),
            mt.RandScaleIntensityd("image", factors=0.25, prob=0.15),  # multiplicative brightness 0.75..1.25
            mt.RandScaleIntensityFixedMeand("image", factors=0.25, preserve_range=True, prob=0.15),  # contrast
            mt.RandSimulateLowResolutiond("image", prob=0.25, zoom_range=(0.5, 1.0)),
            mt.RandAdjustContrastd("image", prob=0.1, gamma=(0.7, 1.5), invert_image=True, retain_stats=True),
        ]
    chain.append(mt.RandAdjustContrastd("image", prob=0.3, gamma=(0.7, 1.5), invert_image=False, retain_stats=True))
    chain += [mt.RandFlipd(keys, prob=0.5, spatial_axis=a) for a in range(3)]
    return chain


class WithoutMetadata(mt.Compose):
    """A chain run on plain tensors: MONAI's metadata tracking (``set_track_meta``) is off while it runs and
    restored afterwards. The random part of training needs no geometry, and tracking every operation on
    MetaTensors cost about half of a batch's time (benchmarks/bench_data.py)."""

    def __call__(self, input_, start=0, end=None, threading=False, lazy: bool | None = None):
        from monai.data import get_track_meta, set_track_meta

        previous = get_track_meta()
        set_track_meta(False)
        try:
            return super().__call__(input_, start=start, end=end, threading=threading, lazy=lazy)
        finally:
            set_track_meta(previous)


def train_transforms(recipe: Recipe, batch_size: int = 2) -> list:
    """The recipe's training chain after the cached part: a deterministic head (labels stay uint8, padding to the
    patch, class locations: cached with the case) and the random part (patch sampling, augmentation)."""
    keys = ["image", "label"]
    nnunet_aug = recipe.augmentation.startswith("nnunet")
    # spatial augmentation works on a larger patch, cut back to the patch afterwards (nnU-Net's initial patch size),
    # so that rotations and zooms do not bring empty corners into the patch
    crop_size = tuple(int(math.ceil(p * 1.25 / 2) * 2) for p in recipe.patch_size) if nnunet_aug else recipe.patch_size
    # posneg sampling reads only fg / bg indices: no class locations in its entries, which MONAI's crop would
    # otherwise deep-copy into every sample (a third of a batch's time, measured in benchmarks/bench_data.py)
    head: list = [
        mt.SpatialPadd(keys, spatial_size=crop_size),
        ClassLocationsd(class_locations=recipe.sampling == "nnunet"),
        # training entries are plain tensors: training needs no geometry, and a plain entry loads several times
        # faster than MetaTensors with their traced operations (benchmarks/bench_data.py). Validation entries keep
        # their MetaTensors (geometry, inversion).
        mt.EnsureTyped([*keys, "fg_indices", "bg_indices"], track_meta=False),
        mt.DeleteItemsd(["foreground_start_coord", "foreground_end_coord"]),
    ]
    chain: list = []
    if recipe.sampling == "nnunet":
        chain.append(
            OversampledCropd(
                keys,
                crop_size,
                num_samples=recipe.num_samples,
                oversample=recipe.oversample_foreground,
                batch_size=batch_size,
            )
        )
    else:
        chain.append(
            mt.RandCropByPosNegLabeld(
                keys,
                label_key="label",
                spatial_size=crop_size,
                pos=recipe.pos,
                neg=recipe.neg,
                num_samples=recipe.num_samples,
                fg_indices_key="fg_indices",
                bg_indices_key="bg_indices",
            )
        )
    chain.append(mt.DeleteItemsd(["class_locations", "fg_indices", "bg_indices"]))
    if nnunet_aug:
        chain += _nnunet_augmentation(recipe, keys)
        chain.append(mt.CenterSpatialCropd(keys, roi_size=recipe.patch_size))
    elif recipe.augmentation == "btcv":
        if recipe.flip_prob > 0:
            chain += [mt.RandFlipd(keys, prob=recipe.flip_prob, spatial_axis=axis) for axis in range(3)]
        if recipe.rot90_prob > 0 and recipe.patch_size[0] == recipe.patch_size[1]:  # keep batch shapes equal
            chain.append(mt.RandRotate90d(keys, prob=recipe.rot90_prob, max_k=3, spatial_axes=(0, 1)))
        if recipe.intensity_prob > 0:
            chain += [
                mt.RandScaleIntensityd("image", factors=recipe.intensity_factor, prob=recipe.intensity_prob),
                mt.RandShiftIntensityd("image", offsets=recipe.intensity_factor, prob=recipe.intensity_prob),
            ]
    return [*head, WithoutMetadata(chain)]  # the cache holds the head; the random part runs on plain tensors
