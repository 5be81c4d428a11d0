"""All ten Decathlon tasks through the same data module, Lightning module, predictor and metric suite:
synthetic MSD-layout datasets with each task's channels (4D NIfTI) and labels; fit, predict, evaluate."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import pytorch_lightning as pl

from amos_zoo.cli.main import main
from amos_zoo.data.datamodule import SegmentationDataModule
from amos_zoo.data.msd import MSD_TASKS
from amos_zoo.engine.module import SegmentationModule
from amos_zoo.engine.predict import collect_inputs, load_predictor, predict_many
from amos_zoo.metrics.evaluate import evaluate_folders


@pytest.mark.parametrize("task", list(MSD_TASKS))
def test_fit_predict_evaluate_on_every_task_layout(task, tmp_path):
    spec = MSD_TASKS[task]
    root = tmp_path / task
    assert (
        main(["synth", "--layout", "msd", "--task", task, "--out", str(root), "--n-train-ct", "3", "--n-test", "1"])
        == 0
    )
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["modality"] == spec.modality and meta["labels"] == spec.labels
    first = nib.load(root / meta["training"][0]["image"])
    assert first.ndim == (4 if spec.num_channels > 1 else 3) and (
        first.shape[-1] == spec.num_channels or first.ndim == 3
    )
    label = np.asarray(nib.load(root / meta["training"][0]["label"]).dataobj)
    assert set(np.unique(label)) <= {int(k) for k in spec.labels} and label.max() > 0

    pl.seed_everything(0)
    dm = SegmentationDataModule(str(root), task="all", recipe="tiny", num_workers=0, cache_dir=str(tmp_path / "c"))
    assert dm.num_channels == spec.num_channels and dm.num_classes == len(spec.labels)
    expected = "CT" if spec.is_ct else "MRI"
    assert {c.modality for c in dm.index.split("training")} == {expected}  # per-task CT or MRI normalisation
    model = SegmentationModule(
        arch="unet",
        arch_kwargs={"channels": (8, 16, 32), "strides": (2, 2), "num_res_units": 1},
        in_channels=dm.num_channels,
        num_classes=dm.num_classes,
        roi_size=dm.patch_size,
        label_names=dm.label_names,
        lr=3e-3,
        sw_batch_size=2,
        max_steps=4,
    )
    trainer = pl.Trainer(
        max_steps=4,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(model, dm)
    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)

    report = predict_many(load_predictor(ckpt), collect_inputs(root / "dataset.json", split="training"), tmp_path / "p")
    assert not report["failed"] and len(report["done"]) == 3
    pred = nib.load(tmp_path / "p" / meta["training"][0]["image"].split("/")[-1])
    assert pred.shape == first.shape[:3] and np.allclose(pred.affine, first.affine)
    summary = evaluate_folders(
        tmp_path / "p", root / "labelsTr", tmp_path / "eval", labels=dm.index.labels, metrics=("dice", "nsd"), workers=1
    )
    organs = {dm.index.labels.display_name(i) for i in dm.index.labels.foreground_ids}
    assert summary["all"]["cases"] == 3 and set(summary["all"]["per_organ"]) == organs
    assert 0.0 <= summary["all"]["overall"]["dice"] <= 1.0
