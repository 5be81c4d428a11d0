"""Fine-tuning: an AMOS checkpoint fine-tuned to a 2-class task beats training from scratch for the same
steps; the encoder can be frozen; pretrained layers can get a lower learning rate; fine-tuning is `amos-zoo fit` with
`--model.pretrained`."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from conftest import QUIET_CLI_TRAINER, cpu_trainer, small_module

from amos_zoo.cli.main import main
from amos_zoo.data.datamodule import SegmentationDataModule
from amos_zoo.data.synth import write_synthetic_dataset
from amos_zoo.models.registry import encoder_keys


@pytest.fixture(scope="module")
def spleen_root(tmp_path_factory):
    """A 2-class (background, spleen) synthetic CT task, like MSD Task09, from other phantoms than the AMOS set."""
    root = tmp_path_factory.mktemp("spleen")
    return write_synthetic_dataset(
        root, n_train_ct=3, n_train_mr=0, n_val_ct=2, n_val_mr=0, n_test=1, seed=7, organs=("spleen",)
    )


def _run(root, tmp_path, steps, **module_kw):
    pl.seed_everything(1)
    dm = SegmentationDataModule(str(root), task="amos-ct", recipe="tiny", num_workers=0, cache_dir=str(tmp_path / "c"))
    model = small_module(dm, steps, **module_kw)
    trainer = cpu_trainer(steps, tmp_path, deterministic=True)
    trainer.fit(model, dm)
    dice = float(trainer.validate(model, dm, verbose=False)[0]["val/mean_dice"])
    return model, dice


def test_finetuning_beats_scratch_for_the_same_steps(amos_checkpoint, spleen_root, tmp_path):
    steps = 15
    _, scratch = _run(spleen_root, tmp_path / "scratch", steps)
    tuned, finetuned = _run(spleen_root, tmp_path / "tuned", steps, pretrained=str(amos_checkpoint))
    report = tuned.pretrained_report
    assert report.fmt == "lightning" and report.reinitialised and not report.missing  # 16 -> 2 classes: new head
    assert finetuned > scratch + 0.2, (finetuned, scratch)
    # the saved hyperparameters rebuild the fine-tuned network without the pretrained file
    assert tuned.hparams.num_classes == 2


def test_frozen_encoder_stays_fixed_and_pretrained_layers_get_a_lower_lr(amos_checkpoint, spleen_root, tmp_path):
    start = torch.load(amos_checkpoint, weights_only=True)["state_dict"]
    model, _ = _run(
        spleen_root,
        tmp_path,
        6,
        pretrained=str(amos_checkpoint),
        freeze_encoder_epochs=100,
        pretrained_lr_scale=0.1,
        head_init="random",
    )
    enc = encoder_keys("unet", model.net)
    params = dict(model.net.named_parameters())
    assert enc and all(torch.equal(params[k], start[f"net.{k}"]) for k in enc if k in params)
    decoder = [k for k in params if k not in enc and f"net.{k}" in start and params[k].shape == start[f"net.{k}"].shape]
    assert any(not torch.equal(params[k], start[f"net.{k}"]) for k in decoder)
    groups = model.trainer.optimizers[0].param_groups
    assert len(groups) == 2 and groups[0]["initial_lr"] == pytest.approx(3e-4) and groups[1]["initial_lr"] == 3e-3


def test_fit_with_pretrained_weights_finetunes(amos_checkpoint, spleen_root, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "fit",
            "--config",
            "configs/base/cpu.yaml",
            "--protocol",
            "quickstart/unet",
            "--model.pretrained",
            str(amos_checkpoint),
            "--data.root",
            str(spleen_root),
            "--data.recipe",
            "tiny",
            "--data.cache_dir",
            str(tmp_path / "cache"),
            "--model.arch_kwargs",
            '{"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1}',
            "--trainer.max_steps",
            "3",
            "--trainer.val_check_interval",
            "3",
            "--trainer.default_root_dir",
            str(out),
            *QUIET_CLI_TRAINER,
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "(lightning): loaded 22 of 26 tensors, re-initialised 4" in printed  # 16 AMOS classes -> 2: new head
    assert "verified: local file" in printed
    assert "head channels of the shared classes (background, spleen) copied" in printed
