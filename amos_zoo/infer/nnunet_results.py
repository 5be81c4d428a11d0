"""nnU-Net v2 results folders (``nnUNet_results/DatasetXXX/Trainer__Plans__3d_fullres``: ``plans.json``,
``dataset.json``, ``fold_X/checkpoint_final.pth``) as one amos-zoo network and model card.

Several folds predict as nnU-Net's ensemble does (``nnUNetPredictor.predict_logits_from_preprocessed_data``): each
fold's logits, summed over folds and divided by their number, before the softmax. :class:`FoldEnsemble` averages
the folds' logits in every forward pass; the sliding-window blending and the mirroring are linear in the logits, so
this equals averaging each fold's whole-image logits.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

    from amos_zoo.card import ModelCard

__all__ = ["is_results_folder", "available_folds", "load_results_folder"]


def is_results_folder(path: str | Path) -> bool:
    """A folder with nnU-Net's ``plans.json``, ``dataset.json`` and at least one ``fold_*`` folder."""
    path = Path(path)
    return (
        path.is_dir()
        and (path / "plans.json").is_file()
        and (path / "dataset.json").is_file()
        and any(p.is_dir() and p.name.startswith("fold_") for p in path.iterdir())
    )


def available_folds(path: str | Path, checkpoint: str = "checkpoint_final.pth") -> list[str]:
    """The folds holding ``checkpoint`` (nnUNetPredictor.auto_detect_available_folds), in order."""
    folds = [p.name[len("fold_") :] for p in Path(path).iterdir() if p.is_dir() and p.name.startswith("fold_")]
    folds = [f for f in folds if (Path(path) / f"fold_{f}" / checkpoint).is_file()]
    return sorted(folds, key=lambda f: (not f.isdigit(), int(f) if f.isdigit() else 0, f))


def _fold_ensemble_class():
    from torch import nn

    class FoldEnsemble(nn.Module):
        """The mean of several networks' logits (nnU-Net's fold ensemble)."""

        def __init__(self, networks: Sequence[nn.Module]) -> None:
            super().__init__()
            self.folds = nn.ModuleList(networks)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            total = self.folds[0](x)
            for net in self.folds[1:]:
                total = total + net(x)
            return total / len(self.folds)

    return FoldEnsemble


def __getattr__(name: str):
    if name == "FoldEnsemble":
        return _fold_ensemble_class()
    raise AttributeError(name)


def load_results_folder(
    path: str | Path,
    folds: Sequence[int | str] | None = None,
    checkpoint: str = "checkpoint_final.pth",
    trust: bool = False,
) -> tuple[nn.Module, ModelCard]:
    """nnU-Net's trained model folder as a network (one fold, or the ensemble of ``folds``; default: every fold
    with ``checkpoint``) and its model card, read weights-only unless ``trust``."""
    from amos_zoo.models.registry import build_network
    from amos_zoo.weights.formats import nnunet_v2, read_weights_file
    from amos_zoo.weights.loading import apply_weights

    path = Path(path)
    folds = [str(f) for f in folds] if folds is not None else available_folds(path, checkpoint)
    if not folds:
        raise FileNotFoundError(f"{path}: no fold_*/{checkpoint} (an nnU-Net results folder holds fold_0 ... fold_4)")
    plans = json.loads((path / "plans.json").read_text())
    dataset_json = json.loads((path / "dataset.json").read_text())
    networks, card, configuration = [], None, None
    for fold in folds:
        file = path / f"fold_{fold}" / checkpoint
        if not file.is_file():
            raise FileNotFoundError(f"{file}: missing (folds here: {', '.join(available_folds(path, checkpoint))})")
        raw = read_weights_file(file, trust=trust)
        if raw.fmt != nnunet_v2.NAME:
            raise ValueError(f"{file}: not an nnU-Net v2 checkpoint (read as {raw.fmt})")
        if configuration is None:
            configuration = raw.meta["configuration"]
            card = nnunet_v2.card_from_plans(
                plans, dataset_json, configuration, raw.meta.get("inference_allowed_mirroring_axes")
            )
        elif raw.meta["configuration"] != configuration:
            raise ValueError(f"{file}: configuration {raw.meta['configuration']!r}, fold_{folds[0]}: {configuration!r}")
        raw.meta["plans"] = plans  # the folder's plans decide the axes, as nnU-Net's predictor reads them
        net = build_network(card)
        apply_weights(net, raw, card, source=str(file))
        networks.append(net.eval())
    network = networks[0] if len(networks) == 1 else _fold_ensemble_class()(networks).eval()
    return network, card
