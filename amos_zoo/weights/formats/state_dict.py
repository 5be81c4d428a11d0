"""Plain state dicts: ``torch.save(model.state_dict())`` (MONAI bundle ``models/model.pt``, research-contributions'
UNETR ``UNETR_model_best_acc.pth``), also with DataParallel / DDP ``module.`` prefixes."""

from __future__ import annotations

from typing import Any

from amos_zoo.weights.formats._common import RawWeights, is_state_dict, strip_prefix

NAME = "state-dict"
DESCRIPTION = "plain state dict {key: tensor} (MONAI bundle models/model.pt, torch.save(model.state_dict()))"
PREDATES_MONAI_1_5 = False  # unknown from the file: the registry entry's card says


def detect(obj: Any) -> bool:
    """A mapping of names to tensors (or, with trust, a pickled module)."""
    import torch

    return is_state_dict(obj) or isinstance(obj, torch.nn.Module)


def read(obj: Any) -> RawWeights:
    """The tensors (a pickled module, only loadable with trust, gives its state dict)."""
    import torch

    if isinstance(obj, torch.nn.Module):
        return RawWeights(NAME, dict(obj.state_dict()), {"pickled_module": type(obj).__name__})
    return RawWeights(NAME, dict(obj))


def to_model_keys(raw: RawWeights) -> tuple[dict[str, Any], list[str]]:
    """Keys as the network's, without a ``module.`` prefix."""
    return strip_prefix("module.", dict(raw.state)), []


def card(raw: RawWeights) -> None:
    """A bare state dict says nothing about its network or preprocessing."""
    return None
