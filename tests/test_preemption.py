"""SIGTERM during training (a cluster's pre-emption) saves a checkpoint and stops; training resumes from it."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import torch

SCRIPT = textwrap.dedent(
    """
    import sys
    import pytorch_lightning as pl
    from amos_zoo.data.datamodule import SegmentationDataModule
    from amos_zoo.train.callbacks import PreemptionCheckpoint
    from amos_zoo.train.module import SegmentationModule

    class Announce(pl.Callback):
        def on_train_batch_end(self, trainer, *args):
            print(f"STEP {trainer.global_step}", flush=True)

    root, out, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ckpt = sys.argv[4] if len(sys.argv) > 4 else None
    pl.seed_everything(0)
    dm = SegmentationDataModule(root, task="amos-ctmr", recipe="tiny", num_workers=0, cache_dir=out + "/cache")
    model = SegmentationModule(arch="unet", arch_kwargs={"channels": (8, 16, 32), "strides": (2, 2),
                               "num_res_units": 1}, num_classes=16, roi_size=dm.patch_size, max_steps=steps)
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                         limit_val_batches=0, num_sanity_val_steps=0, default_root_dir=out,
                         callbacks=[PreemptionCheckpoint(dirpath=out), Announce()])
    trainer.fit(model, dm, ckpt_path=ckpt)
    print(f"DONE {trainer.global_step}", flush=True)
    """
)


def test_sigterm_saves_checkpoint_and_training_resumes(synth_root, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(synth_root), str(tmp_path), "10000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("STEP 3"):
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=300)
    lines.append(rest)
    output = "".join(lines)
    assert proc.returncode == 0, output
    assert "received SIGTERM: saved" in output
    ckpt = tmp_path / "preempted.ckpt"
    saved = torch.load(ckpt, weights_only=True, map_location="cpu")
    stopped_at = saved["global_step"]
    assert 3 <= stopped_at < 50
    done = [line for line in output.splitlines() if line.startswith("DONE")]
    assert done and int(done[0].split()[1]) == stopped_at  # stopped right after the signal

    resumed = subprocess.run(
        [sys.executable, str(script), str(synth_root), str(tmp_path), str(stopped_at + 4), str(ckpt)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"DONE {stopped_at + 4}" in resumed.stdout
    first_step = [line for line in resumed.stdout.splitlines() if line.startswith("STEP")][0]
    assert int(first_step.split()[1]) == stopped_at + 1  # continues where it stopped
