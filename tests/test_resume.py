"""A run killed with SIGKILL mid-epoch and resumed with ckpt_path="last" (what `amos-zoo fit --ckpt_path last`
does) reaches exactly the same weights as an uninterrupted run with the same seed (CPU, deterministic mode). Epochs
of 6 batches over 4 cases (``epoch_iterations``): every sample's random state comes from its position in the epoch,
which the resumed run recomputes."""

from __future__ import annotations

import textwrap

import torch
from forked import run_script

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.callbacks import ModelCheckpoint
    from amos_zoo.data.datamodule import SegmentationDataModule
    from amos_zoo.train.module import SegmentationModule

    root, out, steps, kill_at, resume = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]

    class KillAt(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            print(f"STEP {trainer.current_epoch} {trainer.global_step} {batch['case_id'][0]}", flush=True)

        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    pl.seed_everything(0)
    dm = SegmentationDataModule(root, task="amos-ctmr", recipe="tiny", num_workers=0, batch_size=1,
                                cache_dir=out + "/cache", seed=0, epoch_iterations=6)
    model = SegmentationModule(arch="unet", arch_kwargs={"channels": (8, 16, 32), "strides": (2, 2),
                               "num_res_units": 1}, num_classes=16, roi_size=dm.patch_size, max_steps=steps,
                               lr=3e-3, warmup_steps=2)
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                         limit_val_batches=0, num_sanity_val_steps=0, default_root_dir=out, deterministic=True,
                         callbacks=[KillAt(), ModelCheckpoint(dirpath=out + "/ckpt", save_last=True,
                                                              every_n_train_steps=1, save_top_k=0)])
    trainer.fit(model, dm, ckpt_path="last" if resume == "resume" else None)
    torch.save(model.state_dict(), out + "/final.pt")
    print(f"DONE {trainer.global_step}", flush=True)
    """
)


def _run(script, root, out, steps, kill_at, resume):
    """The script in a process of its own (tests/forked.py: forked from a server that has done the imports); its
    stdout and stderr together in ``stdout``."""
    return run_script(script, [str(root), str(out), str(steps), str(kill_at), resume])


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(synth_root, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    straight = _run(script, synth_root, tmp_path / "a", 10, -1, "fresh")
    assert straight.returncode == 0, straight.stdout[-3000:]

    killed = _run(script, synth_root, tmp_path / "b", 10, 7, "fresh")
    assert killed.returncode == -9  # SIGKILL, mid-epoch (6 batches per epoch: the second epoch's second step)
    assert not (tmp_path / "b" / "final.pt").exists()
    resumed = _run(script, synth_root, tmp_path / "b", 10, -1, "resume")
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert "DONE 10" in resumed.stdout
    assert "not resumable" not in resumed.stdout

    steps = lambda out: [line.split()[1:] for line in out.splitlines() if line.startswith("STEP")]  # noqa: E731
    reference = {s[1]: s for s in steps(straight.stdout)}
    for s in steps(resumed.stdout):  # the resumed run sees exactly the batches the uninterrupted run saw
        assert reference[s[1]] == s
    assert steps(resumed.stdout)[0][1] == "6"  # last.ckpt was written at step 6, before the kill at 7

    a = torch.load(tmp_path / "a" / "final.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "final.pt", weights_only=True)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
