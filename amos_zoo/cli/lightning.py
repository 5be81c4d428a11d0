"""LightningCLI for ``amos-zoo fit | validate | test | predict --config configs/...``.

The data module's facts (input channels, classes, organ names, patch size) are linked into the model,
so a config names the dataset once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from pytorch_lightning.cli import LightningCLI

from amos_zoo.data.datamodule import SegmentationDataModule
from amos_zoo.engine.module import SegmentationModule

__all__ = ["AmosLightningCLI", "run_lightning_cli"]


class AmosLightningCLI(LightningCLI):
    """LightningCLI with the data -> model links amos-zoo needs."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.num_channels", "model.in_channels", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.label_names", "model.label_names", apply_on="instantiate")
        parser.link_arguments("data.patch_size", "model.roi_size", apply_on="instantiate")
        parser.link_arguments("trainer.max_steps", "model.max_steps")


def run_lightning_cli(args: Sequence[str] | None = None) -> AmosLightningCLI:
    """Run the Lightning subcommands; W&B runs offline unless ``WANDB_MODE`` says otherwise."""
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    try:
        return AmosLightningCLI(
            SegmentationModule,
            SegmentationDataModule,
            args=list(args) if args is not None else None,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
        )
    finally:
        _finish_wandb()


def _finish_wandb() -> None:
    """Close the W&B run a command opened, so the next command in this process starts its own run."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
