"""The one LightningModule for every model: DiceCE loss, configurable optimiser and schedule,
gaussian sliding-window validation scored by the metric suite, per-organ Dice logged (DDP-exact)."""

from __future__ import annotations

import re
from typing import Any

import pytorch_lightning as pl
import torch
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss

from amos_zoo.metrics.case import evaluate_case
from amos_zoo.models.registry import create_model

__all__ = ["SegmentationModule"]


class SegmentationModule(pl.LightningModule):
    """Train and validate any registered model.

    Args:
        arch: model registry name (``unet``, ``unetr``, ``swin_unetr``, ``vnet``, ``dynunet``).
        arch_kwargs: MONAI constructor overrides (e.g. ``{"feature_size": 12}``).
        in_channels: input channels (linked from the data module by the CLI).
        num_classes: classes including background (linked from the data module).
        roi_size: sliding-window size (linked from the recipe's patch size).
        label_names: id -> organ name for logs (linked from the data module).
        optimizer: ``adamw``, ``adam`` or ``sgd``.
        lr: learning rate.
        weight_decay: weight decay.
        momentum: SGD momentum (nnU-Net uses 0.99 with nesterov).
        scheduler: ``warmup_cosine`` (timm CosineLRScheduler, per step), ``plateau``
            (ReduceLROnPlateau on ``val/mean_dice``), ``poly`` (nnU-Net) or ``none``.
        warmup_steps: linear warm-up steps for ``warmup_cosine``.
        max_steps: schedule length in optimiser steps (set it equal to ``trainer.max_steps``).
        sw_batch_size: windows per forward pass in sliding-window inference.
        sw_overlap: window overlap.
        val_metrics: metrics computed in validation (``dice``, ``nsd``, ``hd95``, ``assd``).
        nsd_tolerance: NSD tolerance preset or mm.
    """

    def __init__(
        self,
        arch: str = "unet",
        arch_kwargs: dict[str, Any] | None = None,
        in_channels: int = 1,
        num_classes: int = 16,
        roi_size: tuple[int, ...] = (96, 96, 96),
        label_names: dict[int, str] | None = None,
        optimizer: str = "adamw",
        lr: float = 1e-4,
        weight_decay: float = 1e-5,
        momentum: float = 0.99,
        scheduler: str = "warmup_cosine",
        warmup_steps: int = 0,
        max_steps: int = 1000,
        sw_batch_size: int = 4,
        sw_overlap: float = 0.5,
        val_metrics: tuple[str, ...] = ("dice",),
        nsd_tolerance: str | float = "uniform-2mm",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = create_model(arch, in_channels=in_channels, out_channels=num_classes, **(arch_kwargs or {}))
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)
        self.label_ids = list(range(1, num_classes))
        names = {int(k): v for k, v in (label_names or {}).items()}
        self.label_names = {i: names.get(i, f"class_{i}") for i in self.label_ids}
        self.log_names = {i: re.sub(r"[^0-9a-zA-Z]+", "_", n).strip("_") for i, n in self.label_names.items()}
        self._val_cases: dict[str, dict[int, dict[str, float]]] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, C, *spatial)."""
        return self.net(x)

    # ---- training ---------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        image, label = batch["image"], batch["label"]
        loss = self.loss(self(image), label)
        self.log("train/loss", loss, prog_bar=True, batch_size=image.shape[0])
        return loss

    # ---- validation -------------------------------------------------------------------------------
    @torch.no_grad()
    def sliding_window(self, image: torch.Tensor) -> torch.Tensor:
        """Gaussian-weighted sliding-window logits of a whole volume."""
        return sliding_window_inference(
            image,
            roi_size=self.hparams.roi_size,
            sw_batch_size=self.hparams.sw_batch_size,
            predictor=self,
            overlap=self.hparams.sw_overlap,
            mode="gaussian",
        )

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        image, label = batch["image"], batch["label"]
        pred = self.sliding_window(image).argmax(1)
        spacing = _spacing_of(image)
        for b in range(image.shape[0]):
            case = evaluate_case(
                label[b, 0].cpu().numpy().astype("uint8"),
                pred[b].cpu().numpy().astype("uint8"),
                spacing,
                self.label_ids,
                metrics=self.hparams.val_metrics,
                tolerance=self.hparams.nsd_tolerance,
            )
            case_ids = batch.get("case_id")
            key = str(case_ids[b]) if case_ids is not None else f"{self.global_rank}:{batch_idx}:{b}"
            self._val_cases[key] = case

    def on_validation_epoch_end(self) -> None:
        """Per-organ means over every validation case of every process (each case once, by its id)."""
        cases = self._val_cases
        self._val_cases = {}
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, cases)
            cases = {k: v for part in gathered for k, v in part.items()}
        for metric in self.hparams.val_metrics:
            values = torch.tensor(
                [[c[lid][metric] for lid in self.label_ids] for c in cases.values()], dtype=torch.float64
            ).reshape(len(cases), len(self.label_ids))
            organ_means = torch.nanmean(values, dim=0) if len(cases) else torch.full((len(self.label_ids),), torch.nan)
            for i, lid in enumerate(self.label_ids):
                self.log(f"val/{metric}_{self.log_names[lid]}", organ_means[i].float(), sync_dist=False)
            self.log(f"val/mean_{metric}", torch.nanmean(organ_means).float(), prog_bar=True, sync_dist=False)
        self.log("val/cases", float(len(cases)), sync_dist=False)

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """Labels on the preprocessed grid (``amos-zoo predict --weights`` maps them back to the input grid)."""
        labels = self.sliding_window(batch["image"]).argmax(1)
        return {"case_id": batch.get("case_id"), "labels": labels.to(torch.uint8).cpu()}

    test_step = validation_step
    on_test_epoch_end = on_validation_epoch_end

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuse a checkpoint whose label map differs from the data module's (clear error, not a shape clash)."""
        stored = checkpoint.get("amos_zoo", {}).get("labels")
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if stored is None or datamodule is None or not hasattr(datamodule, "index"):
            return
        current = datamodule.index.labels.to_json()
        if stored != current:
            raise ValueError(
                f"the checkpoint was trained with labels {stored} but the dataset {datamodule.root} has {current}; "
                "use a checkpoint for this label map, or fine-tune from weights instead of resuming"
            )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Store the preprocessing recipe and label map, so a checkpoint alone can segment a scan."""
        meta: dict[str, Any] = {"format": 1}
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "recipe"):
            meta["recipe"] = datamodule.recipe.to_dict()
            meta["labels"] = datamodule.index.labels.to_json()
        checkpoint["amos_zoo"] = meta

    # ---- optimisation -----------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        hp = self.hparams
        params = self.parameters()
        if hp.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        elif hp.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)
        elif hp.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=hp.lr, weight_decay=hp.weight_decay, momentum=hp.momentum, nesterov=True)
        else:
            raise ValueError(f"optimizer must be adamw, adam or sgd; got {hp.optimizer!r}")
        if hp.scheduler == "none":
            return opt
        if hp.scheduler == "warmup_cosine":
            from timm.scheduler import CosineLRScheduler

            sched = CosineLRScheduler(
                opt,
                t_initial=max(1, hp.max_steps),
                warmup_t=hp.warmup_steps,
                warmup_lr_init=hp.lr * 1e-2,
                lr_min=hp.lr * 1e-3,
                t_in_epochs=False,
            )
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        if hp.scheduler == "poly":
            sched = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=max(1, hp.max_steps), power=0.9)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        if hp.scheduler == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.2, patience=30)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val/mean_dice"}}
        raise ValueError(f"scheduler must be warmup_cosine, poly, plateau or none; got {hp.scheduler!r}")

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        """timm schedulers step by update count; torch schedulers as usual."""
        if hasattr(scheduler, "step_update"):
            scheduler.step_update(num_updates=self.global_step)
        elif metric is None:
            scheduler.step()
        else:
            scheduler.step(metric)


def _spacing_of(image: torch.Tensor) -> tuple[float, ...]:
    """Voxel spacing of a (batched) MetaTensor from its affine; 1 mm when there is none."""
    affine = getattr(image, "affine", None)
    n = image.ndim - 2
    if affine is None:
        return (1.0,) * n
    a = torch.as_tensor(affine)
    if a.ndim == 3:
        a = a[0]
    return tuple(float(v) for v in torch.linalg.norm(a[:n, :n].double(), dim=0))
