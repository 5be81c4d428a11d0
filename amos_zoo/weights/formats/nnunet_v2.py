"""nnU-Net v2 training checkpoints (``fold_X/checkpoint_final.pth``, ``checkpoint_best.pth``), as
``nnUNetTrainer.save_checkpoint`` writes them: ``{"network_weights", "optimizer_state", "grad_scaler_state",
"logging", "_best_ema", "current_epoch", "init_args" (plans, configuration, fold, dataset_json, device),
"trainer_name", "inference_allowed_mirroring_axes"}``.

The file carries its plans and dataset.json, so it says everything about its network and preprocessing: the card
builds nnU-Net's PlainConvUNet from the plan (:mod:`amos_zoo.models.nnunet`) on amos-zoo's (x, y, z) axes, and the
weights are moved onto those axes (:func:`~amos_zoo.models.nnunet.weights_to_xyz`). Read weights-only.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from amos_zoo.weights.formats._common import RawWeights, is_state_dict, strip_prefix

if TYPE_CHECKING:
    from amos_zoo.card import ModelCard

NAME = "nnunet-v2"
DESCRIPTION = "nnU-Net v2 checkpoint {'network_weights', 'init_args' (plans, dataset_json), 'trainer_name', ...}"

__all__ = ["NAME", "DESCRIPTION", "detect", "read", "to_model_keys", "card", "card_from_plans"]


def detect(obj: Any) -> bool:
    """nnUNetTrainer's checkpoint dictionary."""
    return (
        isinstance(obj, dict)
        and is_state_dict(obj.get("network_weights"))
        and isinstance(obj.get("init_args"), dict)
        and "trainer_name" in obj
    )


def read(obj: dict) -> RawWeights:
    """The network weights, with the trainer, configuration, fold, plans and dataset.json the file carries."""
    init = obj["init_args"]
    for key in ("plans", "configuration", "dataset_json"):
        if key not in init:
            raise ValueError(f"nnU-Net checkpoint: init_args has no {key!r} (keys: {sorted(init)})")
    meta = {
        "trainer_name": str(obj["trainer_name"]),
        "configuration": str(init["configuration"]),
        "fold": init.get("fold"),
        "plans": init["plans"],
        "dataset_json": init["dataset_json"],
        "inference_allowed_mirroring_axes": obj.get("inference_allowed_mirroring_axes"),
        "current_epoch": obj.get("current_epoch"),
    }
    state = strip_prefix("_orig_mod.", strip_prefix("module.", dict(obj["network_weights"])))
    return RawWeights(NAME, state, meta)


def to_model_keys(raw: RawWeights) -> tuple[dict[str, Any], list[str]]:
    """The same keys (amos-zoo builds nnU-Net's own class); kernels moved onto amos-zoo's (x, y, z) axes."""
    from amos_zoo.models.nnunet import weights_to_xyz

    transpose = raw.meta["plans"].get("transpose_forward", [0, 1, 2])
    return weights_to_xyz(raw.state, transpose), []


def card(raw: RawWeights) -> ModelCard:
    """The model card of the file's plans, configuration and dataset.json."""
    return card_from_plans(
        raw.meta["plans"],
        raw.meta["dataset_json"],
        raw.meta["configuration"],
        raw.meta.get("inference_allowed_mirroring_axes"),
    )


def _configuration(plans: dict[str, Any], name: str) -> dict[str, Any]:
    """A plans configuration with ``inherits_from`` resolved (nnunetv2 PlansManager.get_configuration)."""
    configurations = plans["configurations"]
    if name not in configurations:
        raise ValueError(f"nnU-Net plans: no configuration {name!r} (have {sorted(configurations)})")
    config = dict(configurations[name])
    if "inherits_from" in config:
        parent = _configuration(plans, config.pop("inherits_from"))
        config = {**parent, **config}
    return config


