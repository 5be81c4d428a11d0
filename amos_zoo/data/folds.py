"""Cross-validation folds exactly as nnU-Net splits a dataset.

nnU-Net (v1 ``do_split`` and v2 ``generate_crossval_split``) sorts the case identifiers and splits them with
scikit-learn's ``KFold(n_splits=5, shuffle=True, random_state=12345)``. :func:`crossval_split` reproduces that
split without scikit-learn: the indices are shuffled by ``numpy.random.RandomState(seed)`` and cut into
consecutive folds whose sizes differ by at most one, larger folds first (tests/test_plan.py compares it with
nnU-Net's own function).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["crossval_split", "NNUNET_SEED", "NNUNET_FOLDS"]

#: nnU-Net's cross-validation seed and number of folds
NNUNET_SEED = 12345
NNUNET_FOLDS = 5


def crossval_split(
    identifiers: Sequence[str], n_splits: int = NNUNET_FOLDS, seed: int = NNUNET_SEED
) -> list[dict[str, list[str]]]:
    """``[{"train": [...], "val": [...]}, ...]`` for each fold, from the sorted identifiers, as nnU-Net splits them."""
    ids = sorted(identifiers)
    n = len(ids)
    if n < n_splits:
        raise ValueError(f"{n} cases cannot be split into {n_splits} folds")
    order = np.arange(n)
    np.random.RandomState(seed).shuffle(order)
    sizes = np.full(n_splits, n // n_splits, dtype=int)
    sizes[: n % n_splits] += 1
    folds, start = [], 0
    for size in sizes:
        val = order[start : start + size]
        train = np.setdiff1d(np.arange(n), val)  # sorted, as KFold's train indices
        folds.append({"train": [ids[i] for i in train], "val": [ids[i] for i in np.sort(val)]})
        start += size
    return folds
