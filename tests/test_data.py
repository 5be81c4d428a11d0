"""Recipes, per-modality normalisation, the validated preprocessing cache and the data module."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from amos_zoo.data.datamodule import SegmentationDataModule
from amos_zoo.data.recipes import get_recipe
from amos_zoo.data.transforms import ModalityNormalized


def test_modality_normalisation_never_ct_windows_mri():
    norm = ModalityNormalized(["image"], (-175, 250), (0.5, 99.5))
    values = torch.linspace(0, 1000, 1000).reshape(1, 10, 10, 10)
    ct = norm({"image": values.clone(), "modality": "CT"})["image"]
    mr = norm({"image": values.clone(), "modality": "MRI"})["image"]
    assert ct.max() == 1.0 and float(ct[0, 0, 0, 5]) == pytest.approx((values[0, 0, 0, 5] + 175) / 425)
    # CT windowing would saturate everything above 250; the MRI percentile window spreads the range
    assert float((ct == 1.0).float().mean()) > 0.7
    assert float((mr == 1.0).float().mean()) < 0.02
    assert float(mr.median()) == pytest.approx(0.5, abs=0.02)
    with pytest.raises(ValueError, match="modality must be CT or MRI"):
        norm({"image": values, "modality": "PET"})


def test_recipe_overrides():
    r = get_recipe("btcv", patch_size=[64, 64, 64])
    assert r.patch_size == (64, 64, 64) and r.spacing == (1.5, 1.5, 2.0) and r.ct_window == (-175.0, 250.0)
    with pytest.raises(KeyError, match="available"):
        get_recipe("nope")


def _dm(root, tmp_path, **kw):
    return SegmentationDataModule(
        str(root), task="amos-ctmr", recipe="tiny", num_workers=0, cache_dir=str(tmp_path / "cache"), **kw
    )


def test_datamodule_patches_and_whole_volumes(synth_root, tmp_path):
    dm = _dm(synth_root, tmp_path, batch_size=2)
    assert dm.num_classes == 16 and dm.num_channels == 1 and dm.label_names[8] == "aorta"
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 1, 32, 32, 16) and batch["label"].shape == (2, 1, 32, 32, 16)
    val = next(iter(dm.val_dataloader()))
    assert isinstance(val["image"], MetaTensor)
    assert val["image"].shape[2:] != (32, 32, 16)  # whole (cropped) volume
    spacing = np.linalg.norm(val["image"].affine[0, :3, :3].numpy(), axis=0)
    np.testing.assert_allclose(spacing, (7.0, 7.0, 10.0), atol=1e-6)
    # RAS after orientation, whatever the file's voxel order
    assert np.all(np.diag(val["image"].affine[0, :3, :3].numpy()) > 0)
    assert len(dm.val_ds) == 3 and len(dm.train_ds) == 4


def test_cache_hit_keeps_metadata_and_is_validated(synth_root, tmp_path):
    dm = _dm(synth_root, tmp_path)
    dm.prepare_data()
    files = sorted((tmp_path / "cache").glob("*.pt"))
    assert len(files) == 7
    dm.setup("validate")
    first = dm.val_ds[0]
    assert isinstance(first["image"], MetaTensor) and first["image"].meta["spatial_shape"] is not None
    assert torch.equal(first["image"].affine, dm.val_ds[0]["image"].affine)  # read back from the cache
    # an edited source file gets a new cache entry; the stale one is never used
    case = dm.case_dicts("val")[0]
    os.utime(case["image"], ns=(time.time_ns(), time.time_ns() + 10**9))
    dm.prepare_data()
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 8
    # another recipe never reads this recipe's entries
    other = SegmentationDataModule(
        str(synth_root),
        task="amos-ctmr",
        recipe="tiny",
        spacing=(8.0, 8.0, 10.0),
        num_workers=0,
        cache_dir=str(tmp_path / "cache"),
    )
    other.setup("validate")
    assert not torch.equal(torch.as_tensor(other.val_ds[0]["image"].shape), torch.as_tensor(first["image"].shape))


def test_distributed_validation_sampler_has_no_duplicates(synth_root, tmp_path):
    from monai.data import DistributedSampler

    dm = _dm(synth_root, tmp_path)
    dm.setup("validate")
    seen = []
    for rank in range(2):
        seen += list(DistributedSampler(dm.val_ds, num_replicas=2, rank=rank, shuffle=False, even_divisible=False))
    assert sorted(seen) == [0, 1, 2]  # 3 cases over 2 processes: none dropped, none repeated


def test_truncated_cache_entry_is_rebuilt_not_used(synth_root, tmp_path):
    dm = _dm(synth_root, tmp_path)
    dm.prepare_data()
    dm.setup("validate")
    good = dm.val_ds[0]["image"].clone()
    for entry in (tmp_path / "cache").glob("*.pt"):  # a crashed run left truncated files behind
        entry.write_bytes(entry.read_bytes()[:100])
    with pytest.warns(UserWarning, match="unreadable cache entry"):
        again = dm.val_ds[0]["image"]
    assert torch.equal(again.as_tensor(), good.as_tensor())
    readable = []
    for entry in (tmp_path / "cache").glob("*.pt"):
        try:
            torch.load(entry, weights_only=False)
            readable.append(entry)
        except RuntimeError:
            pass
    assert len(readable) == 1  # the rebuilt entry; the others are rebuilt when they are next read


def test_cache_command_fills_every_entry_in_worker_processes(synth_root, tmp_path, capsys):
    """`amos-zoo cache` fills, in 2 processes, the entries `fit` with the same options reads: one per training
    and validation case, valid (loaded weights-only), and a second run rebuilds nothing."""
    import json

    from amos_zoo.cli.main import main

    repo = Path(__file__).resolve().parents[1]
    cache = tmp_path / "cache"
    args = ["cache", "--workers", "2", "--config", str(repo / "configs/base/cpu.yaml"), "--protocol", "tiny"]
    args += ["--data.root", str(synth_root), "--data.task", "amos-ctmr", "--data.cache_dir", str(cache)]
    args += ["--model.arch", "unet", "--model.arch_kwargs", json.dumps({"channels": [8, 16], "strides": [2]})]
    assert main(args) == 0, capsys.readouterr().err
    entries = sorted(cache.glob("*.pt"))
    assert len(entries) == 4 + 3  # 4 training and 3 validation cases of amos-ctmr
    from amos_zoo.data.cache import allow_cache_types

    allow_cache_types()  # MONAI's MetaTensor and numpy types, as the data module reads the cache
    for entry in entries:
        item = torch.load(entry, weights_only=True)
        assert item["label"].dtype == torch.uint8
    stamps = {p: p.stat().st_mtime_ns for p in entries}
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in sorted(cache.glob("*.pt"))} == stamps
    assert "preprocessing cache" in capsys.readouterr().err  # the progress bar


@pytest.mark.parametrize("sampling", ["posneg", "nnunet"])
def test_training_entries_are_plain_tensors_with_the_case_positions(synth_root, tmp_path, sampling):
    """A training cache entry holds plain tensors (uint8 label) and the positions its sampling reads, checked
    against the label itself: fg indices are foreground voxels, bg indices background inside the body; class
    locations (nnU-Net sampling only) lie on their class. The crops of a batch are plain tensors as well."""
    import dataclasses

    dm = _dm(synth_root, tmp_path, batch_size=2)
    dm.recipe = dataclasses.replace(dm.recipe, sampling=sampling)
    dm.setup("fit")
    entry = dm.train_ds._cachecheck(dm.case_dicts("train")[0])
    assert type(entry["image"]) is torch.Tensor and type(entry["label"]) is torch.Tensor
    stored = dm.train_ds._cachecheck(dm.case_dicts("train")[0])  # read back from the disk cache: plain as well
    assert all(type(stored[k]) is torch.Tensor for k in ("image", "label", "fg_indices", "bg_indices"))
    assert torch.equal(stored["image"], entry["image"]) and torch.equal(stored["label"], entry["label"])
    assert entry["label"].dtype == torch.uint8 and entry["image"].dtype == torch.float32
    label, image = entry["label"][0].numpy(), entry["image"].numpy().max(0)
    flat = label.reshape(-1)
    fg, bg = np.asarray(entry["fg_indices"]), np.asarray(entry["bg_indices"])
    assert len(fg) == min(int((flat > 0).sum()), 100_000) and np.all(flat[fg] > 0)
    assert len(bg) > 0 and np.all(flat[bg] == 0) and np.all(image.reshape(-1)[bg] > 0)
    assert ("class_locations" in entry) == (sampling == "nnunet")
    if sampling == "nnunet":
        for organ, coords in entry["class_locations"].items():
            assert np.all(label[tuple(coords.T)] == organ)
        assert set(entry["class_locations"]) == set(np.unique(label).tolist()) - {0}
    batch = next(iter(dm.train_dataloader()))
    assert type(batch["image"]) is torch.Tensor and batch["image"].shape[2:] == (32, 32, 16)
