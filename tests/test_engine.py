"""The Lightning module: training lowers the loss, validation scores with the metric suite, checkpoints reload,
and inference returns predictions on the input's own voxel grid (also for the real CT)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from monai.data import MetaTensor

from amos_zoo.data.datamodule import SegmentationDataModule
from amos_zoo.data.recipes import get_recipe
from amos_zoo.infer.predictor import Predictor, resample_to_input_grid
from amos_zoo.metrics.case import evaluate_case
from amos_zoo.train.module import SegmentationModule

SMALL_UNET = {"channels": (8, 16, 32), "strides": (2, 2), "num_res_units": 1}


def _module(dm, **kw):
    return SegmentationModule(
        arch="unet",
        arch_kwargs=SMALL_UNET,
        in_channels=dm.num_channels,
        num_classes=dm.num_classes,
        roi_size=dm.patch_size,
        label_names=dm.label_names,
        lr=3e-3,
        sw_batch_size=2,
        **kw,
    )


def _trainer(tmp_path, steps, **kw):
    return pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        default_root_dir=str(tmp_path),
        deterministic=True,
        **kw,
    )


def test_training_lowers_loss_and_validation_uses_metric_suite(synth_root, tmp_path):
    pl.seed_everything(0)
    dm = SegmentationDataModule(
        str(synth_root), task="amos-ctmr", recipe="tiny", num_workers=0, cache_dir=str(tmp_path / "cache")
    )
    model = _module(dm, max_steps=40, val_metrics=("dice", "nsd"))
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    with torch.no_grad():
        before = float(model.loss(model(batch["image"]), batch["label"]))
    trainer = _trainer(tmp_path, 40, val_check_interval=40, check_val_every_n_epoch=None, enable_checkpointing=True)
    trainer.fit(model, dm)
    with torch.no_grad():
        after = float(model.loss(model(batch["image"]), batch["label"]))
    assert after < before * 0.8
    metrics = trainer.callback_metrics
    assert metrics["val/cases"] == 3
    assert "val/dice_aorta" in metrics and "val/nsd_prostate_uterus" in metrics
    organ = [float(metrics[f"val/dice_{n}"]) for n in model.log_names.values()]
    assert float(metrics["val/mean_dice"]) == pytest.approx(float(np.nanmean(organ)), abs=1e-5)

    # the logged Dice equals the metric suite on the same whole-volume predictions
    model.eval()
    dm.setup("validate")
    sums = np.zeros(15)
    for i in range(len(dm.val_ds)):
        item = dm.val_ds[i]
        with torch.no_grad():
            pred = model.sliding_window(item["image"][None]).argmax(1)[0].numpy()
        res = evaluate_case(
            item["label"][0].numpy().astype(np.uint8),
            pred.astype(np.uint8),
            (7.0, 7.0, 10.0),
            range(1, 16),
            metrics=("dice",),
        )
        sums += [res[k]["dice"] for k in range(1, 16)]
    assert float(metrics["val/dice_liver"]) == pytest.approx(sums[5] / 3, abs=1e-5)

    # a checkpoint reloads into an identical network
    ckpt = trainer.checkpoint_callback.best_model_path or trainer.checkpoint_callback.last_model_path
    reloaded = SegmentationModule.load_from_checkpoint(ckpt, weights_only=False)
    trained, loaded = model.state_dict(), reloaded.state_dict()
    assert trained.keys() == loaded.keys()
    for key, value in trained.items():
        assert torch.equal(value, loaded[key]), key


def test_resample_back_keeps_exact_input_geometry():
    # 512 x 512 x 12 at 0.7 mm -> 1.5 mm grid -> back: MONAI's plain Spacing returns 511; ours must not
    affine = np.diag([-0.7, -0.7, 2.0, 1.0])
    affine[:3, 3] = (179.0, 179.0, -12.0)
    pre_shape = (239, 239, 12)
    pre_affine = np.diag([1.5, 1.5, 2.0, 1.0])
    pre_affine[:3, 3] = (-178.55, -178.55, -12.0)
    scores = MetaTensor(torch.rand(3, *pre_shape), affine=torch.as_tensor(pre_affine))
    out = resample_to_input_grid(scores, affine, (512, 512, 12))
    assert tuple(out.shape) == (3, 512, 512, 12)
    np.testing.assert_allclose(out.affine.numpy(), affine, atol=1e-6)


def test_real_ct_through_the_pipeline(shared_data, tmp_path):
    """Real CT: load, RAS, recipe spacing, one training step, sliding-window prediction back on the input grid."""
    image_path = shared_data / "ct_example" / "image.nii.gz"
    label_path = shared_data / "ct_example" / "label.nii.gz"
    ref = nib.load(str(image_path))
    recipe = get_recipe("btcv", spacing=(4.0, 4.0, 4.0), patch_size=(32, 32, 32), num_samples=2)
    from monai import transforms as mt

    from amos_zoo.data.transforms import deterministic_transforms, train_transforms

    pre = mt.Compose(deterministic_transforms(recipe))
    item = pre({"image": str(image_path), "label": str(label_path), "modality": "CT"})
    assert nib.aff2axcodes(item["image"].affine.numpy()) == ("R", "A", "S")
    np.testing.assert_allclose(np.linalg.norm(item["image"].affine[:3, :3].numpy(), axis=0), (4.0, 4.0, 4.0))
    assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
    assert set(torch.unique(item["label"]).tolist()) >= {1, 2, 3, 6, 8, 9}

    patches = mt.Compose(train_transforms(recipe))(item)
    x = torch.stack([p["image"] for p in patches])
    y = torch.stack([p["label"] for p in patches])
    assert type(x) is torch.Tensor and y.dtype == torch.uint8  # training crops: plain tensors
    model = SegmentationModule(arch="unet", arch_kwargs=SMALL_UNET, num_classes=16, roi_size=(32, 32, 32))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = model.loss(model(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)

    out = tmp_path / "pred.nii.gz"
    Predictor(model.net, recipe, (32, 32, 32), sw_batch_size=2).predict_to_file(image_path, out, modality="CT")
    pred = nib.load(str(out))
    assert pred.shape == ref.shape
    np.testing.assert_allclose(pred.affine, ref.affine, atol=1e-6)
    data = np.asanyarray(pred.dataobj)
    assert data.dtype == np.uint8 and data.max() <= 15
    assert not list(tmp_path.glob(".*tmp*")), "atomic write leaves no temporary file"


def test_deterministic_true_on_cuda_is_a_clear_error_and_warn_works():
    """What CUDA would do at its first step, checked before any work: `deterministic: true` is refused with the
    setting that works (`warn`), which passes; the CPU accepts `true`."""
    from amos_zoo.train.module import check_deterministic_settings

    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        torch.use_deterministic_algorithms(True)
        with pytest.raises(ValueError, match="--trainer.deterministic warn"):
            check_deterministic_settings("cuda")
        check_deterministic_settings("cpu")
        torch.use_deterministic_algorithms(True, warn_only=True)  # Lightning's deterministic="warn"
        check_deterministic_settings("cuda")
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
