"""The amos-zoo command: one parser style with examples, instant listings, protocols through LightningCLI, composed
configs, fit/validate (CSV + offline W&B), the safe --ckpt_path, synth and evaluate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import small_fit_args

from amos_zoo.cli.commands import COMMANDS
from amos_zoo.cli.main import main
from amos_zoo.experiments.run import config_root

REPO = Path(__file__).resolve().parents[1]
CONSOLE = str(Path(sys.executable).parent / "amos-zoo")


class Payload:
    """Stands for arbitrary Python objects in a pickle (a class needs code to rebuild)."""


def test_console_script_help_lists_every_command():
    import re

    out = subprocess.run([CONSOLE, "--help"], capture_output=True, text=True, check=True).stdout
    choices = re.search(r"\{([a-z0-9,-]+)\}", out).group(1).split(",")  # the usage line's subcommands
    assert set(choices) == {name.split()[0] for name in COMMANDS}
    epilog = out.split("Lightning subcommands")[1].split("Example:")[0]
    listed = [line.split()[0] for line in epilog.splitlines()[1:] if line.startswith("  ")]
    assert listed == ["fit", "validate", "test", "cache"]
    for cmd in listed:  # each one the help lists answers --help: the console script's function, in this process
        assert _exit_code(main, [cmd, "--help"]) == 0, cmd  # (four more interpreters: torch imported four more times)


def _exit_code(function, args: list[str]) -> int:
    """What a console script running ``function(args)`` exits with (its return value or its SystemExit's code)."""
    try:
        return function(args) or 0
    except SystemExit as exit_:
        return exit_.code or 0


@pytest.mark.parametrize("name", [n for n in COMMANDS])
def test_every_subcommand_help_ends_with_an_example(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*name.split(), "--help"])
    assert exit_.value.code == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert lines[-2].strip() == "Example:" and lines[-1].strip().startswith(f"amos-zoo {name}"), lines[-3:]


@pytest.mark.parametrize("name", ["fit", "validate", "test"])
def test_lightning_subcommand_help_ends_with_an_example(name, capsys):
    with pytest.raises(SystemExit):
        main([name, "--help"])
    out = capsys.readouterr().out
    assert "--data.root" in out and "--protocol" in out and "--trust" in out
    example = " ".join(out.rsplit("Example:", 1)[1].split())
    assert example.startswith(f"amos-zoo {name} ") and "--data.root" in example


