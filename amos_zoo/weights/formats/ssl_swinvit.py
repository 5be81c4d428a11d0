"""The Swin-UNETR self-supervised encoder ``model_swinvit.pt`` (research-contributions SwinUNETR/Pretrain):
``{"state_dict": {"module.patch_embed...", "module.layers1.0.blocks.0...mlp.fc1..."}}``. Mapped as MONAI's
``SwinUNETR.load_from`` maps it; a plain ``load_state_dict(strict=False)`` would load none of it."""

from __future__ import annotations

from typing import Any

from amos_zoo.weights.formats._common import RawWeights, is_state_dict

NAME = "ssl-swinvit"
DESCRIPTION = "Swin-UNETR self-supervised encoder: {'state_dict': {'module.patch_embed...', 'module.layers1.0...'}}"
PREDATES_MONAI_1_5 = True
ENCODER_ONLY = True


def detect(obj: Any) -> bool:
    """``module.patch_embed.`` keys without a ``module.swinViT.`` network around them."""
    if not (isinstance(obj, dict) and is_state_dict(obj.get("state_dict"))):
        return False
    state = obj["state_dict"]
    return any(k.startswith("module.patch_embed.") for k in state) and not any(
        k.startswith("module.swinViT.") for k in state
    )


def read(obj: dict) -> RawWeights:
    """The encoder tensors."""
    return RawWeights(NAME, dict(obj["state_dict"]))


def to_model_keys(raw: RawWeights) -> tuple[dict[str, Any], list[str]]:
    """``module.X`` -> ``swinViT.X`` and ``mlp.fc1/fc2`` -> ``mlp.linear1/linear2``, as ``SwinUNETR.load_from``."""
    state = {}
    for k, v in raw.state.items():
        key = "swinViT." + k[len("module.") :] if k.startswith("module.") else k
        key = key.replace(".mlp.fc1.", ".mlp.linear1.").replace(".mlp.fc2.", ".mlp.linear2.")
        state[key] = v
    return state, []


def card(raw: RawWeights) -> None:
    """Encoder only, no card: the registry entry's card says."""
    return None
