"""Fine-tuning a promptable model with MedSAM's recipe, as a Lightning module and data module.

The recipe (protocol card ``medsam-finetune``; bowang-lab/MedSAM@d71e8a1 ``train_one_gpu.py``): each step takes
images with one of their masks drawn at random, a box around that mask widened by ``randint(0, 20)`` pixels per
side; the image encoder and mask decoder are trained, the prompt encoder frozen (no gradient); the decoder's single
output is upsampled (bilinear) to the input size and compared with the mask by Dice (MONAI ``DiceLoss(sigmoid=True,
squared_pred=True)``) + binary cross-entropy; AdamW, learning rate 1e-4, weight decay 0.01. Images go through the
MedSAM input pipeline (1024 x 1024 bicubic, min-max to [0, 1]); masks are resized to the input size by nearest
neighbour, as ``pre_CT_MR.py`` resizes labels (``order=0``). Validation scores the thresholded mask's Dice with
the tight box (no widening).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

__all__ = ["PromptSliceDataset", "PromptDataModule", "PromptableModule"]


class PromptSliceDataset(Dataset):
    """One item per image: the MedSAM input, one of its masks (drawn at random per call, or the ``fixed`` first
    one) at the input size, and its box in input pixels (widened by up to ``box_shift``, none when ``fixed``)."""

    def __init__(self, images: list[tuple[Path, list[Path]]], size: int, box_shift: int, seed: int, fixed: bool):
        from amos_zoo.promptable.pipelines import get_pipeline

        self.images = images
        self.pipeline = get_pipeline("medsam", size)
        self.box_shift = box_shift
        self.rng = random.Random(seed)
        self.fixed = fixed
        self._images: dict[Path, torch.Tensor] = {}
        self._masks: dict[Path, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from amos_zoo.promptable.evaluate import _read_mask, _read_rgb
        from amos_zoo.promptable.pipelines import nearest_resize
        from amos_zoo.promptable.prompts import tight_box

        image_path, masks = self.images[i]
        if image_path not in self._images:  # read once (the pipeline is deterministic)
            self._images[image_path] = self.pipeline.image(_read_rgb(image_path))[0][0]
        mask_path = masks[0] if self.fixed else self.rng.choice(masks)
        if mask_path not in self._masks:
            self._masks[mask_path] = nearest_resize(_read_mask(mask_path).astype(np.uint8), self.pipeline.size)
        mask = self._masks[mask_path]
        box = tight_box(mask, 0 if self.fixed else self.box_shift, self.rng)
        return {
            "image": self._images[image_path],
            "mask": torch.from_numpy(mask[None]).float(),
            "box": torch.tensor(box),
        }


class PromptDataModule(pl.LightningDataModule):
    """Slices of an SA-Med2D folder for fine-tuning: the images outside the test split train, the test split
    validates (the same rule and seed as ``evaluate-prompts``; ``split="all"`` uses every image for both)."""

    def __init__(
        self,
        root: str,
        image_size: int = 1024,
        batch_size: int = 2,
        box_shift: int = 20,
        split: str = "samed2d-20",
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()

    def setup(self, stage: str | None = None) -> None:
        from amos_zoo.promptable.evaluate import collect_items

        items, _ = collect_items(self.hparams.root, "all", seed=self.hparams.seed)
        by_image: dict[Path, list[Path]] = {}
        for item in items:
            by_image.setdefault(item.image, []).append(item.mask)
        test = set(by_image)
        if self.hparams.split != "all":
            test = {i.image for i in collect_items(self.hparams.root, self.hparams.split, seed=self.hparams.seed)[0]}
        train = [(k, v) for k, v in by_image.items() if k not in test or self.hparams.split == "all"]
        val = [(k, [m]) for k, v in by_image.items() if k in test for m in v]  # every mask of the test images
        if not train:
            raise ValueError(f"{self.hparams.root}: no training images outside the {self.hparams.split} split")
        h = self.hparams
        self.train_set = PromptSliceDataset(train, h.image_size, h.box_shift, h.seed, fixed=False)
        self.val_set = PromptSliceDataset(val, h.image_size, h.box_shift, h.seed, fixed=True)

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.hparams.seed)
        return DataLoader(
            self.train_set,
            batch_size=self.hparams.batch_size,
            shuffle=True,
            generator=generator,
            num_workers=self.hparams.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.hparams.batch_size, num_workers=self.hparams.num_workers)


class PromptableModule(pl.LightningModule):
    """A promptable model trained with MedSAM's recipe (prompt encoder frozen, Dice + BCE, AdamW)."""

    def __init__(
        self,
        model: str = "medsam_vit_b",
        image_size: int | None = None,
        weights: str | None = None,
        lr: float = 1e-4,
        weight_decay: float = 0.01,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        from monai.losses import DiceLoss

        from amos_zoo.promptable.models import build_promptable, get_promptable
        from amos_zoo.promptable.weights import load_promptable_weights

        size = image_size or get_promptable(model).image_size
        self.sam = build_promptable(model, image_size=size)
        if weights:
            load_promptable_weights(self.sam, weights)
        self.sam.train()  # train_one_gpu.py: medsam_model.train()
        for p in self.sam.prompt_encoder.parameters():  # train_one_gpu.py MedSAM.__init__
            p.requires_grad = False
        self.dice_loss = DiceLoss(sigmoid=True, squared_pred=True, reduction="mean")
        self.bce = torch.nn.BCEWithLogitsLoss(reduction="mean")

    def forward(self, image: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
        """Logits at the input size for a batch of images and one box each (train_one_gpu.py MedSAM.forward)."""
        embedding = self.sam.image_encoder(image)
        with torch.no_grad():
            sparse, dense = self.sam.prompt_encoder(points=None, boxes=box[:, None, :], masks=None)
        # one image and its box at a time: segment-anything 1.0's decoder repeats one image's embedding for every
        # prompt (MedSAM's copy of it takes a batch of images, one prompt each; the result is the same)
        low_res = torch.cat(
            [
                self.sam.mask_decoder(
                    image_embeddings=embedding[i : i + 1],
                    image_pe=self.sam.prompt_encoder.get_dense_pe(),
                    sparse_prompt_embeddings=sparse[i : i + 1],
                    dense_prompt_embeddings=dense[i : i + 1],
                    multimask_output=False,
                )[0]
                for i in range(len(image))
            ]
        )
        return F.interpolate(low_res, image.shape[-2:], mode="bilinear", align_corners=False)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"], batch["box"])
        loss = self.dice_loss(logits, batch["mask"]) + self.bce(logits, batch["mask"])
        self.log("train_loss", loss, prog_bar=True, batch_size=len(logits))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        pred = self(batch["image"], batch["box"]) > 0
        truth = batch["mask"] > 0
        inter = (pred & truth).sum((1, 2, 3)).float()
        dice = 2 * inter / (pred.sum((1, 2, 3)) + truth.sum((1, 2, 3))).clamp(min=1)
        self.log("val_dice", dice.mean(), prog_bar=True, batch_size=len(dice))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = list(self.sam.image_encoder.parameters()) + list(self.sam.mask_decoder.parameters())
        return torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay, foreach=True)