def test_listings_import_no_torch():
    """`models`, `weights` and `protocol list` answer from stored facts: torch is never imported (what makes them
    instant; no wall time is asserted, CI machines differ)."""
    code = (
        "import sys; from amos_zoo.cli.main import main; "
        "main(['models']); main(['weights']); main(['protocol', 'list']); "
        "print('TORCH', 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.rsplit("TORCH", 1)[1].strip() == "False", out
    assert "swin_unetr" in out and "62.2" in out and "swin_unetr_btcv" in out and "btcv" in out


def test_models_listing_counts_match_the_networks(capsys):
    from amos_zoo.models.registry import MODEL_REGISTRY, count_parameters, create_model

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for spec in MODEL_REGISTRY.values():  # the stored counts are the networks' own
        net = create_model(spec.name, **spec.published_params_setting)
        assert count_parameters(net) == spec.params, spec.name
        assert f"{spec.params / 1e6:.1f}" in out.split(spec.name, 1)[1].splitlines()[0]
    assert "divisible by 32" in out


def test_protocol_through_lightning_cli_and_later_options_win(capsys):
    with pytest.raises(SystemExit):
        main(
            [
                "fit",
                "--config",
                "configs/base/gpu.yaml",
                "--protocol",
                "btcv/unetr",
                "--model.lr",
                "2e-4",
                "--data.root",
                "/data/amos22",
                "--print_config",
            ]
        )
    printed = yaml.safe_load(capsys.readouterr().out)
    model = printed["model"]
    assert model["arch"] == "unetr" and model["protocol"] == "btcv" and model["optimizer"] == "adamw"
    assert model["lr"] == 2e-4  # given after --protocol: overrides the card's 1e-4
    assert model["loss_kwargs"] == {"squared_pred": True, "smooth_nr": 0.0, "smooth_dr": 1e-6}  # UNETR's own loss
    assert model["arch_kwargs"]["hidden_size"] == 768 and model["sw_mode"] == "constant"
    assert printed["data"]["recipe"] == "btcv" and printed["trainer"]["max_steps"] == 120000


def test_every_shipped_config_composes(capsys):
    configs = sorted(config_root().rglob("*.yaml"))
    assert {p.relative_to(config_root()).parts[0] for p in configs} == {"base", "msd", "samed2d"}
    for config in configs:
        args = ["fit", "--config", str(config), "--data.root", "/x", "--print_config"]
        if config.parent.name == "msd":
            args = ["fit", "--config", "configs/base/gpu.yaml", "--protocol", "btcv/unet", *args[1:]]
        if config.parent.name == "samed2d":
            args = ["fit", "--config", "configs/base/gpu.yaml", "--config", str(config.parent / "base.yaml"), *args[1:]]
        with pytest.raises(SystemExit) as exit_:
            main(args)
        assert exit_.value.code in (0, None), config
        assert "class_path" in capsys.readouterr().out


def test_gpu_config_runs_ddp_with_a_setup_timeout_that_outlasts_a_cache_fill(synth_root, tmp_path, monkeypatch):
    """The other ranks wait at Lightning's setup barrier while rank 0 fills the cache: gpu.yaml's DDP timeout is
    longer than Lightning's default (30 min), and a command-line strategy still replaces it."""
    from datetime import timedelta

    from lightning_fabric.plugins.collectives.torch_collective import default_pg_timeout
    from pytorch_lightning.strategies import DDPStrategy, SingleDeviceStrategy

    from amos_zoo.train.cli import run_lightning_cli

    monkeypatch.chdir(tmp_path)
    common = ["--config", "configs/base/gpu.yaml", "--protocol", "quickstart/unet", "--data.root", str(synth_root)]
    common += ["--trainer.accelerator", "cpu", "--trainer.logger", "false"]
    cli = run_lightning_cli(common, run=False)
    strategy = cli.trainer.strategy
    assert isinstance(strategy, DDPStrategy) and strategy._timeout == timedelta(hours=2) > default_pg_timeout
    cli = run_lightning_cli([*common, "--trainer.strategy", "auto"], run=False)
    assert isinstance(cli.trainer.strategy, SingleDeviceStrategy)


def test_fit_validate_and_the_safe_checkpoint_loader(synth_root, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    common = [*small_fit_args(synth_root, tmp_path / "cache", "amos-ctmr"), "--trainer.enable_progress_bar", "false"]
    assert (
        main(
            [
                "fit",
                *common,
                "--trainer.max_steps",
                "6",
                "--trainer.val_check_interval",
                "3",
                "--trainer.log_every_n_steps",
                "1",
                "--trainer.logger+=pytorch_lightning.loggers.WandbLogger",
                "--trainer.logger.offline",
                "true",
                "--trainer.logger.save_dir",
                str(tmp_path / "wandb_logs"),
                "--trainer.logger.project",
                "amos-zoo-test",
            ]
        )
        == 0
    )
    run_dir = tmp_path / "runs" / "amos-ctmr" / "quickstart" / "unet"  # ${run_dir}: runs/<task>/<protocol>/<model>
    metrics_csv = next((run_dir / "logs" / "csv").glob("version_*/metrics.csv"))
    rows = metrics_csv.read_text().splitlines()
    header = rows[0].split(",")
    assert {"val/mean_dice", "val/dice_liver", "train/loss", "val/cases"} <= set(header)
    vals = [dict(zip(header, r.split(","))) for r in rows[1:]]
    assert [float(v["val/cases"]) for v in vals if v["val/cases"]] == [3.0, 3.0]  # two validations, 3 cases each
    assert list((tmp_path / "wandb_logs" / "wandb").glob("offline-run-*")), "W&B wrote an offline run"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, weights_only=True)
    assert saved["global_step"] == 6 and saved["amos_zoo"]["card"]["protocol"] == "quickstart"

    from amos_zoo.train.cli import run_lightning_cli

    logged = [float(v["val/mean_dice"]) for v in vals if v["val/mean_dice"]]
    cli = run_lightning_cli(["validate", *common, "--ckpt_path", str(ckpt)])
    assert float(cli.trainer.callback_metrics["val/mean_dice"]) == pytest.approx(logged[-1], abs=1e-6)

    # a checkpoint that needs full unpickling is refused with the project's message; --trust loads it
    saved["extra"] = Payload()
    unsafe = tmp_path / "unsafe.ckpt"
    torch.save(saved, unsafe)
    capsys.readouterr()
    assert main(["validate", *common, "--ckpt_path", str(unsafe)]) == 2
    err = capsys.readouterr().err
    assert "refused: loading it needs full unpickling" in err and "--trust" in err
    cli = run_lightning_cli(["validate", *common, "--ckpt_path", str(unsafe), "--trust", "true"])
    assert float(cli.trainer.callback_metrics["val/mean_dice"]) == pytest.approx(logged[-1], abs=1e-6)


def test_synth_and_evaluate_commands(tmp_path, capsys):
    root = tmp_path / "ds"
    args = ["--n_train_ct", "1", "--n_train_mr", "0", "--n_val_ct", "2", "--n_val_mr", "1", "--n_test", "0"]
    assert main(["synth", "--out", str(root), *args]) == 0
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["numValidation"] == 3 and [e["image"] for e in meta["validation"]][-1].endswith("amos_0500.nii.gz")
    out = tmp_path / "eval"
    evaluate = ["evaluate", "--pred", str(root / "labelsVa"), "--gt", str(root / "labelsVa"), "--out", str(out)]
    assert main([*evaluate, "--workers", "1", "--metrics", "dice,nsd"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["all"]["overall"]["dice"] == 1.0 and summary["all"]["overall"]["nsd"] == 1.0
    assert set(summary["per_modality"]) == {"CT", "MRI"} and summary["all"]["cases"] == 3
    missing = ["evaluate", "--pred", str(tmp_path / "nowhere"), "--gt", str(root / "labelsVa"), "--out", str(out)]
    assert main(missing) == 2
    assert "prediction folder not found" in capsys.readouterr().err


def test_unknown_protocol_and_bad_option_are_clear(capsys):
    with pytest.raises(Exception, match="unknown protocol 'nope'; available: amos-paper, btcv, nnunet-v2"):
        main(["fit", "--protocol", "nope/unet", "--data.root", "/x", "--print_config"])
    with pytest.raises(SystemExit) as exit_:
        main(["protocol", "show", "btcv", "--nonsense"])
    assert exit_.value.code == 2 and "unrecognized arguments: --nonsense" in capsys.readouterr().err
    assert main(["protocol", "show", "nope"]) == 2
    assert "unknown protocol 'nope'; available:" in capsys.readouterr().err


def test_an_unreadable_file_in_a_predict_folder_is_one_line_naming_it(amos_checkpoint, synth_root, tmp_path, capsys):
    """A text file named .nii.gz (and a truncated gzip) among the scans: each is reported in one line with the file
    and nibabel's reason (not MONAI's trace of every reader it tried); the readable scan is predicted; status 1."""
    scans = tmp_path / "scans"
    scans.mkdir()
    (scans / "amos_0006.nii.gz").write_bytes((synth_root / "imagesTs" / "amos_0006.nii.gz").read_bytes())
    (scans / "notes.nii.gz").write_text("not an image\n")
    (scans / "cut.nii.gz").write_bytes(b"\x1f\x8b\x08garbage")
    capsys.readouterr()
    code = main(["predict", "--weights", str(amos_checkpoint), "--input", str(scans), "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 1 and (tmp_path / "out" / "amos_0006.nii.gz").is_file()
    text = (captured.out + captured.err).replace("\r", "\n")
    failed = [line for line in text.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 2, text[-3000:]
    for name in ("notes.nii.gz", "cut.nii.gz"):
        [line] = [f for f in failed if name in f]
        assert "cannot read the scan (not a NIfTI file nibabel can open: ImageFileError:" in line, line
    assert "Traceback" not in text and "LoadImage cannot find a suitable reader" not in text
