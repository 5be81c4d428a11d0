"""``amos-zoo export``: a trained model as a MONAI bundle, a TorchScript file or an ONNX file.

Each export is checked before it is kept: TorchScript and ONNX outputs are compared with the PyTorch
network on the same input (max absolute difference reported), and the bundle's inference.json is parsed by
``monai.bundle`` and its network built and loaded. Files are written into a temporary folder and renamed
into place, so an interrupted export leaves nothing half-written.
"""

from __future__ import annotations

import inspect
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from amos_zoo.card import ModelCard
from amos_zoo.data.recipes import Ref, preprocessing_spec

__all__ = ["ExportResult", "export_model", "bundle_inference_config", "network_from_card", "FORMATS"]

FORMATS = ("bundle", "torchscript", "onnx")


@dataclass
class ExportResult:
    """Where the export went and how closely it reproduces the PyTorch network."""

    path: Path
    fmt: str
    max_abs_diff: float | None = None


def network_from_card(card: dict[str, Any]) -> nn.Module:
    """The network of a card dictionary (what an exported bundle's ``network_def`` calls)."""
    from amos_zoo.models.registry import build_network

    return build_network(ModelCard.from_dict(card))


def _render(value: Any) -> Any:
    if isinstance(value, Ref):
        return f"${value.path}"
    if isinstance(value, tuple | list):
        return [_render(v) for v in value]
    if isinstance(value, dict):
        return {k: _render(v) for k, v in value.items()}
    return value


def bundle_inference_config(card: ModelCard, modality: str = "CT") -> dict[str, Any]:
    """A MONAI bundle ``inference.json`` for a card: the recipe's preprocessing rendered from
    :func:`~amos_zoo.data.recipes.preprocessing_spec` (the list amos-zoo's predictor instantiates), the network
    built by :func:`network_from_card`, a sliding window, MONAI's ``Invertd`` back to each input's grid and
    :func:`~amos_zoo.infer.predictor.fill_background` (the crop's air is background, as in amos-zoo's predictor).
    ``modality`` is a config entry (``--modality MRI`` on ``monai.bundle run``) that selects the normalisation.

    Long because it is the bundle's inference.json written out, section by section.
    """
    preprocessing = [
        {"_target_": spec.target, **_render(spec.kwargs)} for spec in preprocessing_spec(card.recipe, keys=("image",))
    ]
    return {
        "imports": ["$import glob", "$import os", "$import torch", "$import numpy", "$import amos_zoo"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "$@bundle_root + '/data'",
        "modality": modality.upper(),
        "datalist": "$list(sorted(glob.glob(@dataset_dir + '/*.nii*')))",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": {"_target_": "amos_zoo.infer.export.network_from_card", "card": card.to_dict()},
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": preprocessing},
        "dataset": {
            "_target_": "Dataset",
            "data": "$[{'image': i, 'modality': @modality} for i in @datalist]",
            "transform": "@preprocessing",
        },
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False},
        "inferer": {
            "_target_": "SlidingWindowInferer",
            "roi_size": list(card.roi_size),
            "sw_batch_size": card.sw_batch_size,
            "overlap": card.sw_overlap,
            "mode": card.sw_mode,
        },
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "Activationsd", "keys": "pred", "softmax": True},
                {
                    "_target_": "Invertd",
                    "keys": "pred",
                    "transform": "@preprocessing",
                    "orig_keys": "image",
                    "nearest_interp": False,
                    "to_tensor": True,
                },
                {"_target_": "Lambdad", "keys": "pred", "func": "$amos_zoo.infer.predictor.fill_background"},
                {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
                {
                    "_target_": "SaveImaged",
                    "keys": "pred",
                    "output_dir": "@output_dir",
                    "output_postfix": "seg",
                    "output_dtype": "$numpy.uint8",
                    "separate_folder": False,
                    "resample": False,
                },
            ],
        },
        "evaluator": {
            "_target_": "SupervisedEvaluator",
            "device": "@device",
            "val_data_loader": "@dataloader",
            "network": "@network",
            "inferer": "@inferer",
            "postprocessing": "@postprocessing",
            "amp": False,
        },
        "checkpointloader": {
            "_target_": "CheckpointLoader",
            "load_path": "$@bundle_root + '/models/model.pt'",
            "load_dict": {"model": "@network"},
            "map_location": "@device",
        },
        "initialize": ["$@checkpointloader(@evaluator)"],
        "run": ["$@evaluator.run()"],
    }


