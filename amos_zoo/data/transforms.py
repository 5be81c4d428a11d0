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
    "NnUNetAugmentationd",
    "PosNegPatchesd",
    "nnunet_axes",
    "nnunet_patch_size",
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
        """The patch at ``lower``: a view, or where it reaches beyond the volume a zero-padded copy laid out in
        memory as ``x`` (one zero fill and one copy, as nnU-Net's crop_and_pad_nd; torch's pad took ten times as
        long)."""
        x = torch.as_tensor(x)
        src, dst = [], []
        for a, (lo, size) in enumerate(zip(lower, self.spatial_size)):
            n = x.shape[a + 1]
            start, stop = max(lo, 0), max(min(lo + size, n), max(lo, 0))
            src.append(slice(start, stop))
            dst.append(slice(start - lo, stop - lo))
        out = x[(slice(None), *src)]
        if tuple(out.shape[1:]) == self.spatial_size:
            return out
        shape = (x.shape[0], *self.spatial_size)
        order = sorted(range(x.dim()), key=lambda d: (-x.stride(d), d))  # x's memory order
        padded = torch.zeros([shape[d] for d in order], dtype=x.dtype).permute(
            *[order.index(d) for d in range(x.dim())]
        )
        padded[(slice(None), *dst)] = out
        return padded

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


