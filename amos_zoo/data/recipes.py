"""Named preprocessing recipes, as data, and their deterministic chain as a list of transform specifications.

A recipe is data: target spacing, intensity normalisation per modality, patch size, sampling and
augmentation. The deterministic part (load, RAS orientation, resampling, normalisation, foreground
crop) is cached to disk once; the random part (patch sampling, augmentation) runs every epoch.

The deterministic part is written once, as a list of transform specifications (:func:`preprocessing_spec`):
:func:`amos_zoo.data.transforms.deterministic_transforms` instantiates it for training and prediction, and the
exported MONAI bundle's ``inference.json`` is rendered from the same list, so the two cannot drift. This module
imports neither torch nor MONAI (the model card and the registries read it).
"""

from __future__ import annotations

import pydoc
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

__all__ = ["Recipe", "RECIPES", "get_recipe", "Ref", "TransformSpec", "preprocessing_spec"]


#: values a recipe's choice fields take
CT_NORMALIZATIONS = ("window", "nnunet", "zscore")
CROPS = ("normalized", "nonzero", "none")
MRI_NORMALIZATIONS = ("percentile", "zscore", "ct")
SAMPLINGS = ("posneg", "nnunet")
AUGMENTATIONS = ("btcv", "nnunet-v2", "nnunet-v1", "none")
NORMALIZATION_ORDERS = ("before-resampling", "after-resampling")


