"""SIGTERM during training or validation (a cluster's pre-emption, sent to the whole process group as SLURM does)
saves a checkpoint and stops; DataLoader workers survive it; training resumes from the checkpoint."""

from __future__ import annotations

import json
import os
import textwrap

import pytest
import torch
from forked import run_script

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, threading, time
    import pytorch_lightning as pl
    from amos_zoo.data.datamodule import SegmentationDataModule
    from amos_zoo.train.callbacks import PreemptionCheckpoint
    from amos_zoo.train.module import SegmentationModule

    root, out, steps, workers, kill_at, kill_in = sys.argv[1:7]
    steps, workers, kill_at = int(steps), int(workers), int(kill_at)
    ckpt = sys.argv[7] if len(sys.argv) > 7 else None

    def preempt():  # as SLURM (SIGTERM) or Ctrl-C (SIGINT) do: every process of the job, DataLoader workers too
        os.killpg(os.getpgid(0), getattr(signal, os.environ.get("PREEMPT_SIGNAL", "SIGTERM")))

    class Announce(pl.Callback):
        def on_train_batch_end(self, trainer, *args):
            print(f"STEP {trainer.global_step}", flush=True)
            if kill_in == "train" and trainer.global_step == kill_at:
                preempt()

        def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, *args):
            print(f"VAL {batch_idx}", flush=True)
            if kill_in == "val" and not trainer.sanity_checking and batch_idx == 0:
                preempt()

        def on_train_start(self, trainer, *args):
            if kill_in == "fetch":  # while the main process waits for the first batch from its (slow) workers
                threading.Timer(1.0, preempt).start()

    if kill_in == "fetch":
        from amos_zoo.data import resumable

        get_item = resumable.EpochSeededDataset.__getitem__

        def slow_get_item(self, index):
            time.sleep(3.0)
            return get_item(self, index)

        resumable.EpochSeededDataset.__getitem__ = slow_get_item

    pl.seed_everything(0)
    dm = SegmentationDataModule(root, task="amos-ctmr", recipe="tiny", num_workers=workers,
                                cache_dir=out + "/cache")
    model = SegmentationModule(arch="unet", arch_kwargs={"channels": (8, 16, 32), "strides": (2, 2),
                               "num_res_units": 1}, num_classes=16, roi_size=dm.patch_size, max_steps=steps,
                               sw_batch_size=2)
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                         val_check_interval=kill_at if kill_in == "val" else None,
                         limit_val_batches=None if kill_in == "val" else 0, num_sanity_val_steps=0,
                         default_root_dir=out, callbacks=[Announce(), PreemptionCheckpoint(dirpath=out)])
    trainer.fit(model, dm, ckpt_path=ckpt)
    print(f"DONE {trainer.global_step}", flush=True)
    """
)


def _run(script, synth_root, tmp_path, steps, workers, kill_at, kill_in, ckpt=None, sig="SIGTERM"):
    """The script in a process of its own (tests/forked.py: forked from a server that has done the imports)."""
    args = [str(synth_root), str(tmp_path), str(steps), str(workers), str(kill_at), kill_in]
    done = run_script(
        script,
        [*args, *([str(ckpt)] if ckpt else [])],
        timeout=300,
        new_session=True,  # its own process group, so the group signal reaches only this run
        env={**os.environ, "PREEMPT_SIGNAL": sig},
    )
    return done.returncode, done.stdout


@pytest.mark.parametrize(("workers", "sig"), [(0, "SIGTERM"), (2, "SIGINT")])
def test_signal_saves_checkpoint_and_training_resumes(synth_root, tmp_path, workers, sig):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    code, output = _run(script, synth_root, tmp_path, 10000, workers, 3, "train", sig=sig)
    assert code == 0, output
    # with workers: they ignore the signal (no KeyboardInterrupt traceback from a worker), the main process saves
    assert f"received {sig}: saved" in output and "Traceback" not in output, output
    ckpt = tmp_path / "preempted.ckpt"
    saved = torch.load(ckpt, weights_only=True, map_location="cpu")
    assert saved["global_step"] == 3  # the step during which the signal came, and no other
    assert "DONE 3" in output

    code, resumed = _run(script, synth_root, tmp_path, 7, workers, -1, "none", ckpt)
    assert code == 0, resumed
    steps = [int(line.split()[1]) for line in resumed.splitlines() if line.startswith("STEP")]
    assert steps == [4, 5, 6, 7] and "DONE 7" in resumed  # continues where it stopped


def test_workers_outlive_a_signal_that_comes_while_the_main_process_waits_for_them(synth_root, tmp_path):
    """SIGTERM to the group while the main process waits for a batch: workers that died with it would fail the
    run ("DataLoader worker ... is killed by signal"); ours ignore it, deliver the batch, and the step is saved."""
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    code, output = _run(script, synth_root, tmp_path, 10000, 2, -1, "fetch")
    assert code == 0, output
    assert "received SIGTERM: saved" in output and "Traceback" not in output, output
    saved = torch.load(tmp_path / "preempted.ckpt", weights_only=True, map_location="cpu")
    assert saved["global_step"] == 1


def test_sigterm_during_validation_ends_it_and_saves(synth_root, tmp_path):
    """The signal at the first validation case: the remaining cases are not run, the checkpoint is saved."""
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    code, output = _run(script, synth_root, tmp_path, 10000, 0, 2, "val")
    assert code == 0, output
    assert [line for line in output.splitlines() if line.startswith("VAL")] == ["VAL 0"], output
    assert "received SIGTERM: saved" in output and "DONE 2" in output, output
    saved = torch.load(tmp_path / "preempted.ckpt", weights_only=True, map_location="cpu")
    assert saved["global_step"] == 2


AMOS_ZOO_MAIN = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from amos_zoo.train import callbacks

    if os.environ.get("SIGTERM_AT"):  # "fold_1:2": a cluster's SIGTERM after step 2 of the run in folder fold_1
        folder, step = os.environ["SIGTERM_AT"].split(":")
        on_train_batch_end = callbacks.PreemptionCheckpoint.on_train_batch_end

        def preempt_then_continue(self, trainer, *args):
            if Path(trainer.default_root_dir).name == folder and trainer.global_step == int(step):
                os.kill(os.getpid(), signal.SIGTERM)
            on_train_batch_end(self, trainer, *args)

        callbacks.PreemptionCheckpoint.on_train_batch_end = preempt_then_continue

    from amos_zoo.cli.main import main

    sys.exit(main(sys.argv[1:]))
    """
)


