"""Training at scale, simulated on the CPU: an epoch of ``epoch_iterations`` batches over fewer cases draws pairwise
distinct samples on one process and on two (gloo, a global batch split over them); amos-paper's plateau schedule and
early stop act on the loss averaged over every process, so both processes keep the same learning rate and stop at
the same step."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import textwrap
from collections import defaultdict
from pathlib import Path

from forked import run_script

from amos_zoo.data.datamodule import SegmentationDataModule

REPO = Path(__file__).resolve().parents[1]


def _digest(tensor) -> str:
    return hashlib.sha1(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def test_one_process_epoch_with_more_samples_than_cases_draws_distinct_samples(synth_root, tmp_path):
    """4 training cases, 2 x 4 batches: each case is visited twice, and no two of the 8 samples are equal."""
    dm = SegmentationDataModule(
        str(synth_root),
        task="amos-ctmr",
        recipe="tiny",
        num_workers=0,
        batch_size=2,
        epoch_iterations=4,
        cache_dir=str(tmp_path / "cache"),
    )
    # every sample's intensities scaled and shifted by its own random factors: distinct random states give distinct
    # tensors (the tiny recipe's few crop positions alone can coincide)
    dm.recipe = dataclasses.replace(dm.recipe, intensity_prob=1.0)
    dm.setup("fit")
    assert len(dm.train_ds) == 4
    loader = dm.train_dataloader()
    samples = [(cid, _digest(img)) for batch in loader for cid, img in zip(batch["case_id"], batch["image"])]
    assert len(samples) == 8
    assert max(sum(c == cid for c, _ in samples) for cid, _ in samples) >= 2  # cases repeat within the epoch
    assert len({d for _, d in samples}) == 8  # ...and every visit is its own sample


DDP_SCRIPT = textwrap.dedent(
    """
    import dataclasses, hashlib, json, sys
    import pytorch_lightning as pl
    from amos_zoo.data.datamodule import SegmentationDataModule
    from amos_zoo.train.module import SegmentationModule

    root, out = sys.argv[1], sys.argv[2]

    class Record(pl.Callback):
        def __init__(self):
            self.samples, self.lr, self.ma = [], [], []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            for img in batch["image"]:
                digest = hashlib.sha1(img.contiguous().numpy().tobytes()).hexdigest()
                self.samples.append([trainer.current_epoch, digest])
            self.lr.append(trainer.optimizers[0].param_groups[0]["lr"])

        def on_train_batch_end(self, trainer, pl_module, *args):
            self.ma.append(pl_module._fork_epoch["ma"])

        def on_train_end(self, trainer, pl_module):
            record = {"samples": self.samples, "lr": self.lr, "ma": self.ma, "stop": trainer.global_step}
            with open(f"{out}/rank{trainer.global_rank}.json", "w") as f:
                json.dump(record, f)

    pl.seed_everything(0)
    # nnU-Net v2's global batch of 4 split over the 2 processes: 2 each
    dm = SegmentationDataModule(root, task="amos-ctmr", recipe="tiny", num_workers=0, batch_size=4,
                                global_batch=True, epoch_iterations=3, cache_dir=out + "/cache")
    dm.recipe = dataclasses.replace(dm.recipe, intensity_prob=1.0)  # every sample's own intensity scale and shift
    # amos-paper's schedule with a short nnU-Net epoch (1 step): plateau without patience, early stop after 2 epochs
    model = SegmentationModule(arch="unet", arch_kwargs={"channels": (8, 16, 32), "strides": (2, 2),
                               "num_res_units": 1}, num_classes=16, roi_size=dm.patch_size, max_steps=12,
                               lr=1e-5, scheduler="plateau", epoch_steps=1, plateau_patience=0,
                               early_stop_patience=2)
    trainer = pl.Trainer(max_steps=12, accelerator="cpu", devices=2, strategy="ddp", logger=False,
                         enable_progress_bar=False, enable_checkpointing=False, limit_val_batches=0,
                         num_sanity_val_steps=0, default_root_dir=out, callbacks=[Record()])
    trainer.fit(model, dm)
    """
)


def test_two_processes_draw_distinct_samples_and_keep_one_plateau_schedule(synth_root, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    # rank 0 forked (tests/forked.py); Lightning starts rank 1 as a new interpreter running the script
    done = run_script(script, [str(synth_root), str(tmp_path)], env=env, cwd=REPO)
    assert done.returncode == 0, done.stdout[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]

    # 3 batches of 2 (global batch 4) per process and epoch = 12 samples over 4 cases; pairwise distinct, across
    # processes
    by_epoch = defaultdict(list)
    for rank in ranks:
        for epoch, digest in rank["samples"]:
            by_epoch[epoch].append(digest)
    assert by_epoch
    for epoch, digests in by_epoch.items():
        complete = len(digests) == 12
        assert complete or epoch == max(by_epoch), (epoch, len(digests))
        assert len(set(digests)) == len(digests), f"epoch {epoch}: {len(digests) - len(set(digests))} repeated"

    # the loss average, the learning rate at every step and the stopping step are the same on both processes
    assert ranks[0]["ma"] == ranks[1]["ma"]
    assert ranks[0]["lr"] == ranks[1]["lr"]
    assert ranks[0]["stop"] == ranks[1]["stop"] < 12  # the early stop came, on both processes at the same step
    assert len(set(ranks[0]["lr"])) > 1  # the plateau schedule did lower the learning rate
