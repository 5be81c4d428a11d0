"""Pretrained weights: the registry (single source of truth for weights.md), verified downloads, one module per
checkpoint layout (:mod:`amos_zoo.weights.formats`), and ``load`` / ``load_model`` with load reports.

Names are imported lazily, so that reading the registry (``amos-zoo weights``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "HashMismatchError": "download",
    "cache_dir": "download",
    "fetch": "download",
    "sha256_of": "download",
    "md5_of": "download",
    "UnsafeCheckpointError": "formats",
    "read_weights_file": "formats",
    "FORMATS": "formats",
    "LoadReport": "loading",
    "UnverifiedWeightsError": "loading",
    "WeightsLoadError": "loading",
    "load": "loading",
    "load_weights": "loading",
    "load_model": "loading",
    "load_state_into": "loading",
    "load_with_report": "loading",
    "use_legacy_patch_merging": "loading",
    "WEIGHTS": "registry",
    "Metric": "registry",
    "WeightEntry": "registry",
    "get_weights": "registry",
    "list_weights": "registry",
    "render_markdown": "registry",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module 'amos_zoo.weights' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"amos_zoo.weights.{_NAMES[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
