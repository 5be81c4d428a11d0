"""Checkpoints load weights-only: a pickle that needs code execution is refused unless explicitly trusted;
a checkpoint trained on another label map is refused with a clear message."""

from __future__ import annotations

import json
import shutil

import pytest
import pytorch_lightning as pl
import torch

from amos_zoo.cli.main import main
from amos_zoo.data.datamodule import SegmentationDataModule
from amos_zoo.infer.pipeline import load_predictor
from amos_zoo.train.module import SegmentationModule


class Payload:
    """Stands for arbitrary Python objects in a pickle (a custom class needs code to rebuild)."""

    def __init__(self) -> None:
        self.note = "not a tensor"


def _train(root, tmp_path, steps=2):
    dm = SegmentationDataModule(
        str(root), task="amos-ctmr", recipe="tiny", num_workers=0, cache_dir=str(tmp_path / "cache")
    )
    model = SegmentationModule(
        arch="unet",
        arch_kwargs={"channels": (8, 16, 32), "strides": (2, 2), "num_res_units": 1},
        num_classes=dm.num_classes,
        roi_size=dm.patch_size,
        label_names=dm.label_names,
    )
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, dm)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_untrusted_pickle_is_refused(synth_root, tmp_path, capsys):
    ckpt = torch.load(_train(synth_root, tmp_path), weights_only=True)
    ckpt["extra"] = Payload()
    unsafe = tmp_path / "unsafe.ckpt"
    torch.save(ckpt, unsafe)
    with pytest.raises(ValueError, match="refused: loading it needs full unpickling.*--trust"):
        load_predictor(unsafe)
    assert (
        main(
            ["predict", "--weights", str(unsafe), "--input", str(synth_root / "imagesTs"), "--out", str(tmp_path / "p")]
        )
        == 2
    )
    assert "refused" in capsys.readouterr().err
    assert load_predictor(unsafe, trust=True).recipe.name == "tiny"  # explicit trust loads it


def test_checkpoint_with_another_label_map_is_refused(synth_root, tmp_path):
    ckpt = _train(synth_root, tmp_path)
    other = tmp_path / "other"
    shutil.copytree(synth_root, other, ignore=shutil.ignore_patterns(".amos_zoo_cache"))
    meta = json.loads((other / "dataset.json").read_text())
    meta["labels"]["15"] = "uterus"
    (other / "dataset.json").write_text(json.dumps(meta))
    dm = SegmentationDataModule(
        str(other), task="amos-ctmr", recipe="tiny", num_workers=0, cache_dir=str(tmp_path / "cache2")
    )
    model = SegmentationModule(
        arch="unet",
        arch_kwargs={"channels": (8, 16, 32), "strides": (2, 2), "num_res_units": 1},
        num_classes=16,
        roi_size=dm.patch_size,
    )
    trainer = pl.Trainer(
        max_steps=4,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    with pytest.raises(ValueError, match="trained with labels .* but the dataset .* has"):
        trainer.fit(model, dm, ckpt_path=str(ckpt))
