"""Shared fixtures: the synthetic dataset (session-wide) and the real fixtures in ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one xdist worker per core: one compute thread each (torch's and OpenMP's), inherited by
    # the notebook kernels and DDP processes they start. Two workers x N threads on N cores oversubscribe the
    # CPU, and OpenMP's spinning threads then slow everything down several times.
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


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


SMALL_UNET = {"channels": (8, 16, 32), "strides": (2, 2), "num_res_units": 1}


def small_fit_args(data_root: Path, cache_dir: Path, task: str | None = None) -> list[str]:
    """`amos-zoo fit` options of a small CPU run: cpu.yaml, the quickstart protocol on the tiny recipe, SMALL_UNET."""
    import json

    args = ["--config", str(REPO / "configs/base/cpu.yaml"), "--protocol", "quickstart/unet"]
    args += ["--data.root", str(data_root), "--data.recipe", "tiny", *(["--data.task", task] if task else [])]
    return [*args, "--data.cache_dir", str(cache_dir), "--model.arch_kwargs", json.dumps(SMALL_UNET)]


#: LightningCLI options that keep a test's `amos-zoo fit` quiet and small (CPU, fp32, no logger/callbacks/files)
QUIET_CLI_TRAINER = [
    "--trainer.precision",
    "32-true",
    "--trainer.accelerator",
    "cpu",
    "--trainer.logger",
    "false",
    "--trainer.callbacks",
    "[]",
    "--trainer.enable_checkpointing",
    "false",
]


def small_module(dm, steps: int, arch: str = "unet", arch_kwargs: dict | None = None, **kw):
    """A SegmentationModule for the data module ``dm`` (the small UNet unless told otherwise)."""
    from amos_zoo.train.module import SegmentationModule

    return SegmentationModule(
        arch=arch,
        arch_kwargs=SMALL_UNET if arch_kwargs is None else arch_kwargs,
        in_channels=dm.num_channels,
        num_classes=dm.num_classes,
        roi_size=dm.patch_size,
        label_names=dm.label_names,
        lr=3e-3,
        sw_batch_size=kw.pop("sw_batch_size", 2),
        max_steps=steps,
        **kw,
    )


def cpu_trainer(steps: int, root: Path | None = None, **kw):
    """A quiet CPU Lightning trainer for ``steps`` optimiser steps."""
    import pytorch_lightning as pl

    options = {
        "accelerator": "cpu",
        "logger": False,
        "enable_progress_bar": False,
        "enable_checkpointing": False,
        "num_sanity_val_steps": 0,
        **kw,
    }
    if root is not None:
        options["default_root_dir"] = str(root)
    return pl.Trainer(max_steps=steps, **options)


def train_tiny_checkpoint(
    root: Path, out: Path, steps: int, task: str = "amos-ct", seed: int = 0, flip_prob: float = 0.0
) -> Path:
    """Train the small UNet on ``root`` (tiny recipe, CPU) for ``steps`` and save an amos-zoo checkpoint
    (``flip_prob``: mirror each axis with this probability in training, which allows mirroring TTA)."""
    import dataclasses

    import pytorch_lightning as pl

    from amos_zoo.data.datamodule import SegmentationDataModule

    pl.seed_everything(seed)
    dm = SegmentationDataModule(str(root), task=task, recipe="tiny", num_workers=0, cache_dir=str(out / "cache"))
    dm.recipe = dataclasses.replace(dm.recipe, flip_prob=flip_prob)
    model = small_module(dm, steps)
    trainer = cpu_trainer(steps, out, limit_val_batches=0, deterministic=True)
    trainer.fit(model, dm)
    path = out / "model.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="session")
def amos_checkpoint(synth_root, tmp_path_factory) -> Path:
    """The small UNet trained 400 steps on the synthetic AMOS CT cases with mirroring (a 'pretrained' AMOS model;
    mean Dice 0.36 on the 2 validation CT cases, measured once: tests/test_predict.py)."""
    import os

    from filelock import FileLock

    # trained once per test run: under xdist the workers share this run's temporary root (deterministic training,
    # so whichever worker trains it, the file is the same)
    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "amos_ckpt_shared"
    shared.mkdir(exist_ok=True)
    with FileLock(str(shared) + ".lock"):
        path = shared / "model.ckpt"
        if not path.is_file():
            trained = train_tiny_checkpoint(synth_root, shared / "train", steps=400, flip_prob=0.5)
            trained.rename(path)
    return path


#: the longest tests, longest first (measured with --durations): started first, so that the two xdist workers
#: finish together instead of one running the quickstart alone at the end
LONGEST_FIRST = ("test_quickstart.py", "test_readme.py", "01_quickstart.ipynb", "test_gpu_run.py", "02_finetune.ipynb")


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        name = item.nodeid.split("::")[0].rsplit("/", 1)[-1]
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the rest keep their order


def _free_port_in(start: int, count: int) -> int:
    """A port of [start, start + count) that nothing listens on now."""
    import random
    import socket

    for port in random.Random().sample(range(start, start + count), 200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {start}..{start + count - 1}")


@pytest.fixture(autouse=True)
def _master_port_of_this_worker(monkeypatch):
    """DDP runs (gloo) of the two xdist workers take ports from disjoint ranges: Lightning's own free-port search
    (bind to port 0, close, listen later) let two workers' launches pick the same port at the same time."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    monkeypatch.setenv("MASTER_PORT", str(_free_port_in(21000 + 4000 * index, 4000)))