def _permuted_copy(x: torch.Tensor, order: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """A contiguous copy of ``x`` with its axes in ``order`` and cast to ``dtype``, in one pass (never ``x``
    itself: the augmentation may work in place)."""
    view = x.permute(*order)
    out = torch.empty(view.shape, dtype=dtype)
    return out.copy_(view)


#: nnU-Net's anisotropy threshold for "dummy 2D" augmentation (v2 ANISO_THRESHOLD; v1 planner's 3)
_ANISO_THRESHOLD = 3
_DEG = math.pi / 180.0


def nnunet_axes(spacing: Sequence[float] | None) -> list[int]:
    """For each of nnU-Net's spatial axes, the amos-zoo (x, y, z) axis it is: nnU-Net orders an image (z, y, x) and
    moves its coarsest axis first (the plan's ``transpose_forward``, from the target spacing in (x, y, z))."""
    if spacing is None:
        return [2, 1, 0]
    zyx = [float(v) for v in spacing][::-1]
    worst = int(max(range(3), key=lambda i: (zyx[i], -i)))  # numpy argmax: the first maximum
    return [2 - t for t in [worst] + [i for i in range(3) if i != worst]]


def nnunet_patch_size(patch: Sequence[int], rotation: float, scale_range: tuple[float, float]) -> list[int]:
    """nnU-Net's ``get_patch_size`` (v2 compute_initial_patch_size, v1 default_data_augmentation): the patch a
    rotation by up to ``rotation`` radians about each axis and a zoom down to ``min(scale_range)`` need."""
    import numpy as np
    from batchgenerators.augmentations.utils import rotate_coords_2d, rotate_coords_3d

    rot = min(90 / 360 * 2.0 * np.pi, abs(rotation))
    coords = np.array(patch)
    final = np.copy(coords)
    if len(coords) == 3:
        final = np.max(np.vstack((np.abs(rotate_coords_3d(coords, rot, 0, 0)), final)), 0)
        final = np.max(np.vstack((np.abs(rotate_coords_3d(coords, 0, rot, 0)), final)), 0)
        final = np.max(np.vstack((np.abs(rotate_coords_3d(coords, 0, 0, rot)), final)), 0)
    else:
        final = np.max(np.vstack((np.abs(rotate_coords_2d(coords, rot)), final)), 0)
    final = final / min(scale_range)
    return [int(v) for v in final.astype(int)]


class NnUNetAugmentationd(mt.Randomizable, mt.MapTransform):
    """nnU-Net's training augmentation, run by nnU-Net's own transform library on nnU-Net's axis order.

    ``nnunet-v2``: the batchgeneratorsv2 chain of nnunetv2 2.8.1's ``nnUNetTrainer.get_training_transforms``
    (spatial: rotation, scaling, centre crop to the patch; gaussian noise, blur, brightness, contrast, low
    resolution, inverted gamma, gamma, mirroring; masking when the plan normalised inside the non-zero mask;
    label -1 to 0). ``nnunet-v1``: the batchgenerators chain of nnunet 1.7.1's ``get_default_augmentation`` with
    ``default_3D_augmentation_params`` (elastic, rotation, scaling, gamma, mirroring), which the AMOS fork trains
    with. Rotation, the "dummy 2D" rule and the initial patch follow ``configure_rotation_dummyDA_mirroring_and_
    inital_patch_size`` / ``setup_DA_params``. tests/test_augmentation.py checks sample by sample that the outputs
    equal nnU-Net's own functions' on the same random state.

    The image and label arrive as amos-zoo (x, y, z) patches of :func:`nnunet_patch_size`; they are permuted onto
    nnU-Net's axes (:func:`nnunet_axes`), augmented, and permuted back. The transforms draw from numpy's and torch's
    global generators, which are seeded from this transform's own state for each sample and restored afterwards
    (so that :class:`~amos_zoo.data.resumable.EpochSeededDataset` keeps samples reproducible).
    """

    def __init__(
        self,
        version: str,
        patch_size: Sequence[int],
        spacing: Sequence[float] | None,
        use_mask_for_norm: bool = False,
        keys: KeysCollection = ("image", "label"),
    ) -> None:
        mt.MapTransform.__init__(self, keys)
        if version not in ("nnunet-v2", "nnunet-v1"):
            raise ValueError(f"nnU-Net augmentation: version must be nnunet-v2 or nnunet-v1, got {version!r}")
        self.version, self.use_mask_for_norm = version, bool(use_mask_for_norm)
        self.axes = nnunet_axes(spacing)
        self.patch_size = [int(patch_size[a]) for a in self.axes]  # nnU-Net's axis order
        self.dummy_2d = max(self.patch_size) / self.patch_size[0] > _ANISO_THRESHOLD
        if version == "nnunet-v2":
            self.rotation = (180.0 if self.dummy_2d else 30.0) * _DEG
            self.chain = self._v2_chain()
        else:
            self.rotation = 15.0 * _DEG
            self.chain = self._v1_chain()

    @property
    def initial_patch_size(self) -> list[int]:
        """The patch the data loader crops before augmentation (nnU-Net's axes)."""
        if self.version == "nnunet-v2":
            initial = nnunet_patch_size(self.patch_size, self.rotation, (0.85, 1.25))
            if self.dummy_2d:
                initial[0] = self.patch_size[0]
            return initial
        if self.dummy_2d:  # v1: the 2D rotation (+-180 deg in-plane) on the last two axes, the first as it is
            return [self.patch_size[0], *nnunet_patch_size(self.patch_size[1:], 180.0 * _DEG, (0.85, 1.25))]
        return nnunet_patch_size(self.patch_size, self.rotation, (0.85, 1.25))

    @property
    def initial_patch_size_xyz(self) -> tuple[int, ...]:
        """:attr:`initial_patch_size` on amos-zoo's (x, y, z) axes."""
        initial = self.initial_patch_size
        return tuple(initial[self.axes.index(a)] for a in range(3))

    def _v2_chain(self):
        from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
        from batchgeneratorsv2.transforms.intensity.contrast import BGContrast, ContrastTransform
        from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
        from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
        from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
        from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform
        from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
        from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
        from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
        from batchgeneratorsv2.transforms.utils.nnunet_masking import MaskImageTransform
        from batchgeneratorsv2.transforms.utils.pseudo2d import Convert2DTo3DTransform, Convert3DTo2DTransform
        from batchgeneratorsv2.transforms.utils.random import RandomTransform
        from batchgeneratorsv2.transforms.utils.remove_label import RemoveLabelTansform

        # nnunetv2 2.8.1 nnUNetTrainer.get_training_transforms, without deep supervision's label downsampling (the
        # training step downsamples the label to each output) and without the cascade / region options
        rotation = (-self.rotation, self.rotation)
        chain: list = [Convert3DTo2DTransform()] if self.dummy_2d else []
        chain.append(
            SpatialTransform(
                self.patch_size[1:] if self.dummy_2d else self.patch_size,
                patch_center_dist_from_border=0,
                random_crop=False,
                p_elastic_deform=0,
                p_rotation=0.2,
                rotation=rotation,
                p_scaling=0.2,
                scaling=(0.7, 1.4),
                p_synchronize_scaling_across_axes=1,
                bg_style_seg_sampling=False,
                border_mode_seg="constant",
                padding_value_seg=-1,
            )
        )
        if self.dummy_2d:
            chain.append(Convert2DTo3DTransform())
        chain += [
            RandomTransform(
                GaussianNoiseTransform(noise_variance=(0, 0.1), p_per_channel=1, synchronize_channels=True),
                apply_probability=0.1,
            ),
            RandomTransform(
                GaussianBlurTransform(
                    blur_sigma=(0.5, 1.0),
                    synchronize_channels=False,
                    synchronize_axes=False,
                    p_per_channel=0.5,
                    benchmark=True,
                ),
                apply_probability=0.2,
            ),
            RandomTransform(
                MultiplicativeBrightnessTransform(
                    multiplier_range=BGContrast((0.75, 1.25)), synchronize_channels=False, p_per_channel=1
                ),
                apply_probability=0.15,
            ),
            RandomTransform(
                ContrastTransform(
                    contrast_range=BGContrast((0.75, 1.25)),
                    preserve_range=True,
                    synchronize_channels=False,
                    p_per_channel=1,
                ),
                apply_probability=0.15,
            ),
            RandomTransform(
                SimulateLowResolutionTransform(
                    scale=(0.5, 1),
                    synchronize_channels=False,
                    synchronize_axes=True,
                    ignore_axes=(0,) if self.dummy_2d else None,
                    allowed_channels=None,
                    p_per_channel=0.5,
                ),
                apply_probability=0.25,
            ),
            RandomTransform(
                GammaTransform(
                    gamma=BGContrast((0.7, 1.5)),
                    p_invert_image=1,
                    synchronize_channels=False,
                    p_per_channel=1,
                    p_retain_stats=1,
                ),
                apply_probability=0.1,
            ),
            RandomTransform(
                GammaTransform(
                    gamma=BGContrast((0.7, 1.5)),
                    p_invert_image=0,
                    synchronize_channels=False,
                    p_per_channel=1,
                    p_retain_stats=1,
                ),
                apply_probability=0.3,
            ),
            MirrorTransform(allowed_axes=(0, 1, 2)),
        ]
        if self.use_mask_for_norm:
            chain.append(MaskImageTransform(apply_to_channels=[0], channel_idx_in_seg=0, set_outside_to=0))
        chain.append(RemoveLabelTansform(-1, 0))
        return ComposeTransforms(chain)

    def _v1_chain(self) -> list:
        from batchgenerators.transforms.color_transforms import GammaTransform
        from batchgenerators.transforms.spatial_transforms import MirrorTransform, SpatialTransform
        from batchgenerators.transforms.utility_transforms import RemoveLabelTransform

        # nnunet 1.7.1 get_default_augmentation(params=default_3D_augmentation_params), as setup_DA_params sets it
        rotation_3d = (-15.0 * _DEG, 15.0 * _DEG)
        rotation_x = (-180.0 * _DEG, 180.0 * _DEG) if self.dummy_2d else rotation_3d
        spatial = SpatialTransform(
            self.patch_size[1:] if self.dummy_2d else self.patch_size,
            patch_center_dist_from_border=None,
            do_elastic_deform=True,
            alpha=(0.0, 200.0) if self.dummy_2d else (0.0, 900.0),
            sigma=(9.0, 13.0),
            do_rotation=True,
            angle_x=rotation_x,
            angle_y=rotation_3d,
            angle_z=rotation_3d,
            do_scale=True,
            scale=(0.85, 1.25),
            border_mode_data="constant",
            border_cval_data=0,
            order_data=3,
            border_mode_seg="constant",
            border_cval_seg=-1,
            order_seg=1,
            random_crop=False,
            p_el_per_sample=0.2,
            p_scale_per_sample=0.2,
            p_rot_per_sample=0.2,
            independent_scale_for_each_axis=False,
        )
        return [
            spatial,
            GammaTransform((0.7, 1.5), False, True, retain_stats=True, p_per_sample=0.3),
            MirrorTransform((0, 1, 2)),
            RemoveLabelTransform(-1, 0),
        ]

    def _run_v1(self, image, seg):
        import numpy as np

        batch = {"data": image.numpy()[None].astype(np.float32), "seg": seg.numpy()[None].astype(np.float32)}
        spatial, *rest = self.chain
        if self.dummy_2d:  # nnunet v1 Convert3DTo2DTransform: the first axis joins the channels
            shapes = {k: v.shape for k, v in batch.items()}
            batch = {k: v.reshape(v.shape[0], v.shape[1] * v.shape[2], *v.shape[3:]) for k, v in batch.items()}
            batch = spatial(**batch)
            batch = {k: v.reshape(shapes[k][0], shapes[k][1], shapes[k][2], *v.shape[2:]) for k, v in batch.items()}
        else:
            batch = spatial(**batch)
        gamma, mirror, remove = rest
        batch = mirror(**gamma(**batch))
        if self.use_mask_for_norm:  # nnunet v1 MaskTransform: channel 0 outside the mask (label < 0) set to 0
            batch["data"][:, 0][batch["seg"][:, 0] < 0] = 0
        batch = remove(**batch)
        return torch.from_numpy(np.ascontiguousarray(batch["data"][0])), torch.from_numpy(batch["seg"][0])

    def _mark_outside_mask(self, image: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        """nnU-Net's label -1 outside the non-zero mask (crop_to_nonzero), where masking needs it."""
        from scipy.ndimage import binary_fill_holes

        inside = torch.from_numpy(binary_fill_holes((image != 0).any(0).numpy()))
        return torch.where((seg == 0) & ~inside[None], torch.full_like(seg, -1), seg)

    def augment(self, data: Mapping[Hashable, Any], seed: int) -> dict[Hashable, Any]:
        """One sample augmented with numpy's and torch's generators seeded by ``seed`` (restored afterwards)."""
        import numpy as np

        d = dict(data)
        image_key, label_key = self.keys[0], self.keys[1]
        to_nnunet = (0, *[1 + a for a in self.axes])
        back = (0, *[1 + self.axes.index(a) for a in range(3)])
        image = _permuted_copy(torch.as_tensor(d[image_key]), to_nnunet, torch.float32)
        label = torch.as_tensor(d[label_key])
        label_dtype = label.dtype
        seg = _permuted_copy(label, to_nnunet, torch.int16)  # nnU-Net's data loader: int16 labels
        if self.use_mask_for_norm:
            seg = self._mark_outside_mask(image, seg)
        numpy_state = np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            np.random.seed(seed)
            torch.manual_seed(seed)
            try:
                if self.version == "nnunet-v2":
                    out = self.chain(image=image, segmentation=seg)
                    image, seg = out["image"], out["segmentation"]
                else:
                    image, seg = self._run_v1(image, seg)
            finally:
                np.random.set_state(numpy_state)
        # back on amos-zoo's axes as views (the batch's collation makes them contiguous), the label cast in one pass
        d[image_key] = image.permute(back)
        d[label_key] = seg.permute(back).to(label_dtype)
        return d

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        return self.augment(data, int(self.R.randint(0, 2**31 - 1)))


class AxisOrderLayoutd(mt.MapTransform):
    """The same (x, y, z) array, its memory laid out on another axis order (``axes``: for each stored axis, the
    spatial axis it is; nnU-Net's order for its augmentation): values, shape and indexing are unchanged, but a crop
    permuted to that order is a plain strided copy instead of a transposition. The disk cache stores the layout
    (torch.save keeps strides; tests/test_transforms_fast.py)."""

    def __init__(self, keys: KeysCollection, axes: Sequence[int]) -> None:
        super().__init__(keys)
        self.order = (0, *[1 + a for a in axes])
        self.back = (0, *[1 + list(axes).index(a) for a in range(len(axes))])

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = torch.as_tensor(d[key]).permute(self.order).contiguous().permute(self.back)
        return d


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


def _plain(x) -> Any:
    """A MetaTensor's plain tensor (shared memory: no metadata to carry through the random part)."""
    return x.as_tensor() if isinstance(x, torch.Tensor) and hasattr(x, "as_tensor") else x


class PosNegPatchesd(WithoutMetadata):
    """The posneg recipes' random part (``btcv``): ``RandCropByPosNegLabeld`` on the cached fg / bg positions, then
    per crop ``RandFlipd`` on each axis, ``RandRotate90d``, ``RandScaleIntensityd``, ``RandShiftIntensityd``.

    It holds MONAI's own transforms, so seeding (:meth:`set_random_state`, as a Compose of them) and every random
    draw are MONAI's, but it applies a crop's draws with as few copies as they need: the crop is a view, the flips
    and the rotation one flip (of the axes flipped an odd number of times) and a transposed view, the intensity
    scale and shift in place on that copy (or made from the view when there is none), and no metadata is built. A
    crop nothing changes stays a view of the entry, as MONAI's crop returns it (the batch's collation copies it).
    :meth:`reference` runs MONAI's transforms one after the other; both give the same tensors for the same seed
    (tests/test_transforms_fast.py). The transforms' MONAI settings are fixed by this constructor.
    """

    def __init__(
        self,
        keys: Sequence[str],
        spatial_size: Sequence[int],
        pos: float,
        neg: float,
        num_samples: int,
        flip_prob: float = 0.0,
        rot90_prob: float = 0.0,
        intensity_prob: float = 0.0,
        intensity_factor: float = 0.1,
        label_key: str = "label",
    ) -> None:
        keys = list(keys)
        self.image_key, self.label_key = keys[0], label_key
        self.crop = mt.RandCropByPosNegLabeld(
            keys,
            label_key=label_key,
            spatial_size=spatial_size,
            pos=pos,
            neg=neg,
            num_samples=num_samples,
            fg_indices_key="fg_indices",
            bg_indices_key="bg_indices",
        )
        self.flips = [mt.RandFlipd(keys, prob=flip_prob, spatial_axis=axis) for axis in range(3)] if flip_prob else []
        self.rotate = mt.RandRotate90d(keys, prob=rot90_prob, max_k=3, spatial_axes=(0, 1)) if rot90_prob else None
        self.intensity = (
            [
                mt.RandScaleIntensityd(self.image_key, factors=intensity_factor, prob=intensity_prob),
                mt.RandShiftIntensityd(self.image_key, offsets=intensity_factor, prob=intensity_prob),
            ]
            if intensity_prob
            else []
        )
        self.dropped = ("class_locations", "fg_indices", "bg_indices")
        chain = [self.crop, mt.DeleteItemsd(list(self.dropped)), *self.flips]
        chain += [self.rotate] if self.rotate is not None else []
        super().__init__(chain + self.intensity)

    def reference(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        """MONAI's transforms one after the other (each operation a copy), as the fast path replaces them."""
        return WithoutMetadata.__call__(self, data)

    def __call__(self, input_, start=0, end=None, threading=False, lazy: bool | None = None):
        if start or end is not None or lazy or not isinstance(input_, Mapping):
            return super().__call__(input_, start=start, end=end, threading=threading, lazy=lazy)
        if self.image_key not in input_ or any(f"{k}_meta_dict" in input_ for k in self.crop.keys):
            return self.reference(input_)  # a factor from a meta dict (MONAI's shift option): MONAI's path
        if torch.as_tensor(input_[self.image_key]).dtype != torch.float32:
            return self.reference(input_)  # MONAI's scaling casts to float32: its path
        return self._fused(dict(input_))

    def _draws(self) -> tuple[list[int], int, float | None, float | None]:
        """One crop's random draws, each from its MONAI transform's own generator, as MONAI's __call__ draws them."""
        flip_axes = []
        for flip in self.flips:
            flip.randomize(None)
            if flip._do_transform:
                flip_axes.append(int(flip.flipper.spatial_axis))
        k = 0
        if self.rotate is not None:
            self.rotate.randomize()
            k = self.rotate._rand_k if self.rotate._do_transform else 0
        factor = offset = None
        if self.intensity:
            scale, shift = self.intensity
            scale.randomize(None)
            if scale._do_transform:
                scale.scaler.randomize(None)
                factor = scale.scaler.factor
            shift.randomize(None)
            if shift._do_transform:
                shift.shifter.randomize(None)
                offset = shift.shifter._offset
        return flip_axes, k, factor, offset

    def _fused(self, d: dict) -> list[dict[Hashable, Any]]:
        from copy import deepcopy

        from monai.utils import fall_back_tuple

        crop = self.crop
        fg, bg = _plain(d.pop(crop.fg_indices_key, None)), _plain(d.pop(crop.bg_indices_key, None))
        keys = list(crop.key_iterator(d))
        arrays = {key: torch.as_tensor(_plain(d[key])) for key in keys}
        crop.randomize(arrays.get(crop.label_key), fg, bg, arrays.get(crop.image_key))
        sizes = {key: fall_back_tuple(crop.cropper.spatial_size, default=a.shape[1:]) for key, a in arrays.items()}
        samples = []
        for center in crop.cropper.centers:
            flip_axes, k, factor, offset = self._draws()
            # flips, then rot90 (a flip and a swap of the plane's axes, as torch.rot90): one flip of the axes flipped
            # an odd number of times, then a transposed view
            flipped = {axis + 1 for axis in flip_axes}
            first, second = (a + 1 for a in self.rotate.spatial_axes) if k else (0, 0)
            if k in (1, 3):
                flipped ^= {second if k == 1 else first}
            elif k == 2:
                flipped ^= {first, second}
            sample = {}
            for key, value in d.items():
                if key in self.dropped:
                    continue
                if key not in arrays:
                    sample[key] = deepcopy(value)
                    continue
                x = arrays[key][(slice(None), *mt.SpatialCrop.compute_slices(roi_center=center, roi_size=sizes[key]))]
                copied = bool(flipped)
                if copied:
                    x = torch.flip(x, sorted(flipped))
                if k in (1, 3):
                    x = x.transpose(first, second)
                if key == self.image_key:  # MONAI: img * (1 + factor), then + offset; in place on a copy
                    if factor is not None:
                        x = x.mul_(1 + factor) if copied else x * (1 + factor)
                        copied = True
                    if offset is not None:
                        x = x.add_(offset) if copied else x + offset
                sample[key] = x  # untouched: a view of the entry, as MONAI's crop returns it
            samples.append(sample)
        return samples


def train_transforms(recipe: Recipe, batch_size: int = 2) -> list:
    """The recipe's training chain after the cached part: a deterministic head (labels stay uint8, padding to the
    patch, class locations: cached with the case) and the random part (patch sampling, augmentation)."""
    keys = ["image", "label"]
    nnunet_aug = recipe.augmentation.startswith("nnunet")
    crop_size = recipe.patch_size
    if nnunet_aug:
        # nnU-Net's augmentation works on its larger initial patch and cuts it back to the patch (centre crop), so
        # that rotations and zooms do not bring empty corners into the patch
        # nnU-Net masks the image after augmentation where its plan normalised inside the non-zero mask: only a
        # z-scored channel (a CT-normalised one never uses the mask)
        use_mask = recipe.zscore_nonzero_mask and recipe.ct_normalization == "zscore"
        augmentation = NnUNetAugmentationd(recipe.augmentation, recipe.patch_size, recipe.spacing, use_mask)
        crop_size = augmentation.initial_patch_size_xyz
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
    if nnunet_aug:  # stored on nnU-Net's axis order: a crop moves to nnU-Net's axes without a transposing copy
        head.append(AxisOrderLayoutd(keys, augmentation.axes))
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
    elif not nnunet_aug and recipe.augmentation in ("btcv", "none"):
        # the posneg crops and btcv's augmentation in one pass per crop, with MONAI's transforms' own random draws
        btcv = recipe.augmentation == "btcv"
        random_part = PosNegPatchesd(
            keys,
            crop_size,
            pos=recipe.pos,
            neg=recipe.neg,
            num_samples=recipe.num_samples,
            flip_prob=recipe.flip_prob if btcv else 0.0,
            rot90_prob=recipe.rot90_prob if btcv and recipe.patch_size[0] == recipe.patch_size[1] else 0.0,
            intensity_prob=recipe.intensity_prob if btcv else 0.0,
            intensity_factor=recipe.intensity_factor,
        )
        return [*head, random_part]
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
        chain.append(augmentation)
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
