"""The amos-zoo command: help texts, models, synth, LightningCLI fit/validate (CSV + offline W&B), evaluate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from amos_zoo.cli.main import main

REPO = Path(__file__).resolve().parents[1]


def test_console_script_help_lists_every_command():
    out = subprocess.run(
        [str(Path(sys.executable).parent / "amos-zoo"), "--help"], capture_output=True, text=True, check=True
    ).stdout
    for cmd in ("quickstart", "synth", "models", "check-data", "evaluate", "fit", "validate", "test", "predict"):
        assert cmd in out


@pytest.mark.parametrize("cmd", ["quickstart", "synth", "models", "check-data", "evaluate"])
def test_subcommand_help(cmd, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([cmd, "--help"])
    assert exit_.value.code == 0
    assert len(capsys.readouterr().out.splitlines()) > 4


def test_lightning_help_and_print_config(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    assert "--data.root" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(
            [
                "fit",
                "--config",
                str(REPO / "configs/amos_ct/swin_unetr.yaml"),
                "--data.root",
                "/data/amos22",
                "--print_config",
            ]
        )
    printed = capsys.readouterr().out
    assert "arch: swin_unetr" in printed and "recipe: btcv" in printed and "root: /data/amos22" in printed


def test_models_listing(capsys):
    assert main(["models", "--no-count"]) == 0
    out = capsys.readouterr().out
    for name in ("unet", "unetr", "swin_unetr", "vnet"):
        assert name in out
    assert "divisible by 32" in out


def test_every_config_parses(capsys):
    for config in sorted((REPO / "configs").glob("*/*.yaml")):
        with pytest.raises(SystemExit) as exit_:
            main(["fit", "--config", str(config), "--data.root", "/x", "--print_config"])
        assert exit_.value.code in (0, None), config
        assert "class_path" in capsys.readouterr().out


def test_fit_then_validate_through_lightning_cli(synth_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = [
        "--data.root",
        str(synth_root),
        "--data.recipe",
        "tiny",
        "--data.task",
        "amos-ctmr",
        "--data.num_workers",
        "0",
        "--data.cache_dir",
        str(tmp_path / "cache"),
        "--model.arch_kwargs",
        '{"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1}',
    ]
    main(
        [
            "fit",
            "--config",
            str(REPO / "configs/quickstart/unet.yaml"),
            *common,
            "--trainer.max_steps",
            "6",
            "--trainer.val_check_interval",
            "3",
            "--trainer.log_every_n_steps",
            "1",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.logger+=pytorch_lightning.loggers.WandbLogger",
            "--trainer.logger.offline",
            "true",
            "--trainer.logger.save_dir",
            str(tmp_path / "wandb_logs"),
            "--trainer.logger.project",
            "amos-zoo-test",
        ]
    )
    metrics_csv = next((tmp_path / "runs/quickstart/unet/csv").glob("version_*/metrics.csv"))
    header = metrics_csv.read_text().splitlines()[0]
    assert "val/mean_dice" in header and "val/dice_liver" in header and "train/loss" in header
    assert list((tmp_path / "wandb_logs" / "wandb").glob("offline-run-*")), "W&B wrote an offline run"
    ckpt = next((tmp_path / "runs/quickstart/unet").rglob("last.ckpt"))
    main(
        [
            "validate",
            "--config",
            str(REPO / "configs/quickstart/unet.yaml"),
            *common,
            "--trainer.enable_progress_bar",
            "false",
            "--ckpt_path",
            str(ckpt),
        ]
    )
    # the LightningCLI predict loop runs the test split through the checkpoint
    main(
        [
            "predict",
            "--config",
            str(REPO / "configs/quickstart/unet.yaml"),
            *common,
            "--trainer.enable_progress_bar",
            "false",
            "--ckpt_path",
            str(ckpt),
        ]
    )


def test_synth_and_evaluate_commands(tmp_path, capsys):
    root = tmp_path / "ds"
    assert (
        main(
            [
                "synth",
                "--out",
                str(root),
                "--n-train-ct",
                "1",
                "--n-train-mr",
                "0",
                "--n-val-ct",
                "2",
                "--n-val-mr",
                "1",
                "--n-test",
                "0",
            ]
        )
        == 0
    )
    assert json.loads((root / "dataset.json").read_text())["numValidation"] == 3
    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(root / "labelsVa"),
                "--gt",
                str(root / "labelsVa"),
                "--out",
                str(tmp_path / "eval"),
                "--workers",
                "1",
                "--metrics",
                "dice,nsd",
            ]
        )
        == 0
    )
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["all"]["overall"]["dice"] == 1.0 and summary["all"]["overall"]["nsd"] == 1.0
    assert set(summary["per_modality"]) == {"CT", "MRI"}
    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(tmp_path / "nowhere"),
                "--gt",
                str(root / "labelsVa"),
                "--out",
                str(tmp_path / "e2"),
            ]
        )
        == 2
    )
    assert "prediction folder not found" in capsys.readouterr().err


def test_amos_config_trains_on_the_amos_layout(synth_root, tmp_path, monkeypatch):
    """The real AMOS Task 2 Swin-UNETR config, shrunk only in size, trains on an AMOS-layout dataset."""
    monkeypatch.chdir(tmp_path)
    main(
        [
            "fit",
            "--config",
            str(REPO / "configs/amos_ctmr/swin_unetr.yaml"),
            "--data.root",
            str(synth_root),
            "--data.recipe",
            "tiny",
            "--data.patch_size",
            "[64, 64, 32]",
            "--data.num_workers",
            "0",
            "--data.cache_dir",
            str(tmp_path / "cache"),
            "--model.arch_kwargs",
            '{"feature_size": 12}',
            "--trainer.max_steps",
            "2",
            "--trainer.val_check_interval",
            "2",
            "--trainer.precision",
            "32-true",
            "--trainer.accelerator",
            "cpu",
            "--trainer.devices",
            "1",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.log_every_n_steps",
            "1",
        ]
    )
    metrics_csv = next((tmp_path / "runs/amos_ctmr/swin_unetr/csv").glob("version_*/metrics.csv"))
    assert "val/dice_aorta" in metrics_csv.read_text().splitlines()[0]
    assert list((tmp_path / "runs/amos_ctmr/swin_unetr").rglob("offline-run-*")), "W&B offline run written"
    assert list((tmp_path / "runs/amos_ctmr/swin_unetr").rglob("last.ckpt"))