@dataclass(frozen=True)
class Recipe:
    """Preprocessing, sampling and augmentation settings of a training protocol (spatial order x, y, z).

    Attributes:
        name: the protocol the recipe belongs to.
        spacing: target voxel spacing in mm (with ``spacing_rule="planned"``: filled from the dataset's plan).
        spacing_rule: ``fixed`` (``spacing``) or ``planned`` (nnU-Net's target spacing of the dataset's fingerprint).
        patch_rule: ``fixed`` (``patch_size``) or ``planned`` (nnU-Net v2's 3d_fullres patch of the dataset's plan,
            which replaces ``patch_size`` once planned).
        fingerprint: how the plan samples the dataset (``nnunet-v2`` or ``nnunet-v1``; :mod:`amos_zoo.data.plan`),
            needed by ``planned`` spacing and ``nnunet`` CT normalisation; None: no plan.
        patch_size: training patch (and sliding window) size in voxels.
        ct_normalization: ``window`` (clip to ``ct_window``, scale to [0, 1]), ``nnunet`` (clip to the training
            foreground's 0.5 / 99.5 percentiles, z-score with its mean and std: ``intensity_stats`` from the plan) or
            ``zscore`` (per case, as an MRI: nnU-Net's choice for a channel not named CT).
        ct_window: HU window of ``window``.
        mri_normalization: ``percentile`` (rescale between ``mri_percentiles`` of the case's non-zero voxels to
            [0, 1]), ``zscore`` (per case, nnU-Net's "nonCT") or ``ct`` (the CT normalisation: the AMOS fork's quirk).
        intensity_stats: per channel ``(lower, upper, mean, std)`` of the training foreground (``nnunet`` CT
            normalisation; filled from the plan).
        zscore_nonzero_mask: a ``zscore`` normalises over the non-zero region only (nnU-Net's rule, from the plan).
        crop_foreground: ``normalized`` (crop to the voxels above 0 after normalisation: MONAI CropForegroundd's
            default, i.e. above the CT window's lower bound), ``nonzero`` (crop to the raw image's non-zero region
            before normalisation, as nnU-Net) or ``none``.
        normalization_order: ``before-resampling`` (nnU-Net v2's ``DefaultPreprocessor.run_case``: crop, normalise,
            resample) or ``after-resampling`` (nnU-Net v1's ``GenericPreprocessor.resample_and_normalize``: crop,
            resample, normalise; research-contributions: resample, normalise, crop). None (recipes written before
            the field): before resampling with a ``nonzero`` crop, after it otherwise. A ``normalized`` crop needs
            ``after-resampling``.
        sampling: ``posneg`` (MONAI RandCropByPosNegLabeld with ``pos`` / ``neg``) or ``nnunet`` (random crops, a
            fraction ``oversample_foreground`` of them forced to hold foreground).
        num_samples: crops per volume and step.
        augmentation: ``btcv`` (flips, rot90, intensity scale/shift), ``nnunet-v2`` / ``nnunet-v1`` (nnU-Net's
            spatial and intensity augmentation of that version, as MONAI transforms) or ``none``.
    """

    name: str
    spacing: tuple[float, ...] | None
    patch_size: tuple[int, ...]
    spacing_rule: str = "fixed"
    patch_rule: str = "fixed"
    fingerprint: str | None = None
    ct_normalization: str = "window"
    ct_window: tuple[float, float] = (-175.0, 250.0)
    mri_normalization: str = "percentile"
    mri_percentiles: tuple[float, float] = (0.5, 99.5)
    intensity_stats: tuple[tuple[float, float, float, float], ...] | None = None
    zscore_nonzero_mask: bool = False
    crop_foreground: str = "normalized"
    normalization_order: str | None = None
    sampling: str = "posneg"
    num_samples: int = 4
    pos: float = 1.0
    neg: float = 1.0
    oversample_foreground: float = 0.33
    augmentation: str = "btcv"
    flip_prob: float = 0.2
    rot90_prob: float = 0.2
    intensity_prob: float = 0.1
    intensity_factor: float = 0.1

    def __post_init__(self) -> None:
        if self.patch_rule not in ("fixed", "planned") or (
            self.patch_rule == "planned" and self.fingerprint != "nnunet-v2"
        ):
            raise ValueError(f"recipe {self.name}: patch_rule is fixed, or planned with the nnunet-v2 fingerprint")
        if self.spacing_rule not in ("fixed", "planned"):
            raise ValueError(f"recipe {self.name}: spacing_rule must be fixed or planned, got {self.spacing_rule!r}")
        needs_plan = self.spacing_rule == "planned" or self.ct_normalization == "nnunet"
        if needs_plan and self.fingerprint not in ("nnunet-v1", "nnunet-v2"):
            raise ValueError(f"recipe {self.name}: a planned recipe names its fingerprint (nnunet-v1 or nnunet-v2)")
        if self.spacing_rule == "fixed" and self.spacing is None:
            raise ValueError(f"recipe {self.name}: a fixed spacing_rule needs a spacing")
        if self.intensity_stats is not None:
            stats = self.intensity_stats
            if stats and not isinstance(stats[0], tuple | list):
                stats = (stats,)  # one channel's statistics
            object.__setattr__(self, "intensity_stats", tuple(tuple(float(v) for v in c) for c in stats))
        for field_name, allowed in (
            ("ct_normalization", CT_NORMALIZATIONS),
            ("mri_normalization", MRI_NORMALIZATIONS),
            ("crop_foreground", CROPS),
            ("sampling", SAMPLINGS),
            ("augmentation", AUGMENTATIONS),
            ("resolved_normalization_order", NORMALIZATION_ORDERS),
        ):
            if getattr(self, field_name) not in allowed:
                raise ValueError(
                    f"recipe {self.name}: {field_name} must be one of {allowed}, got {getattr(self, field_name)!r}"
                )

        if self.crop_foreground == "normalized" and self.resolved_normalization_order != "after-resampling":
            raise ValueError(f"recipe {self.name}: a crop of the normalised image normalises after resampling")

    @property
    def resolved_normalization_order(self) -> str:
        """``normalization_order``, or the order recipes had before the field (by their crop)."""
        if self.normalization_order is not None:
            return self.normalization_order
        return "before-resampling" if self.crop_foreground == "nonzero" else "after-resampling"

    @property
    def mirror_axes(self) -> tuple[int, ...]:
        """Spatial axes the training mirrors (test-time augmentation may mirror these and no others)."""
        if self.augmentation in ("nnunet-v2", "nnunet-v1"):
            return (0, 1, 2)  # nnU-Net 3d_fullres: mirror_axes (0, 1, 2) in training and in prediction
        if self.augmentation == "btcv" and self.flip_prob > 0:
            return (0, 1, 2)
        return ()

    @property
    def needs_plan(self) -> bool:
        """The recipe takes values from the dataset's plan that it does not hold yet."""
        return (self.spacing_rule == "planned" and self.spacing is None) or (
            self.ct_normalization == "nnunet" and self.intensity_stats is None
        )

    def with_plan(self, plan) -> Recipe:
        """The recipe completed by a dataset's plan (:class:`amos_zoo.data.plan.Plan`): its target spacing (for a
        planned spacing), foreground intensity statistics and z-score mask rule."""
        changes: dict[str, Any] = {"intensity_stats": tuple(tuple(s) for s in plan.intensity_stats)}
        changes["zscore_nonzero_mask"] = bool(plan.zscore_nonzero_mask)
        if self.spacing_rule == "planned":
            changes["spacing"] = tuple(float(v) for v in plan.spacing)
        if self.patch_rule == "planned" and getattr(plan, "configuration", None):
            changes["patch_size"] = tuple(int(v) for v in plan.configuration["patch_size"])
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain dictionary (stored in checkpoints and run folders)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        """Inverse of :meth:`to_dict` (lists become tuples; fields a file does not name keep their defaults)."""
        data = {k: v for k, v in data.items() if k != "source"}  # the free-text field of checkpoints before cards
        if isinstance(data.get("crop_foreground"), bool):  # checkpoints before cards: a flag
            data["crop_foreground"] = "normalized" if data["crop_foreground"] else "none"
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"recipe: unknown fields {sorted(unknown)} (written by a newer amos-zoo?)")
        return cls(**{k: _tuple(v) for k, v in data.items()})


def _tuple(value: Any) -> Any:
    return tuple(_tuple(v) for v in value) if isinstance(value, list) else value


class _RecipeTable(Mapping[str, Recipe]):
    """Every protocol card's recipe, by protocol name (read from the cards on first use)."""

    def _table(self) -> dict[str, Recipe]:
        from amos_zoo.protocols import list_protocols

        table = getattr(self, "_cache", None)
        if table is None:
            table = {}
            for p in list_protocols():
                values = p.values("recipe")
                if values:
                    table[p.name] = Recipe.from_dict({"name": p.name, **values})
            self._cache = table
        return table

    def __getitem__(self, name: str) -> Recipe:
        return self._table()[name]

    def __iter__(self):
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


