"""Pretrained weights: the registry (single source of truth for weights.md), safe verified downloads, the real
checkpoint formats, and ``load(source, model=None, *, sha256=None, trust=False)``."""

from amos_zoo.weights.download import HashMismatchError, cache_dir, fetch, sha256_of
from amos_zoo.weights.formats import UnsafeCheckpointError, read_weights_file
from amos_zoo.weights.loading import (
    LoadReport,
    UnverifiedWeightsError,
    WeightsLoadError,
    load,
    load_state_into,
    load_with_report,
    use_legacy_patch_merging,
)
from amos_zoo.weights.registry import WEIGHTS, Metric, WeightEntry, get_weights, list_weights, render_markdown

__all__ = [
    "HashMismatchError",
    "LoadReport",
    "Metric",
    "UnsafeCheckpointError",
    "UnverifiedWeightsError",
    "WEIGHTS",
    "WeightEntry",
    "WeightsLoadError",
    "cache_dir",
    "fetch",
    "get_weights",
    "list_weights",
    "load",
    "load_state_into",
    "load_with_report",
    "read_weights_file",
    "render_markdown",
    "sha256_of",
    "use_legacy_patch_merging",
]
