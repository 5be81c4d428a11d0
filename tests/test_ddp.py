"""DDP with the `ddp` strategy the README documents (`amos-zoo fit --trainer.strategy ddp`), 2 CPU processes
(gloo): the DDP run's logged validation equals a single process's validation of its checkpoint, every tensor
of that checkpoint loads (weights-only) into the network, and validation with more processes than cases
finishes with each case counted once."""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import SMALL_UNET, small_fit_args
from forked import run_script

from amos_zoo.data.datamodule import SegmentationDataModule
from amos_zoo.train.module import SegmentationModule

REPO = Path(__file__).resolve().parents[1]
AMOS_ZOO = str(Path(sys.executable).parent / "amos-zoo")


def _amos_zoo(args: list[str], cwd: Path) -> str:
    """The installed `amos-zoo` command: rank 0 forked (tests/forked.py), the other ranks started by Lightning as
    new interpreters running the command."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    done = run_script(AMOS_ZOO, args, env=env, cwd=cwd)
    assert done.returncode == 0, done.stdout[-4000:]
    return done.stdout


def _common(synth_root: Path, tmp_path: Path, task: str, devices: int) -> list[str]:
    return [
        *small_fit_args(synth_root, tmp_path / "cache", task),
        "--model.sw_batch_size",
        "2",
        "--trainer.devices",
        str(devices),
        "--trainer.strategy",
        "ddp",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(tmp_path / "run"),
    ]


def _logged(run: Path) -> dict[str, float]:
    rows = [r for f in sorted(run.rglob("metrics.csv")) for r in csv.DictReader(f.open())]
    return {k: float(v) for r in rows for k, v in r.items() if k.startswith("val/") and v != ""}


@pytest.mark.slow
def test_ddp_fit_validation_equals_a_single_process_and_its_checkpoint_loads_weights_only(synth_root, tmp_path):
    common = _common(synth_root, tmp_path, "amos-ctmr", devices=2)
    _amos_zoo(["fit", *common, "--trainer.max_steps", "8", "--trainer.val_check_interval", "8"], tmp_path)
    ddp_logged = _logged(tmp_path / "run")
    assert ddp_logged["val/cases"] == 3  # 3 validation cases over 2 processes (2 + 1), each counted once

    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert raw["global_step"] == 8  # trained: 8 steps under DDP
    dm = SegmentationDataModule(
        str(synth_root), task="amos-ctmr", recipe="tiny", num_workers=0, cache_dir=str(tmp_path / "cache")
    )
    model = SegmentationModule(
        arch="unet",
        arch_kwargs=SMALL_UNET,
        num_classes=16,
        roi_size=dm.patch_size,
        label_names=dm.label_names,
        sw_batch_size=2,
    )
    untrained = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(raw["state_dict"], strict=True)
    loaded = model.state_dict()
    assert loaded.keys() == raw["state_dict"].keys()
    for key, tensor in raw["state_dict"].items():  # every tensor, by name
        assert torch.equal(loaded[key], tensor), key
    assert any(not torch.equal(untrained[k], loaded[k]) for k in loaded)

    single = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    res = single.validate(model, dm, verbose=False)[0]
    assert res["val/cases"] == 3
    for key, value in ddp_logged.items():
        assert res[key] == pytest.approx(value, abs=1e-5, nan_ok=True), key


@pytest.mark.slow
def test_validation_with_more_processes_than_cases_finishes(synth_root, tmp_path):
    """amos-mr has 1 validation case: with 2 processes one of them has none; nothing hangs, the case is scored once."""
    common = _common(synth_root, tmp_path, "amos-mr", devices=2)
    _amos_zoo(["validate", *common], tmp_path)
    logged = _logged(tmp_path / "run")
    assert logged["val/cases"] == 1 and 0.0 <= logged["val/mean_dice"]


@pytest.mark.slow
def test_reproduce_folds_under_ddp_run_every_fold_on_every_rank(tmp_path):
    """Two folds under two gloo processes, with max_steps below the first validation and no checkpoint callback (the
    fallback save after fitting is a collective on both processes); one cross-validation row at the end. Lightning
    relaunches the command per rank: the fit is distributed, while prediction, evaluation and rows come from rank 0
    only (one row per fold and one for the run, printed once)."""
    fit_args = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.val_check_interval", "1000"]
    fit_args += ["--trainer.callbacks", "[]", "--trainer.enable_checkpointing", "false"]
    out = _amos_zoo(
        [
            "reproduce",
            "--smoke",
            "--task",
            "amos-ct",
            "--model",
            "unet",
            "--protocol",
            "quickstart",
            "--folds",
            "[0,1]",
            "--out",
            str(tmp_path / "runs"),
            "--fit_args",
            json.dumps(fit_args),
        ],
        tmp_path,
    )
    root = tmp_path / "runs" / "amos-ct" / "quickstart" / "unet"
    row = json.loads((root / "row.json").read_text())
    assert row["folds"] == [0, 1] and row["steps"] == [4, 4], out[-3000:]
    for k in (0, 1):
        fold = json.loads((root / f"fold_{k}" / "row.json").read_text())
        assert fold["devices"] == 2 and fold["checkpoint"].endswith("final.ckpt")
        assert (fold["world_size"], fold["batch_per_process"], fold["global_batch"]) == (2, 1, 2)
        saved = torch.load(fold["checkpoint"], map_location="cpu", weights_only=True)
        assert saved["global_step"] == 4
    # every labelled amos-ct case of the synthetic set (3 training + 2 validation CT) validated once over the folds
    assert row["metrics"]["cases"] == 5
    assert sum(len(list((root / f"fold_{k}" / "predictions").glob("*.nii.gz"))) for k in (0, 1)) == 5
    rows = sorted(p.relative_to(root).as_posix() for p in root.rglob("row.json"))
    assert rows == ["fold_0/row.json", "fold_1/row.json", "row.json"]
    assert out.count("row written under") == 1  # rank 1 neither predicted nor wrote
