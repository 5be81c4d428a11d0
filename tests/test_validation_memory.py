"""Validation falls back to stitching the sliding windows in CPU memory when the whole-volume output does not fit on
the device (a simulated CUDA out-of-memory error), as the Predictor does, with the same scores."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
from conftest import cpu_trainer, small_module

from amos_zoo.data.datamodule import SegmentationDataModule
from amos_zoo.train import module as module_file


def test_validation_out_of_memory_stitches_on_the_cpu_with_the_same_scores(synth_root, tmp_path, monkeypatch):
    dm = SegmentationDataModule(
        str(synth_root), task="amos-ct", recipe="tiny", num_workers=0, cache_dir=str(tmp_path / "cache")
    )
    pl.seed_everything(0)
    model = small_module(dm, steps=1)
    reference = cpu_trainer(1).validate(model, dm, verbose=False)[0]

    calls = []
    real = module_file.sliding_window_inference

    def whole_volume_out_of_memory(*args, **kwargs):
        calls.append(kwargs.get("device"))
        if kwargs.get("device") is None:
            raise module_file.torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(module_file, "sliding_window_inference", whole_volume_out_of_memory)
    with pytest.warns(UserWarning, match="stitching windows on the CPU"):
        fallback = cpu_trainer(1).validate(model, dm, verbose=False)[0]
    # the first volume fails on the device and is redone with CPU stitching; the second goes there directly
    assert calls == [None, "cpu", "cpu"]
    assert fallback["val/cases"] == 2
    assert fallback == pytest.approx(reference, abs=1e-6)
