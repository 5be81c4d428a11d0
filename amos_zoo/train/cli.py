"""LightningCLI for ``amos-zoo fit | validate | test``.

* The data module's facts (input channels, classes, organ names, patch size, recipe) are linked into the model,
  so a config names a dataset once.
* ``--protocol NAME/MODEL`` applies a protocol card (:mod:`amos_zoo.protocols`) as if it were a config file at that
  position (later options override it); ``amos-zoo protocol list`` names them.
* ``${run_dir}`` in a config (logger ``save_dir``, checkpoint ``dirpath``) is the trainer's ``default_root_dir``,
  which defaults to ``runs/<task>/<protocol>/<model>``: composed configs need no per-run paths.
* ``--ckpt_path`` goes through amos-zoo's safe loading: weights-only with an allow-list, a clear refusal for files
  that need full unpickling, and ``--trust`` for files the user trusts.
"""

from __future__ import annotations

import argparse
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jsonargparse import ActionConfigFile, Namespace
from pytorch_lightning.cli import LightningCLI

from amos_zoo.console import help_formatter
from amos_zoo.data.datamodule import SegmentationDataModule
from amos_zoo.train.module import SegmentationModule

__all__ = ["AmosLightningCLI", "run_lightning_cli", "EXAMPLES", "RUN_DIR"]

RUN_DIR = "${run_dir}"

EXAMPLES = {
    "fit": "amos-zoo fit --config configs/base/gpu.yaml --protocol btcv/swin_unetr --data.task amos-ct "
    "--data.root /data/amos22",
    "validate": "amos-zoo validate --config configs/base/gpu.yaml --protocol btcv/swin_unetr --data.root /data/amos22 "
    "--ckpt_path runs/amos-ct/btcv/swin_unetr/checkpoints/best.ckpt",
    "test": "amos-zoo test --config configs/base/cpu.yaml --protocol quickstart/unet --data.root quickstart/data "
    "--ckpt_path quickstart/checkpoints/best.ckpt",
}


class _ProtocolAction(argparse.Action):
    """``--protocol NAME[/MODEL]``: the protocol card's settings, applied like a config file at this position."""

    def __call__(self, parser, cfg, values, option_string=None) -> None:
        import yaml

        from amos_zoo.models.registry import MODEL_REGISTRY
        from amos_zoo.protocols import ProtocolError, protocol_config

        name, _, model = str(values).partition("/")
        if model and model not in MODEL_REGISTRY:
            raise ProtocolError(
                f"unknown model {model!r} in --protocol {name}/{model}; known: {', '.join(MODEL_REGISTRY)}"
            )
        ActionConfigFile.apply_config(parser, cfg, "config", yaml.safe_dump(protocol_config(name, model or None)))


def _replace_run_dir(node: Any, run_dir: str) -> Any:
    if isinstance(node, str):
        return node.replace(RUN_DIR, run_dir)
    if isinstance(node, Namespace):
        for key, value in vars(node).items():
            setattr(node, key, _replace_run_dir(value, run_dir))
        return node
    if isinstance(node, list):
        return [_replace_run_dir(v, run_dir) for v in node]
    if isinstance(node, dict):
        return {k: _replace_run_dir(v, run_dir) for k, v in node.items()}
    return node


