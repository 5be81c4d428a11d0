"""Fine-tuning a promptable model with MedSAM's recipe through the zoo's one module and data module (LightningCLI,
configs/samed2d/medsam_finetune.yaml): on the SAM-Med2D demo slices a tiny SAM's loss falls and its Dice on the
held-out test images rises; the prompt encoder stays frozen; the optimiser, loss and box widening are the card's."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from amos_zoo.data.datamodule import SegmentationDataModule
from amos_zoo.promptable.protocols import get_prompt_protocol
from amos_zoo.train.module import SegmentationModule

#: the card's recipe at a 64 x 64 input: its 20 px box widening at 1024 scaled to 1 px, and a learning rate of 1e-3
#: instead of 1e-4 (a randomly initialised tiny network, not pretrained SAM, in 200 steps)
TINY = ["--model.arch", "sam_tiny", "--data.patch_size", "[64, 64]", "--data.box_shift", "1", "--model.lr", "1e-3"]


def _two_slices(root):
    """Two synthetic slices in the SAM-Med2D demo layout (one AMOS, one TotalSegmentator), two masks each."""
    import json

    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:80, :96]
    index = {}
    for name in ("amos_0001_10", "s0002_20"):
        masks = {"liver": (yy - 40) ** 2 + (xx - 30) ** 2 < 300, "spleen": (yy - 30) ** 2 + (xx - 70) ** 2 < 120}
        grey = (40 + 150 * masks["liver"] + 90 * masks["spleen"]).astype(np.uint8)
        Image.fromarray(np.repeat(grey[..., None], 3, -1)).save(root / "images" / f"{name}.png")
        for label, mask in masks.items():
            Image.fromarray((mask * 255).astype(np.uint8)).save(root / "masks" / f"{name}_{label}_000.png")
        index[f"data_demo/images/{name}.png"] = [f"data_demo/masks/{name}_{label}_000.png" for label in masks]
    (root / "image2label_train.json").write_text(json.dumps(index))
    return root


class _Losses(pl.Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.values.append(float(outputs["loss"]))


def test_medsam_recipe_through_fit_lowers_the_loss_and_raises_dice_on_the_demo_slices(shared_data, tmp_path):
    from amos_zoo.train.cli import run_lightning_cli

    args = ["--config", "configs/base/cpu.yaml", "--config", "configs/samed2d/medsam_finetune.yaml"]
    args += ["--data.root", str(shared_data / "samed2d_demo"), "--data.val_split", "test", *TINY]
    args += ["--trainer.max_steps", "200", "--trainer.val_check_interval", "200", "--data.epoch_iterations", "200"]
    args += ["--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false"]
    cli = run_lightning_cli(args, run=False)
    module, data, trainer = cli.model, cli.datamodule, cli.trainer
    assert module.is_promptable and module.card.arch == "sam_tiny" and module.net.image_encoder.img_size == 64
    assert data.num_channels == 3 and module.card.in_channels == 3  # the promptable pipelines feed RGB
    prompt_encoder = {k: v.clone() for k, v in module.net.prompt_encoder.state_dict().items()}
    before = trainer.validate(module, datamodule=data, verbose=False)[0]["val/mask_dice"]
    losses = _Losses()
    trainer.callbacks.append(losses)
    trainer.fit(module, datamodule=data)
    after = float(trainer.callback_metrics["val/mask_dice"])
    assert len(losses.values) == 200 and np.mean(losses.values[-20:]) < 0.8 * np.mean(losses.values[:20])
    assert after > before + 0.04 and after > 2 * before, (before, after)  # Dice on the 3 held-out test images
    assert trainer.callback_metrics["val/cases"] == 11  # every mask of label2image_test.json, one item each
    assert all(torch.equal(v, module.net.prompt_encoder.state_dict()[k]) for k, v in prompt_encoder.items())
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    meta = checkpoint["amos_zoo"]
    assert meta["card"]["arch"] == "sam_tiny" and meta["card"]["roi_size"] == [64, 64]
    assert meta["card"]["protocol"] == "medsam-finetune"
    # sam_tiny's card at the trained size, with the pipeline it was trained through (MedSAM's, not SamPredictor's)
    assert meta["promptable"]["name"] == "sam_tiny" and meta["promptable"]["image_size"] == 64
    assert meta["promptable"]["pipeline"] == "medsam" and meta["promptable"]["multimask"] == "single"
    # evaluate-prompts reads the fine-tuned checkpoint (--weights runs/.../last.ckpt): the trained network's tensors
    from amos_zoo.promptable.models import build_promptable
    from amos_zoo.promptable.weights import load_promptable_weights

    evaluated = build_promptable("sam_tiny", image_size=64)
    report = load_promptable_weights(evaluated, tmp_path / "checkpoints" / "last.ckpt")
    assert report.fmt == "amos-zoo-checkpoint" and not report.missing and not report.unexpected
    assert all(torch.equal(v, module.net.state_dict()[k]) for k, v in evaluated.state_dict().items())


def test_recipe_optimiser_loss_and_frozen_prompt_encoder_are_the_cards():
    from monai.losses import DiceLoss

    from amos_zoo.promptable.finetune import PromptLoss, prompt_logits

    card = get_prompt_protocol("medsam-finetune")
    module = SegmentationModule(
        arch="sam_tiny", roi_size=(64, 64), scheduler="none", lr=card.get("train.lr"), weight_decay=0.01
    )
    optimiser = module.configure_optimizers()
    assert isinstance(optimiser, torch.optim.AdamW)
    assert optimiser.defaults["lr"] == 1e-4 and optimiser.defaults["weight_decay"] == card.get("train.weight_decay")
    trained = {id(p) for g in optimiser.param_groups for p in g["params"]}
    assert trained == {id(p) for p in [*module.net.image_encoder.parameters(), *module.net.mask_decoder.parameters()]}
    assert not any(p.requires_grad for p in module.net.prompt_encoder.parameters())
    logits, mask = torch.randn(2, 1, 64, 64), (torch.rand(2, 1, 64, 64) > 0.7).float()
    expected = DiceLoss(sigmoid=True, squared_pred=True)(logits, mask) + torch.nn.BCEWithLogitsLoss()(logits, mask)
    assert torch.allclose(PromptLoss()(logits, mask), expected)
    # the step's logits: the decoder's single output, bilinear to the input size, gradients into the encoder only
    image, box = torch.rand(2, 3, 64, 64), torch.tensor([[4.0, 4, 30, 30], [10, 12, 50, 40]])
    out = prompt_logits(module.net, image, box)
    assert out.shape == (2, 1, 64, 64)
    out.sum().backward()
    assert module.net.image_encoder.patch_embed.proj.weight.grad is not None
    assert all(p.grad is None for p in module.net.prompt_encoder.parameters())
    with pytest.raises(TypeError, match="promptable model"):
        module(image)


def test_training_items_draw_a_mask_and_widen_its_box_per_sample_from_the_seed(tmp_path):
    root = _two_slices(tmp_path / "demo")
    kwargs = dict(task="all", spatial_dims=2, patch_size=(64, 64), num_workers=0, prompt_protocol="medsam-finetune")
    data = SegmentationDataModule(str(root), box_shift=3, epoch_iterations=100, batch_size=2, **kwargs)
    data.setup("fit")
    assert len(data.train_ds) == 1 and len(data.val_ds) == 2  # hold-out: one case trains, the other's masks validate
    boxes = np.array([b["box"].tolist() for batch in data.train_dataloader() for b in _split(batch)])
    tight = np.array([data.val_ds[i]["box"].tolist() for i in range(2)])  # validation: the tight boxes (no widening)
    assert (tight[:, 2:] > tight[:, :2]).all()
    train_tight = []
    for masks in (data.train_ds.data[0]["masks"],):  # the training image's two masks, unwidened
        for m in masks:
            unwidened = SegmentationDataModule(str(root), box_shift=0, **kwargs)
            unwidened.setup("fit")
            unwidened.train_ds.data = [{**unwidened.train_ds.data[0], "masks": [m]}]
            train_tight.append(unwidened.train_ds[0]["box"].tolist())
    offsets = np.abs(boxes[:, None] - np.array(train_tight)[None])  # (sample, mask, side)
    per_side = offsets[np.arange(len(boxes)), offsets.max(-1).argmin(-1)]  # from the drawn (nearer) mask's box
    assert set(np.unique(per_side)) == {0, 1, 2, 3} and len({tuple(b) for b in boxes}) > 20
    assert set(offsets.max(-1).argmin(-1)) == {0, 1}  # both masks drawn
    again = np.array([b["box"].tolist() for batch in data.train_dataloader() for b in _split(batch)])
    assert np.array_equal(boxes, again)  # a function of (seed, epoch, position): the same run draws the same
    with pytest.raises(ValueError, match="needs 2D slices"):
        SegmentationDataModule(str(root), prompt_protocol="medsam-finetune")
    with pytest.raises(ValueError, match="not a fine-tuning protocol"):
        SegmentationDataModule(str(root), **{**kwargs, "prompt_protocol": "samed2d-points"}).setup("fit")


def _split(batch: dict) -> list[dict]:
    return [{k: v[i] for k, v in batch.items()} for i in range(len(batch["box"]))]


def test_shipped_config_is_the_cards_recipe():
    import yaml

    from amos_zoo.config_files import config_file

    card = get_prompt_protocol("medsam-finetune")
    config = yaml.safe_load(config_file("samed2d/medsam_finetune.yaml").read_text())
    model, data = config["model"], config["data"]
    assert (model["optimizer"], model["lr"], model["weight_decay"]) == ("adamw", card.get("train.lr"), 0.01)
    assert model["scheduler"] == "none" and model["arch"] == "medsam_vit_b" and model["protocol"] == card.name
    assert data["prompt_protocol"] == card.name and data["batch_size"] == card.get("train.batch_size")
    assert data["patch_size"] == [card.get("input.image_size")] * 2 and card.get("input.pipeline") == "medsam"
    assert "configs/samed2d/medsam_finetune.yaml" in card.get("doc.command")
