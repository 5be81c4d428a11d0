"""What every checkpoint-layout module shares: the :class:`RawWeights` a file is read into, and safe loading.

Everything is loaded with ``torch.load(weights_only=True)``; the one non-tensor object real checkpoints
carry (research-contributions' ``best_acc``, a numpy scalar) is allow-listed by name instead of turning
weights-only loading off. ``trust=True`` (a user's explicit choice) allows full unpickling. Nothing here
imports torch until a file is read.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

__all__ = ["RawWeights", "UnsafeCheckpointError", "torch_load", "is_state_dict", "strip_prefix", "allow_numpy_globals"]


class UnsafeCheckpointError(ValueError):
    """The file needs full unpickling (it may run code) and the user did not say they trust it."""


@dataclass
class RawWeights:
    """Tensors read from a file, in the file's own key names, with what the file says about itself."""

    fmt: str
    state: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)


_ALLOWED: list[Any] = []


def allow_numpy_globals() -> None:
    """Allow numpy arrays, dtypes and scalars in weights-only loads, once and for good (torch's ``safe_globals``
    context manager would, on exit, also remove entries the dataset cache allow-listed before)."""
    import torch

    from amos_zoo.io import numpy_safe_globals

    if not _ALLOWED:
        _ALLOWED.extend(numpy_safe_globals())
        torch.serialization.add_safe_globals(_ALLOWED)


def torch_load(source: str | Path | IO[bytes], where: str, trust: bool) -> Any:
    """``torch.load`` weights-only (numpy arrays and scalars allowed) unless ``trust``; a clear refusal otherwise."""
    import torch

    allow_numpy_globals()
    try:
        return torch.load(source, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f"{where}: refused: loading it needs full unpickling, which can run arbitrary code (it holds Python "
            f"objects beyond tensors, containers and numpy scalars: {str(err).splitlines()[0][:200]}). Only if you "
            "trust where the file came from, pass trust=True (--trust; --trust true for fit / validate / test)."
        ) from err


def is_state_dict(obj: Any) -> bool:
    """A non-empty mapping of names to tensors."""
    import torch

    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def strip_prefix(prefix: str, state: dict[str, Any]) -> dict[str, Any]:
    """Remove ``prefix`` from every key when every key has it (DataParallel / DDP saves)."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state