def card_from_plans(
    plans: dict[str, Any],
    dataset_json: dict[str, Any],
    configuration: str = "3d_fullres",
    mirroring_axes: Any = (0, 1, 2),
) -> ModelCard:
    """An nnU-Net v2 plan (plans.json, dataset.json) as an amos-zoo model card: nnU-Net's network, its spacing,
    patch (the sliding window, overlap 0.5, gaussian blending), normalisation with the plan's foreground intensity
    statistics, crop to the non-zero region, and mirroring when the trainer allowed it. Axes in (x, y, z) order."""
    from amos_zoo.card import ModelCard
    from amos_zoo.data.plan import to_xyz
    from amos_zoo.data.recipes import Recipe

    reader = plans.get("image_reader_writer", "NibabelIOWithReorient")
    if reader != "NibabelIOWithReorient":
        warnings.warn(
            f"nnU-Net plans: images were read with {reader}, which keeps each file's voxel order; amos-zoo reorients "
            "to RAS as NibabelIOWithReorient (nnU-Net's AMOS conversions) does: the same only for RAS-stored scans",
            stacklevel=2,
        )
    config = _configuration(plans, configuration)
    network_class = config["architecture"]["network_class_name"]
    if network_class.rsplit(".", 1)[-1] != "PlainConvUNet":
        raise ValueError(f"nnU-Net plans: amos-zoo builds PlainConvUNet; this plan uses {network_class}")
    if len(config["patch_size"]) != 3:
        raise ValueError(f"nnU-Net plans: configuration {configuration!r} is not 3D")
    xyz = to_xyz({**config, "transpose_forward": plans.get("transpose_forward", [0, 1, 2])})
    labels = dataset_json["labels"]
    if any(not isinstance(v, int) for v in labels.values()):
        raise ValueError("nnU-Net dataset.json: region-based labels (lists of ids) are not supported by amos-zoo")
    names = {int(v): str(k) for k, v in labels.items() if int(v) >= 0}
    schemes = list(config["normalization_schemes"])
    unsupported = sorted(set(schemes) - {"CTNormalization", "ZScoreNormalization"})
    if unsupported or len(set(schemes)) > 1:
        raise ValueError(f"nnU-Net plans: normalisation {schemes} (amos-zoo: one of CT or z-score for every channel)")
    properties = plans.get("foreground_intensity_properties_per_channel", {})
    stats = [
        (p["percentile_00_5"], p["percentile_99_5"], p["mean"], p["std"])
        for _, p in sorted(properties.items(), key=lambda kv: int(kv[0]))
    ]
    ct = schemes[0] == "CTNormalization"
    recipe = Recipe(
        name="nnunet-v2",
        spacing=tuple(float(s) for s in xyz["spacing"]),
        patch_size=tuple(int(p) for p in xyz["patch_size"]),
        fingerprint="nnunet-v2",
        ct_normalization="nnunet" if ct else "zscore",
        mri_normalization="ct" if ct else "zscore",  # nnU-Net normalises by channel, whatever the modality
        intensity_stats=tuple(stats) if ct else None,
        zscore_nonzero_mask=bool(config["use_mask_for_norm"][0]),
        crop_foreground="nonzero",
        sampling="nnunet",
        num_samples=1,
        augmentation="nnunet-v2",
    )
    return ModelCard(
        arch="nnunet",
        arch_kwargs={**xyz["architecture"], "deep_supervision": False},
        in_channels=len(dataset_json.get("channel_names", dataset_json.get("modality", {"0": "CT"}))),
        labels=names,
        recipe=recipe,
        roi_size=tuple(recipe.patch_size),
        sw_batch_size=1,
        sw_overlap=0.5,
        sw_mode="gaussian",
        protocol="nnunet-v2",
        # nnU-Net mirrors over the axes its trainer allowed; amos-zoo's predictor mirrors over all three
        tta=mirroring_axes is not None and sorted(int(a) for a in mirroring_axes) == [0, 1, 2],
        interpolation="linear",
    )
