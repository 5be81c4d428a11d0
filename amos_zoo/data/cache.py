"""The preprocessing cache's safe-loading allow-list.

Cached validation cases are MetaTensors with their metadata (affine, original shape, applied operations);
training entries are plain tensors with the case's sampled positions. They are read back memory-mapped with
``torch.load(weights_only=True)``; this module allow-lists exactly the MONAI and numpy types those files hold,
so nothing else in a cache file can run code.
"""

from __future__ import annotations

import hashlib
import json
import warnings

import torch
from monai.data import PersistentDataset

from amos_zoo.io import numpy_safe_globals

__all__ = [
    "CACHE_SAFE_GLOBALS",
    "CACHE_FORMAT_VERSION",
    "ValidatedPersistentDataset",
    "allow_cache_types",
    "recipe_cache_key",
]

#: bump when the cached content changes meaning (new deterministic transform, dtype...)
CACHE_FORMAT_VERSION = 3  # 2: uint8 labels, class locations in training entries; 3: those only for nnunet sampling


def _monai_globals() -> list:
    from monai.data.meta_tensor import MetaTensor
    from monai.utils.enums import MetaKeys, SpaceKeys, TraceKeys

    return [MetaTensor, MetaKeys, SpaceKeys, TraceKeys]


CACHE_SAFE_GLOBALS: list = []


def allow_cache_types() -> list:
    """Allow-list the types of cached MetaTensors for weights-only loading (idempotent); returns them."""
    if not CACHE_SAFE_GLOBALS:
        CACHE_SAFE_GLOBALS.extend(numpy_safe_globals() + _monai_globals())
        torch.serialization.add_safe_globals(CACHE_SAFE_GLOBALS)
    return CACHE_SAFE_GLOBALS


def recipe_cache_key(recipe) -> str:
    """Suffix of every cache entry's name: a hash of the recipe's deterministic chain (every transform and its
    arguments, :func:`~amos_zoo.data.recipes.preprocessing_spec`), the cache format version and the MONAI version,
    so entries of another recipe, another plan or an older pipeline are never read."""
    import monai

    from amos_zoo.data.recipes import preprocessing_spec

    chain = [(spec.target, {k: str(v) for k, v in spec.kwargs.items()}) for spec in preprocessing_spec(recipe)]
    settings = {"chain": chain, "format": CACHE_FORMAT_VERSION, "monai": monai.__version__}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


class ValidatedPersistentDataset(PersistentDataset):
    """A MONAI PersistentDataset whose unreadable entries (a crashed run's truncated file, a corrupt file)
    are deleted and rebuilt, never used. Entries are memory-mapped (``torch.load(mmap=True)``, copy-on-write), as
    nnU-Net memory-maps its preprocessed arrays: a training crop reads the patch's pages, not the whole volume."""

    def _cachecheck(self, item_transformed):
        if self.cache_dir is not None:
            key = self.hash_func(item_transformed).decode("utf-8") + self.transform_hash
            path = self.cache_dir / f"{key}.pt"
            if path.is_file():
                try:
                    return torch.load(path, weights_only=self.weights_only, mmap=True)
                except Exception as err:  # noqa: BLE001 - any unreadable entry is rebuilt
                    warnings.warn(f"{path}: unreadable cache entry ({type(err).__name__}); rebuilding it", stacklevel=2)
                    path.unlink(missing_ok=True)
        return super()._cachecheck(item_transformed)
