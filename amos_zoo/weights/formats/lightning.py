"""amos-zoo (Lightning) checkpoints: ``state_dict`` with ``net.`` keys, ``hyper_parameters``, and the model card
under ``amos_zoo["card"]``. Checkpoints written before the card existed are read from their hyperparameters."""

from __future__ import annotations

from typing import Any

from amos_zoo.weights.formats._common import RawWeights

NAME = "lightning"
DESCRIPTION = "amos-zoo Lightning checkpoint (.ckpt: state_dict with 'net.' keys, hyper_parameters, model card)"
PREDATES_MONAI_1_5 = False  # the card says


def detect(obj: Any) -> bool:
    """A Lightning checkpoint dict."""
    return (
        isinstance(obj, dict)
        and "state_dict" in obj
        and ("pytorch-lightning_version" in obj or "hyper_parameters" in obj)
    )


def read(obj: dict) -> RawWeights:
    """The network tensors with the hyperparameters and amos-zoo's metadata."""
    return RawWeights(
        NAME,
        dict(obj["state_dict"]),
        {
            "hyper_parameters": dict(obj.get("hyper_parameters", {})),
            "amos_zoo": dict(obj.get("amos_zoo", {})),
            "datamodule_hyper_parameters": dict(obj.get("datamodule_hyper_parameters", {})),
        },
    )


def to_model_keys(raw: RawWeights) -> tuple[dict[str, Any], list[str]]:
    """``net.X`` -> ``X``; other entries (the loss's buffers) are reported as dropped."""
    state = {k[len("net.") :]: v for k, v in raw.state.items() if k.startswith("net.")}
    return state, [k for k in raw.state if not k.startswith("net.")]


def card(raw: RawWeights):
    """The checkpoint's model card (rebuilt from the hyperparameters of checkpoints written before cards)."""
    from amos_zoo.card import ModelCard
    from amos_zoo.data.recipes import get_recipe

    stored = raw.meta["amos_zoo"].get("card")
    if stored:
        return ModelCard.from_dict(stored)
    hp = raw.meta["hyper_parameters"]
    kwargs = dict(hp.get("arch_kwargs") or {})
    legacy = kwargs.pop("downsample", None) == "merging_legacy"
    recipe_dict = raw.meta["amos_zoo"].get("recipe")
    dm = raw.meta["datamodule_hyper_parameters"]
    if recipe_dict:
        from amos_zoo.data.recipes import Recipe

        recipe = Recipe.from_dict(recipe_dict)
    else:
        recipe = get_recipe(dm.get("recipe", "btcv"), spacing=dm.get("spacing"), patch_size=dm.get("patch_size"))
    stored_labels = raw.meta["amos_zoo"].get("labels")
    names = {int(k): v for k, v in (hp.get("label_names") or {}).items()}
    if names:
        labels = {0: "background", **names}
    elif stored_labels:
        labels = {int(k): v for k, v in stored_labels.items()}
    else:
        labels = {i: "background" if i == 0 else f"class_{i}" for i in range(int(hp["num_classes"]))}
    return ModelCard(
        arch=hp["arch"],
        arch_kwargs=kwargs,
        in_channels=int(hp.get("in_channels", 1)),
        labels=labels,
        recipe=recipe,
        roi_size=tuple(hp.get("roi_size", recipe.patch_size)),
        sw_batch_size=int(hp.get("sw_batch_size", 4)),
        sw_overlap=float(hp.get("sw_overlap", 0.5)),
        legacy_patch_merging=legacy,
    )
