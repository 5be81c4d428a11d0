"""The Swin-UNETR disruptive-autoencoder encoder (``ssl_pretrained_weights.pth``): ``{"model": {"encoder.X"}}``,
mapped with MONAI's own ``filter_swinunetr``."""

from __future__ import annotations

from typing import Any

from amos_zoo.weights.formats._common import RawWeights, is_state_dict

NAME = "ssl-monai-filter"
DESCRIPTION = "{'model': {'encoder.patch_embed...', 'encoder.layers1.0.0...'}} read with MONAI's filter_swinunetr"
PREDATES_MONAI_1_5 = True
ENCODER_ONLY = True


def detect(obj: Any) -> bool:
    """A ``model`` state dict with ``encoder.`` keys."""
    return (
        isinstance(obj, dict)
        and is_state_dict(obj.get("model"))
        and any(k.startswith("encoder.") for k in obj["model"])
    )


def read(obj: dict) -> RawWeights:
    """The encoder tensors."""
    return RawWeights(NAME, dict(obj["model"]))


def to_model_keys(raw: RawWeights) -> tuple[dict[str, Any], list[str]]:
    """MONAI's ``filter_swinunetr`` per key; keys it maps to nothing are reported as dropped."""
    from monai.networks.nets.swin_unetr import filter_swinunetr

    state, dropped = {}, []
    for k, v in raw.state.items():
        pair = filter_swinunetr(k, v)
        if pair is None:
            dropped.append(k)
        else:
            state[pair[0]] = pair[1]
    return state, dropped


def card(raw: RawWeights) -> None:
    """Encoder only, no card: the registry entry's card says."""
    return None
