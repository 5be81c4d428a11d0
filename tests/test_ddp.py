"""DDP on 2 CPU processes (gloo): validation metrics equal the single-process ones, no case counted twice,
and a checkpoint written under DDP loads in a single process."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from amos_zoo.data.datamodule import SegmentationDataModule
from amos_zoo.train.module import SegmentationModule

SMALL_UNET = {"channels": (8, 16, 32), "strides": (2, 2), "num_res_units": 1}


def _setup(synth_root, cache):
    dm = SegmentationDataModule(str(synth_root), task="amos-ctmr", recipe="tiny", num_workers=0, cache_dir=str(cache))
    torch.manual_seed(0)
    model = SegmentationModule(
        arch="unet",
        arch_kwargs=SMALL_UNET,
        num_classes=16,
        roi_size=dm.patch_size,
        label_names=dm.label_names,
        sw_batch_size=2,
    )
    return dm, model


@pytest.mark.slow
def test_ddp_validation_equals_single_process(synth_root, tmp_path):
    dm, model = _setup(synth_root, tmp_path / "cache")
    dm.prepare_data()
    single = pl.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, default_root_dir=str(tmp_path / "single")
    )
    res_single = single.validate(model, dm, verbose=False)[0]
    assert res_single["val/cases"] == 3

    # 2 processes over 3 validation cases: one gets 2, the other 1; the sums are reduced across both
    ddp = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        logger=False,
        enable_progress_bar=False,
        default_root_dir=str(tmp_path / "ddp"),
        max_steps=2,
        limit_val_batches=1.0,
        num_sanity_val_steps=0,
        val_check_interval=2,
        check_val_every_n_epoch=None,
    )
    dm2, model2 = _setup(synth_root, tmp_path / "cache")
    model2.load_state_dict(model.state_dict())
    res_ddp = ddp.validate(model2, dm2, verbose=False)[0]
    assert res_ddp["val/cases"] == 3
    for key, value in res_single.items():
        assert res_ddp[key] == pytest.approx(value, abs=1e-5, nan_ok=True), key

    # training under DDP writes a checkpoint that loads in one process
    dm3, model3 = _setup(synth_root, tmp_path / "cache")
    ddp_fit = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        logger=False,
        enable_progress_bar=False,
        default_root_dir=str(tmp_path / "ddpfit"),
        max_steps=2,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    ddp_fit.fit(model3, dm3)
    saved = list((tmp_path / "ddpfit").rglob("*.ckpt"))
    assert saved
    reloaded = SegmentationModule.load_from_checkpoint(saved[0], weights_only=False)
    assert reloaded.hparams.num_classes == 16