def _metadata(card: ModelCard, modality: str, report: str) -> dict[str, Any]:
    import monai

    import amos_zoo

    try:
        import ignite

        ignite_version = ignite.__version__
    except ImportError:  # pragma: no cover - a bundle's inference needs ignite; say which version it was made with
        ignite_version = "not installed"
    import nibabel

    channels = {str(i): name for i, name in sorted(card.labels.items())}
    return {
        "version": "0.1.0",
        "changelog": {"0.1.0": "exported by amos-zoo"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "optional_packages_version": {
            "nibabel": nibabel.__version__,
            "pytorch-ignite": ignite_version,
            "amos-zoo": getattr(amos_zoo, "__version__", "0.1.0"),
        },
        "name": f"amos-zoo {card.arch}",
        "task": f"CT / MRI segmentation of {len(channels) - 1} structures (config entry 'modality': the normalisation)",
        "description": f"amos-zoo {card.arch} exported as a MONAI bundle ({report}); needs amos-zoo installed",
        "amos_zoo_card": card.to_dict(),
        "authors": "amos-zoo",
        "copyright": "see the training data's licence",
        "intended_use": "research; not for diagnostic use",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "hounsfield" if modality.upper() == "CT" else "magnitude",
                    "modality": modality.upper(),
                    "num_channels": card.in_channels,
                    "spatial_shape": list(card.roi_size),
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": True,
                    "channel_def": {str(c): "image" for c in range(card.in_channels)},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": card.num_classes,
                    "spatial_shape": list(card.roi_size),
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": True,
                    "channel_def": channels,
                }
            },
        },
    }


def _max_diff(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64))))


def _probe(card: ModelCard, batch: int) -> torch.Tensor:
    return torch.randn(batch, card.in_channels, *card.roi_size)


def _export_bundle(net: nn.Module, card: ModelCard, out: Path, modality: str, report: str) -> float:
    (out / "configs").mkdir(parents=True)
    (out / "models").mkdir()
    (out / "docs").mkdir()
    torch.save(net.state_dict(), out / "models" / "model.pt")
    (out / "configs" / "inference.json").write_text(json.dumps(bundle_inference_config(card, modality), indent=2))
    (out / "configs" / "metadata.json").write_text(json.dumps(_metadata(card, modality, report), indent=2))
    labels = ", ".join(f"{i} {n}" for i, n in sorted(card.labels.items()))
    recipe = card.recipe
    # a bundle runs MONAI's SlidingWindowInferer: say where that differs from amos-zoo's predictor for this card
    differs = ["MONAI's window positions, not nnU-Net's"] if card.sw_tiling == "nnunet" else []
    differs += ["no mirror test-time augmentation"] if card.tta else []
    bundle_differences = "; " + ", ".join(differs) if differs else ""
    (out / "docs" / "README.md").write_text(
        f"# amos-zoo {card.arch} (MONAI bundle)\n\nLabels: {labels}.\n\n"
        f"Preprocessing (recipe `{recipe.name}`): RAS, spacing {recipe.spacing} mm, CT normalisation "
        f"`{recipe.ct_normalization}`, MRI normalisation `{recipe.mri_normalization}`, chosen by the config entry "
        f"`modality` (CT or MRI); sliding window {card.roi_size} ({card.sw_mode}, overlap {card.sw_overlap}"
        f"{bundle_differences}); the "
        "prediction is inverted back to each input's grid. Needs `pip install amos-zoo` (its transforms and network "
        "builder).\n\nRun:\n\n```\npython -m monai.bundle run --config_file configs/inference.json --meta_file "
        "configs/metadata.json --bundle_root . --dataset_dir DIR_OF_NIFTI --output_dir OUT [--modality MRI]\n```\n"
    )
    # check: monai.bundle parses the config, builds the network and loads the weights into it
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(out / "configs" / "inference.json")
    parser["bundle_root"] = str(out)
    rebuilt = parser.get_parsed_content("network_def")
    rebuilt.load_state_dict(torch.load(out / "models" / "model.pt", weights_only=True))
    x = _probe(card, 1)
    with torch.no_grad():
        return _max_diff(rebuilt.eval()(x), net(x))


