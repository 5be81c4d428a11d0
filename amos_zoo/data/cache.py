"""The preprocessing cache's safe-loading allow-list.

Cached validation cases are MetaTensors with their metadata (affine, original shape, applied operations);
training entries are plain tensors with the case's sampled positions. They are read back memory-mapped with
``torch.load(weights_only=True)``; this module allow-lists exactly the MONAI and numpy types those files hold,
so nothing else in a cache file can run code.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import warnings
from copy import deepcopy

import torch
from monai.data import PersistentDataset
from monai.data.utils import SUPPORTED_PICKLE_MOD
from monai.utils import convert_to_tensor, look_up_option

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
    """A MONAI PersistentDataset whose entries are written atomically where they live and never deleted by a reader.

    Entries are memory-mapped (``torch.load(mmap=True)``, copy-on-write), as nnU-Net memory-maps its preprocessed
    arrays: a training crop reads the patch's pages, not the whole volume. A new entry is written beside its final
    name under a name of its own writer (``.<entry>.<host>.<pid>.<random>.tmp``) and renamed into place: several
    writers (every node's local rank 0 filling one shared cache) never see each other's partial files, and none
    removes another's. (MONAI stages the entry in the system temporary folder and moves it, which is a copy, not a
    rename, when that folder is node-local and the cache on a shared disk.) An unreadable entry (a crashed run of an
    older version, a corrupt disk) is rebuilt and renamed over, not deleted first.
    """

    def _cachecheck(self, item_transformed):
        if self.cache_dir is None:
            return super()._cachecheck(item_transformed)
        key = self.hash_func(item_transformed).decode("utf-8") + self.transform_hash
        path = self.cache_dir / f"{key}.pt"
        if path.is_file():
            try:
                return torch.load(path, weights_only=self.weights_only, mmap=True)
            except Exception as err:  # noqa: BLE001 - any unreadable entry is rebuilt
                warnings.warn(f"{path}: unreadable cache entry ({type(err).__name__}); rebuilding it", stacklevel=2)
        item = self._pre_transform(deepcopy(item_transformed))  # keep the hashed original
        partial = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            with open(partial, "wb") as f:
                torch.save(
                    convert_to_tensor(item, convert_numeric=False, track_meta=self.track_meta),
                    f,
                    pickle_module=look_up_option(self.pickle_module, SUPPORTED_PICKLE_MOD),
                    pickle_protocol=self.pickle_protocol,
                )
            os.replace(partial, path)
        except PermissionError:  # a read-only cache: use the item without storing it (as MONAI does)
            pass
        finally:
            partial.unlink(missing_ok=True)
        return item