def test_reproduce_preempted_in_the_second_fold_resumes_it_and_skips_the_first(tmp_path):
    """SIGTERM in fold 1 of a two-fold smoke reproduce: exit status 75, fold 1's checkpoint saved, nothing predicted
    and no row; the same command again reuses fold 0, resumes fold 1, and the row equals an uninterrupted run's."""
    from amos_zoo.experiments.run import resume_checkpoint
    from amos_zoo.train.preempted import PREEMPTED_EXIT_STATUS

    script = tmp_path / "reproduce.py"
    script.write_text(AMOS_ZOO_MAIN)

    def reproduce(out, **env):
        args = ["reproduce", "--smoke", "--task", "amos-ct", "--model", "unet", "--protocol", "quickstart"]
        args += ["--folds", "[0,1]", "--out", str(out), "--fit_args", '["--trainer.deterministic", "true"]']
        done = run_script(script, args, env={**os.environ, **env})  # tests/forked.py
        return done.returncode, done.stdout

    code, output = reproduce(tmp_path / "straight")
    assert code == 0, output[-3000:]
    code, output = reproduce(tmp_path / "preempted", SIGTERM_AT="fold_1:2")
    assert code == PREEMPTED_EXIT_STATUS, output[-3000:]
    root = tmp_path / "preempted" / "amos-ct" / "quickstart" / "unet"
    saved = torch.load(root / "fold_1" / "checkpoints" / "preempted.ckpt", weights_only=True, map_location="cpu")
    assert saved["global_step"] == 2
    # the checkpoint names its run configuration: a rerun with other options would not resume from it
    assert len(saved["amos_zoo"]["run_config_hash"]) == 64
    assert resume_checkpoint(root / "fold_1", ["--trainer.max_steps", "8"]) is None
    assert not (root / "fold_1" / "row.json").exists() and not (root / "fold_1" / "predictions").exists()
    assert not (root / "row.json").exists()
    fold0_written = (root / "fold_0" / "row.json").stat().st_mtime_ns

    code, output = reproduce(tmp_path / "preempted")
    assert code == 0, output[-3000:]
    assert "fold_0: finished with the same configuration" in output, output[-3000:]
    assert f"fold_1: resuming from {root / 'fold_1' / 'checkpoints' / 'preempted.ckpt'}" in output, output[-3000:]
    assert (root / "fold_0" / "row.json").stat().st_mtime_ns == fold0_written  # fold 0 not run again
    straight = json.loads((tmp_path / "straight" / "amos-ct" / "quickstart" / "unet" / "row.json").read_text())
    resumed = json.loads((root / "row.json").read_text())
    assert resumed["steps"] == straight["steps"] == [4, 4]
    assert resumed["fold_dice"] == straight["fold_dice"]
    assert resumed["metrics"] == straight["metrics"]


def test_fit_under_ddp_preempted_exits_with_the_preempted_status(synth_root, tmp_path):
    """`amos-zoo fit` on two gloo processes, both sent SIGTERM after step 2 (as SLURM signals every task): the
    checkpoint saved together at that step, exit status 75 (retry) from rank 0, whose launcher reports it."""
    from conftest import small_fit_args

    from amos_zoo.train.preempted import PREEMPTED_EXIT_STATUS

    script = tmp_path / "amos_zoo_main.py"
    script.write_text(AMOS_ZOO_MAIN)
    args = ["fit", *small_fit_args(synth_root, tmp_path / "cache", "amos-ct")]
    args += ["--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.max_steps", "50"]
    args += ["--trainer.val_check_interval", "100", "--trainer.enable_progress_bar", "false"]
    args += ["--trainer.strategy", "ddp", "--trainer.devices", "2"]  # rank 1 runs this script too: signalled alike
    # rank 0 forked (tests/forked.py); Lightning starts rank 1 as a new interpreter running the script
    done = run_script(
        script, args, env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "SIGTERM_AT": "run:2"}
    )
    assert done.returncode == PREEMPTED_EXIT_STATUS, done.stdout[-3000:]
    saved = torch.load(tmp_path / "run" / "checkpoints" / "preempted.ckpt", weights_only=True, map_location="cpu")
    assert saved["global_step"] == 2
