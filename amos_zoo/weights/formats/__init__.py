"""Checkpoint layouts found in the wild, one module per layout (as timm keeps one filter per source).

Each module names its layout (``NAME``, ``DESCRIPTION``) and says how to recognise it (``detect``), read it
(``read``), translate its keys into the MONAI network's (``to_model_keys``) and what it says about the network
(``card``: a :class:`~amos_zoo.card.ModelCard`, or None when only a registry entry can say). The weights registry
names these formats; :func:`read_weights_file` tries them in a fixed order.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from amos_zoo.weights.formats import (
    bundle,
    lightning,
    nnunet_v2,
    research_contributions,
    ssl_monai_filter,
    ssl_swinvit,
    state_dict,
)
from amos_zoo.weights.formats._common import RawWeights, UnsafeCheckpointError, torch_load

if TYPE_CHECKING:
    from amos_zoo.card import ModelCard

__all__ = [
    "FORMATS",
    "RawWeights",
    "UnsafeCheckpointError",
    "read_weights_file",
    "to_model_keys",
    "card_of",
    "predates_monai_1_5",
    "is_encoder_only",
]

#: format name -> its module, in the order files are tested (most specific first; bundles are found by path)
FORMATS: dict[str, ModuleType] = {
    m.NAME: m for m in (bundle, lightning, nnunet_v2, ssl_monai_filter, ssl_swinvit, research_contributions, state_dict)
}


def read_weights_file(path: str | Path, trust: bool = False) -> RawWeights:
    """Read any known layout (:data:`FORMATS`) safely and say which one it is."""
    path = Path(path)
    if bundle.detect_path(path):
        return bundle.read_path(path, trust)
    obj = torch_load(path, str(path), trust)
    for module in FORMATS.values():
        if module is not bundle and module.detect(obj):
            return module.read(obj)
    if isinstance(obj, dict):
        raise ValueError(
            f"{path}: unrecognised checkpoint layout (top-level keys {sorted(obj)[:10]}); expected one of: "
            + "; ".join(f"{name} ({m.DESCRIPTION})" for name, m in FORMATS.items())
        )
    raise ValueError(f"{path}: holds a {type(obj).__name__}, not a checkpoint dict or state dict")


def to_model_keys(raw: RawWeights) -> tuple[dict[str, Any], list[str]]:
    """The file's tensors under the MONAI network's key names, and the file keys that map to none."""
    return FORMATS[raw.fmt].to_model_keys(raw)


def card_of(raw: RawWeights) -> ModelCard | None:
    """What the file itself says about its network and preprocessing (None when it says nothing)."""
    return FORMATS[raw.fmt].card(raw)


def predates_monai_1_5(raw: RawWeights) -> bool:
    """Whether the file was made with MONAI < 1.5 (Swin-UNETR then computed another patch merging)."""
    if raw.fmt == "bundle":
        return bundle.predates_monai_1_5(raw)
    return bool(getattr(FORMATS[raw.fmt], "PREDATES_MONAI_1_5", False))


def is_encoder_only(raw: RawWeights) -> bool:
    """The file holds only an encoder (self-supervised pretraining)."""
    return bool(getattr(FORMATS[raw.fmt], "ENCODER_ONLY", False))
