"""Shared fixtures: the synthetic dataset (session-wide) and the real fixtures in ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real CT and SA-Med2D fixtures); tests skip when a clone does not have it."""
    if not (SHARED_DATA / "ct_example" / "image.nii.gz").is_file():
        pytest.skip(f"real-data fixtures not found at {SHARED_DATA} (only present beside the project checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A small synthetic AMOS dataset: 3 CT + 1 MRI training, 2 CT + 1 MRI validation, 1 test case."""
    from amos_zoo.data.synth import write_synthetic_dataset

    root = tmp_path_factory.mktemp("synth")
    return write_synthetic_dataset(root, n_train_ct=3, n_train_mr=1, n_val_ct=2, n_val_mr=1, n_test=1, seed=0)