def _export_torchscript(net: nn.Module, card: ModelCard, out: Path) -> float:
    with torch.no_grad():
        traced = torch.jit.trace(net, _probe(card, 1), check_trace=False)
        path = out / "model.ts"
        torch.jit.save(traced, str(path))
        loaded = torch.jit.load(str(path))
        probe = _probe(card, 2)
        return _max_diff(loaded(probe), net(probe))


def _export_onnx(net: nn.Module, card: ModelCard, out: Path) -> float:
    try:
        import onnxruntime as ort
    except ImportError as err:  # pragma: no cover
        raise RuntimeError("ONNX export needs onnx, onnxscript and onnxruntime: pip install 'amos-zoo[export]'") from (
            err
        )
    path = out / "model.onnx"
    batch = torch.export.Dim("batch", min=1, max=64)
    name = next(iter(inspect.signature(net.forward).parameters))
    torch.onnx.export(
        net,
        (_probe(card, 1),),
        str(path),
        input_names=["image"],
        output_names=["logits"],
        dynamic_shapes={name: {0: batch}},
        dynamo=True,
        external_data=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probe = _probe(card, 2)
    (got,) = session.run(None, {"image": probe.numpy()})
    with torch.no_grad():
        return _max_diff(got, net(probe))


def export_model(
    ckpt: str | Path, fmt: str, out: str | Path, *, modality: str = "CT", trust: bool = False, tolerance: float = 1e-3
) -> ExportResult:
    """Export the network of ``ckpt`` (an amos-zoo checkpoint or registry name) to ``out``.

    ``bundle`` writes ``out/`` as a MONAI bundle folder (its metadata.json carries the model card, its
    ``modality`` entry the default normalisation); ``torchscript`` / ``onnx`` write ``out/model.ts`` /
    ``out/model.onnx`` with ``out/model.json`` (the model card). The result's ``max_abs_diff`` is the largest
    difference to the PyTorch network's logits; above ``tolerance`` the export fails.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: exists and is not empty; choose a new folder for the export")
    from amos_zoo.weights.loading import load_model

    net, card, report = load_model(ckpt, trust=trust)
    if fmt == "bundle" and card.spatial_dims != 3:
        raise ValueError(
            f"{ckpt}: a {card.spatial_dims}D {card.arch} cannot be a NIfTI bundle; export torchscript or onnx"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if fmt == "bundle":
            diff = _export_bundle(net, card, staging, modality, report.summary())
        else:
            diff = _export_torchscript(net, card, staging) if fmt == "torchscript" else _export_onnx(net, card, staging)
            sidecar = {"card": card.to_dict(), "max_abs_diff_vs_pytorch": diff}
            (staging / "model.json").write_text(json.dumps(sidecar, indent=2))
        if diff > tolerance:
            raise RuntimeError(f"{fmt} export differs from PyTorch by {diff:.2e} (> {tolerance}); not written")
        if out.exists():
            out.rmdir()  # empty (checked above)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    path = out if fmt == "bundle" else out / ("model.ts" if fmt == "torchscript" else "model.onnx")
    return ExportResult(path, fmt, diff)