#: protocol name -> its recipe (``amos_zoo/protocols/*.yaml``)
RECIPES: Mapping[str, Recipe] = _RecipeTable()


def get_recipe(name: str | Recipe, task: str | None = None, **overrides: Any) -> Recipe:
    """A recipe by protocol name (or a Recipe), with the card's settings for ``task`` (``recipe.X@task``) and fields
    replaced by non-None ``overrides``."""
    recipe = name if isinstance(name, Recipe) else RECIPES.get(name)
    if recipe is None:
        raise KeyError(f"unknown recipe {name!r}; available: {', '.join(RECIPES)}")
    changes: dict[str, Any] = {}
    if task is not None and not isinstance(name, Recipe):
        from amos_zoo.protocols import get_protocol

        changes.update(get_protocol(name).values("recipe", task=task))
    changes.update({k: v for k, v in overrides.items() if v is not None})
    changes = {k: _tuple(v) for k, v in changes.items()}
    return replace(recipe, **changes) if changes else recipe


@dataclass(frozen=True)
class Ref:
    """A reference to a Python object by its dotted path, in a transform specification (``torch.float32``)."""

    path: str

    def resolve(self) -> Any:
        """The object itself."""
        obj = pydoc.locate(self.path)
        if obj is None:
            raise ImportError(f"cannot locate {self.path}")
        return obj


@dataclass(frozen=True)
class TransformSpec:
    """One transform of a chain: its class's dotted path and keyword arguments (values may be :class:`Ref`)."""

    target: str
    kwargs: dict[str, Any]

    def instantiate(self) -> Any:
        """The transform object."""
        args = {k: v.resolve() if isinstance(v, Ref) else v for k, v in self.kwargs.items()}
        return Ref(self.target).resolve()(**args)


def _spacing(recipe: Recipe) -> tuple[float, ...]:
    if recipe.spacing is None:
        raise ValueError(
            f"recipe {recipe.name}: its spacing is planned from the dataset; plan it first (amos-zoo plan, or let the "
            "data module plan it in prepare_data)"
        )
    return recipe.spacing


def preprocessing_spec(
    recipe: Recipe, keys: Sequence[str] = ("image", "label"), load: bool = True
) -> list[TransformSpec]:
    """The recipe's deterministic chain as data: load (NIfTI via nibabel), orient to RAS, resample, normalise by
    modality (the case's ``modality`` entry), crop the foreground; labels become uint8.

    With ``load=False`` the chain starts from already loaded channel-first MetaTensors.
    """
    keys = list(keys)
    has_label = "label" in keys
    modes = ["bilinear", "nearest"] if has_label else ["bilinear"]
    monai = "monai.transforms."
    chain: list[TransformSpec] = []
    if load:
        chain.append(
            TransformSpec(
                monai + "LoadImaged",
                {"keys": keys, "reader": "NibabelReader", "ensure_channel_first": True, "image_only": True},
            )
        )
    crop = {"keys": keys, "source_key": "image", "allow_smaller": True}
    normalise = TransformSpec(
        "amos_zoo.data.transforms.ModalityNormalized",
        {
            "keys": ["image"],
            "ct_normalization": recipe.ct_normalization,
            "ct_window": list(recipe.ct_window),
            "mri_normalization": recipe.mri_normalization,
            "mri_percentiles": list(recipe.mri_percentiles),
            "intensity_stats": None if recipe.intensity_stats is None else [list(c) for c in recipe.intensity_stats],
            "zscore_nonzero_mask": recipe.zscore_nonzero_mask,
        },
    )
    spacing = TransformSpec(monai + "Spacingd", {"keys": keys, "pixdim": list(_spacing(recipe)), "mode": modes})
    chain += [
        TransformSpec(monai + "EnsureTyped", {"keys": keys, "dtype": Ref("torch.float32"), "track_meta": True}),
        TransformSpec(monai + "Orientationd", {"keys": keys, "axcodes": "RAS"}),
    ]
    if recipe.crop_foreground == "nonzero":  # nnU-Net: crop to the raw image's non-zero region first
        nonzero = {**crop, "select_fn": Ref("amos_zoo.data.transforms.nonzero")}
        chain.append(TransformSpec(monai + "CropForegroundd", nonzero))
    if recipe.resolved_normalization_order == "before-resampling":  # nnU-Net v2
        chain += [normalise, spacing]
    else:  # nnU-Net v1 and research-contributions: resample, then normalise
        chain += [spacing, normalise]
    if (
        recipe.crop_foreground == "normalized"
    ):  # research-contributions: crop to the voxels above the normalised minimum
        positive = {**crop, "select_fn": Ref("amos_zoo.data.transforms.positive")}
        chain.append(TransformSpec(monai + "CropForegroundd", positive))
    if has_label:
        chain.append(
            TransformSpec(monai + "EnsureTyped", {"keys": ["label"], "dtype": Ref("torch.uint8"), "track_meta": True})
        )
    return chain
