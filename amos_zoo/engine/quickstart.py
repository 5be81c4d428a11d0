"""The quickstart: synthetic AMOS data -> a small UNet trained on CPU -> evaluation in original geometry.

Everything it makes goes under one folder: ``data/`` (the synthetic dataset and its preprocessing
cache), ``checkpoints/``, ``logs/`` (CSV, and W&B offline when asked), ``predictions/`` (label NIfTIs
on each scan's own grid), ``evaluation/`` (per-case CSV, summary JSON and markdown, box plot),
``dice_per_organ.png`` and ``overlay.png``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = ["QuickstartConfig", "run_quickstart"]


@dataclass
class QuickstartConfig:
    """Settings of the quickstart (the defaults meet the README's promise on 2 CPU cores)."""

    out: Path = Path("quickstart")
    task: str = "amos-ct"
    n_train: int = 24
    n_val: int = 6
    max_steps: int = 400
    val_every: int = 200
    lr: float = 3e-3
    channels: tuple[int, ...] = (16, 32, 64, 128)
    num_res_units: int = 1
    seed: int = 0
    num_workers: int = 0
    wandb: bool = False
    progress: bool = True
    extra_trainer: dict = field(default_factory=dict)


def _log(msg: str) -> None:
    print(f"[amos-zoo quickstart] {msg}", flush=True)


def run_quickstart(cfg: QuickstartConfig) -> dict:
    """Run the whole quickstart; returns the evaluation summary (with ``wall_time_s``)."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger

    from amos_zoo.data.datamodule import SegmentationDataModule
    from amos_zoo.data.labels import AMOS_LABELS
    from amos_zoo.data.synth import write_synthetic_dataset
    from amos_zoo.engine.callbacks import PreemptionCheckpoint
    from amos_zoo.engine.inference import Predictor
    from amos_zoo.engine.module import SegmentationModule
    from amos_zoo.metrics.evaluate import evaluate_folders, markdown_table
    from amos_zoo.viz import dice_barplot, overlay_png

    start = time.time()
    out = Path(cfg.out)
    data_root = out / "data"
    n_mr = 0 if cfg.task == "amos-ct" else max(1, cfg.n_train // 4)
    n_val_mr = 0 if cfg.task == "amos-ct" else max(1, cfg.n_val // 3)
    _log(f"writing the synthetic AMOS dataset to {data_root} ...")
    write_synthetic_dataset(
        data_root,
        n_train_ct=cfg.n_train,
        n_train_mr=n_mr,
        n_val_ct=cfg.n_val,
        n_val_mr=n_val_mr,
        n_test=1,
        seed=cfg.seed,
    )

    pl.seed_everything(cfg.seed, workers=True)
    dm = SegmentationDataModule(
        str(data_root),
        task=cfg.task,
        recipe="quickstart",
        num_workers=cfg.num_workers,
        batch_size=2,
        cache_dir=str(data_root / ".cache"),
    )
    model = SegmentationModule(
        arch="unet",
        arch_kwargs={
            "channels": tuple(cfg.channels),
            "strides": (2,) * (len(cfg.channels) - 1),
            "num_res_units": cfg.num_res_units,
        },
        in_channels=dm.num_channels,
        num_classes=dm.num_classes,
        roi_size=dm.patch_size,
        label_names=dm.label_names,
        optimizer="adamw",
        lr=cfg.lr,
        weight_decay=1e-5,
        scheduler="warmup_cosine",
        warmup_steps=min(50, cfg.max_steps // 10),
        max_steps=cfg.max_steps,
        sw_batch_size=2,
        sw_overlap=0.25,
    )
    loggers: list = [CSVLogger(out / "logs", name="csv")]
    if cfg.wandb:
        import os

        from pytorch_lightning.loggers import WandbLogger

        os.environ.setdefault("WANDB_MODE", "offline")
        loggers.append(WandbLogger(project="amos-zoo", save_dir=str(out / "logs"), offline=True))
    ckpt = ModelCheckpoint(
        dirpath=out / "checkpoints", filename="best", monitor="val/mean_dice", mode="max", save_last=True
    )
    trainer = pl.Trainer(
        max_steps=cfg.max_steps,
        val_check_interval=cfg.val_every,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        accelerator="cpu",
        logger=loggers,
        callbacks=[ckpt, PreemptionCheckpoint()],
        enable_progress_bar=cfg.progress,
        log_every_n_steps=10,
        default_root_dir=str(out),
        **cfg.extra_trainer,
    )
    _log(
        f"training a {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M-parameter UNet for "
        f"{cfg.max_steps} steps on CPU ..."
    )
    trainer.fit(model, dm)
    train_time = time.time() - start

    _log("predicting the validation cases back in their original geometry ...")
    model.eval()
    predictor = Predictor(model.net, dm.recipe, dm.patch_size, sw_batch_size=2, overlap=0.25)
    pred_dir, gt_dir = out / "predictions", out / "evaluation" / "reference"
    gt_dir.mkdir(parents=True, exist_ok=True)
    val_cases = dm.case_dicts("val")
    for case in val_cases:
        name = Path(case["label"]).name
        predictor.predict_to_file(case["image"], pred_dir / name, modality=case["modality"])
        link = gt_dir / name
        if not link.exists():
            link.symlink_to(Path(case["label"]).resolve())
    summary = evaluate_folders(
        pred_dir,
        gt_dir,
        out / "evaluation",
        metrics=("dice", "nsd", "hd95"),
        tolerance="uniform-2mm",
        workers=1,
        progress=cfg.progress,
    )

    per_organ = {name: v["dice"] for name, v in summary["all"]["per_organ"].items()}
    dice_barplot(per_organ, out / "dice_per_organ.png", title="Quickstart: validation Dice per organ")
    first = val_cases[0]
    img = nib.as_closest_canonical(nib.load(first["image"]))
    lab = nib.as_closest_canonical(nib.load(first["label"]))
    pred = nib.as_closest_canonical(nib.load(str(pred_dir / Path(first["label"]).name)))
    overlay_png(
        np.asanyarray(img.dataobj),
        np.asanyarray(lab.dataobj),
        np.asanyarray(pred.dataobj),
        out / "overlay.png",
        title=f"{first['case_id']}: prediction (solid) vs reference (dashed)",
    )

    print(markdown_table(summary, AMOS_LABELS, ("dice", "nsd")))
    wall = time.time() - start
    summary["wall_time_s"] = wall
    summary["train_time_s"] = train_time
    _log(
        f"outputs in {out.resolve()}: checkpoints/, logs/, predictions/, evaluation/, dice_per_organ.png, "
        f"overlay.png (wall time {wall:.0f} s)"
    )
    print(f"mean foreground Dice: {summary['all']['overall']['dice']:.4f}", flush=True)
    return summary
