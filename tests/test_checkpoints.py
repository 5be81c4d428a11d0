"""Checkpoints that lose little work: the shipped configs write ``last.ckpt`` every 30 minutes of training (not only
at validation, which nnunet-v2 runs every 12,500 steps), atomically. Time is simulated: a fake clock advanced by the
steps, so nothing depends on how fast the machine is."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from conftest import small_fit_args
from pytorch_lightning.callbacks import model_checkpoint

from amos_zoo.train.callbacks import AtomicCheckpointIO
from amos_zoo.train.cli import run_lightning_cli


def test_shipped_config_writes_last_checkpoint_every_30_minutes(synth_root, tmp_path, monkeypatch):
    clock = {"now": 0.0}
    monkeypatch.setattr(model_checkpoint, "time", SimpleNamespace(monotonic=lambda: clock["now"]))
    run = tmp_path / "run"
    args = [*small_fit_args(synth_root, tmp_path / "cache", "amos-ct"), "--trainer.default_root_dir", str(run)]
    args += ["--trainer.max_steps", "6", "--trainer.val_check_interval", "1000", "--trainer.logger", "false"]
    args += ["--trainer.enable_progress_bar", "false", "--data.epoch_iterations", "100"]
    cli = run_lightning_cli(args, run=False)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    timed = [c for c in cli.trainer.callbacks if getattr(c, "_train_time_interval", None) is not None]
    assert [c._train_time_interval for c in timed] == [timedelta(minutes=30)]

    seen: list[int | None] = []

    class TwentyMinutesPerStep(pl.Callback):
        def on_train_batch_start(self, trainer, *args):
            clock["now"] = trainer.global_step * 20 * 60.0

        def on_train_batch_end(self, trainer, *args):  # runs after the checkpoint callbacks
            last = run / "checkpoints" / "last.ckpt"
            seen.append(torch.load(last, weights_only=True)["global_step"] if last.is_file() else None)

    cli.trainer.callbacks.append(TwentyMinutesPerStep())
    cli.trainer.fit(cli.model, cli.datamodule)
    # steps end at 0, 20, 40, 60, 80, 100 minutes: saved after 40 (step 3) and 80 (step 5), without validation
    assert seen == [None, None, 3, 3, 5, 5]
    assert not list((run / "checkpoints").glob("*.tmp")) and not list((run / "checkpoints").glob("last-v*"))


def test_atomic_checkpoint_io_leaves_the_previous_checkpoint_whole_when_a_save_fails(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1}, path)
    assert torch.load(path, weights_only=True) == {"global_step": 1}

    def killed_while_writing(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # as a signal during the write

    monkeypatch.setattr(torch, "save", killed_while_writing)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"global_step": 1}
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no partial file left behind


def test_time_interval_is_an_option(synth_root, tmp_path):
    """As the README shows: the interval of the base configs' last callback, from the command line."""
    args = [*small_fit_args(synth_root, tmp_path / "cache", "amos-ct"), "--trainer.logger", "false"]
    args += ["--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.callbacks.train_time_interval", "0:10:00"]
    cli = run_lightning_cli(args, run=False)
    timed = [c._train_time_interval for c in cli.trainer.callbacks if getattr(c, "_train_time_interval", None)]
    assert timed == [timedelta(minutes=10)]
