"""research-contributions training checkpoints (Swin-UNETR / UNETR BTCV ``main.py``): ``{"epoch", "best_acc"
(a numpy scalar), "state_dict", "optimizer", "scheduler"}``. They predate MONAI 1.5's Swin patch-merging fix."""

from __future__ import annotations

from typing import Any

from amos_zoo.weights.formats._common import RawWeights, is_state_dict, strip_prefix

NAME = "research-contributions"
DESCRIPTION = "{'epoch', 'best_acc' (numpy scalar), 'state_dict', optimizer, scheduler}"
PREDATES_MONAI_1_5 = True


def detect(obj: Any) -> bool:
    """A dict with a full-network ``state_dict`` (not the self-supervised encoder's ``module.patch_embed`` keys)."""
    if not (isinstance(obj, dict) and is_state_dict(obj.get("state_dict"))):
        return False
    state = obj["state_dict"]
    ssl = any(k.startswith("module.patch_embed.") for k in state) and not any(
        k.startswith("module.swinViT.") for k in state
    )
    return not ssl and "pytorch-lightning_version" not in obj and "hyper_parameters" not in obj


def read(obj: dict) -> RawWeights:
    """The state dict, with ``epoch`` and ``best_acc`` as plain numbers."""
    extra = {k: (v.item() if hasattr(v, "item") else v) for k, v in obj.items() if k in ("epoch", "best_acc")}
    return RawWeights(NAME, dict(obj["state_dict"]), extra)


def to_model_keys(raw: RawWeights) -> tuple[dict[str, Any], list[str]]:
    """Keys as the network's, without a ``module.`` prefix."""
    return strip_prefix("module.", dict(raw.state)), []


def card(raw: RawWeights) -> None:
    """The file does not name its network arguments: the registry entry's card says."""
    return None