class AmosLightningCLI(LightningCLI):
    """LightningCLI with the data -> model links, protocols, run folders and safe checkpoint loading."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """fit, validate and test (``amos-zoo predict`` is amos-zoo's own predictor)."""
        return {k: v for k, v in LightningCLI.subcommands().items() if k != "predict"}

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--protocol",
            action=_ProtocolAction,
            help="apply a protocol card, optionally with a model's network settings: NAME or NAME/MODEL "
            "(amos-zoo protocol list); later options override it",
        )
        parser.add_argument(
            "--trust",
            type=bool,
            default=False,
            help="load a --ckpt_path that needs full unpickling (it can run code: only files you trust)",
        )
        parser.link_arguments("data.num_channels", "model.in_channels", apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.label_names", "model.label_names", apply_on="instantiate")
        parser.link_arguments("data.patch_size", "model.roi_size", apply_on="instantiate")
        parser.link_arguments("data.recipe_settings", "model.preprocessing", apply_on="instantiate")
        parser.link_arguments("trainer.max_steps", "model.max_steps")

    def before_instantiate_classes(self) -> None:
        """Fill ``trainer.default_root_dir`` (``runs/<task>/<protocol>/<model>``) and every ``${run_dir}``."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        trainer = config.trainer
        if trainer.default_root_dir is None:
            protocol = config.model.get("protocol") or "custom"
            trainer.default_root_dir = str(Path("runs") / config.data.task / protocol / config.model.arch)
        for key in ("logger", "callbacks"):
            trainer[key] = _replace_run_dir(trainer[key], str(trainer.default_root_dir))

    def _parse_ckpt_path(self) -> None:
        """LightningCLI reads ``--ckpt_path``'s hyperparameters before anything runs: through amos-zoo's safe loader
        (an allow-listed weights-only load, a clear refusal of files that need full unpickling, ``--trust``)."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not (ckpt_path and Path(ckpt_path).is_file()):
            return
        from amos_zoo.weights.formats._common import torch_load

        checkpoint = torch_load(ckpt_path, str(ckpt_path), trust=bool(self.config[subcommand].get("trust")))
        hparams = dict(checkpoint.get("hyper_parameters", {}))
        hparams.pop("_instantiator", None)
        if hparams:
            self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        trust = bool(self.config[subcommand].get("trust"))
        if kwargs.get("ckpt_path") is not None and kwargs.get("weights_only") is None:
            kwargs["weights_only"] = not trust
            from amos_zoo.weights.formats._common import allow_numpy_globals

            allow_numpy_globals()
        return kwargs

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except pickle.UnpicklingError as err:
            from amos_zoo.weights.formats import UnsafeCheckpointError

            ckpt = self.config_init[subcommand].get("ckpt_path")
            raise UnsafeCheckpointError(
                f"{ckpt}: refused: loading it needs full unpickling, which can run arbitrary code "
                f"({str(err).splitlines()[0][:200]}). Only if you trust where the file came from, pass --trust true."
            ) from err


def shipped_configs(args: Sequence[str]) -> list[str]:
    """``--config configs/X.yaml`` that is not a file here names the config shipped with the package (the same
    layout), so the README's commands work from any folder; an existing file always wins."""
    from amos_zoo.config_files import config_root

    out = list(args)
    for i, arg in enumerate(out[:-1]):
        if arg == "--config" and not Path(out[i + 1]).is_file():
            parts = Path(out[i + 1]).parts
            if parts and parts[0] == "configs" and (config_root().joinpath(*parts[1:])).is_file():
                out[i + 1] = str(config_root().joinpath(*parts[1:]))
    return out


def run_lightning_cli(args: Sequence[str] | None = None, run: bool = True) -> AmosLightningCLI:
    """Run ``fit`` / ``validate`` / ``test`` (``args`` as on the command line, without ``amos-zoo``); W&B runs
    offline unless ``WANDB_MODE`` says otherwise."""
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    import sys

    given = list(sys.argv[1:] if args is None else args)
    resolved = shipped_configs(given)
    if resolved == sys.argv[1:]:
        args = None  # the command line itself: LightningCLI reads sys.argv (and DDP relaunches it on each rank)
    else:
        args = resolved
    try:
        return AmosLightningCLI(
            SegmentationModule,
            SegmentationDataModule,
            args=list(args) if args is not None else None,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
            parser_kwargs={
                name: {"epilog": f"Example:\n  {example}", "formatter_class": help_formatter()}
                for name, example in EXAMPLES.items()
            },
            run=run,
        )
    finally:
        _finish_wandb()


def _finish_wandb() -> None:
    """Close the W&B run a command opened, so the next command in this process starts its own run."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
