"""``amos-zoo export``: a trained model as a MONAI bundle, a TorchScript file or an ONNX file.

Each export is checked before it is kept: TorchScript and ONNX outputs are compared with the PyTorch
network on the same input (max absolute difference reported), and the bundle's inference.json is parsed by
``monai.bundle`` and its network built and loaded. Files are written into a temporary folder and renamed
into place, so an interrupted export leaves nothing half-written.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from amos_zoo.data.recipes import Recipe
from amos_zoo.engine.checkpoints import load_for_inference

__all__ = ["ExportResult", "export_model", "bundle_inference_config", "FORMATS"]

FORMATS = ("bundle", "torchscript", "onnx")

_MONAI_CLASS = {
    "unet": "monai.networks.nets.UNet",
    "unetr": "monai.networks.nets.UNETR",
    "swin_unetr": "monai.networks.nets.SwinUNETR",
    "vnet": "monai.networks.nets.VNet",
    "dynunet": "monai.networks.nets.DynUNet",
}


@dataclass
class ExportResult:
    """Where the export went and how closely it reproduces the PyTorch network."""

    path: Path
    fmt: str
    max_abs_diff: float | None = None


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def _network_def(info: dict[str, Any]) -> dict[str, Any]:
    from amos_zoo.models.registry import MODEL_REGISTRY

    arch = info["arch"]
    kwargs = {**MODEL_REGISTRY[arch].defaults, **info["arch_kwargs"]}
    if arch == "swin_unetr":
        kwargs.pop("img_size", None)
        if kwargs.get("downsample") == "merging_legacy":
            kwargs["downsample"] = "$amos_zoo.models.swin_legacy.LegacyPatchMerging"
    net: dict[str, Any] = {"_target_": _MONAI_CLASS[arch]}
    if arch == "dynunet":  # DynUNet's positional arguments, as the registry builds them
        kernels = kwargs.pop("kernel_size", [[3, 3, 3]] * 6)
        strides = kwargs.pop("strides", [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 1]])
        kwargs.setdefault("upsample_kernel_size", strides[1:])
        kwargs.update(kernel_size=kernels, strides=strides)
    if arch == "unet":
        kwargs.setdefault("strides", [2] * (len(kwargs["channels"]) - 1))
    net.update(spatial_dims=3, in_channels=info["in_channels"], out_channels=info["num_classes"])
    net.update(_jsonable(kwargs))
    return net


def bundle_inference_config(info: dict[str, Any], modality: str = "CT") -> dict[str, Any]:
    """A MONAI bundle ``inference.json`` reproducing amos-zoo's preprocessing, sliding window and inversion."""
    recipe: Recipe = info["recipe"]
    if modality.upper() == "CT":
        normalise = {
            "_target_": "ScaleIntensityRanged",
            "keys": "image",
            "a_min": recipe.ct_window[0],
            "a_max": recipe.ct_window[1],
            "b_min": 0.0,
            "b_max": 1.0,
            "clip": True,
        }
    else:
        normalise = {
            "_target_": "ScaleIntensityRangePercentilesd",
            "keys": "image",
            "lower": recipe.mri_percentiles[0],
            "upper": recipe.mri_percentiles[1],
            "b_min": 0.0,
            "b_max": 1.0,
            "clip": True,
        }
    preprocessing = [
        {"_target_": "LoadImaged", "keys": "image", "reader": "NibabelReader"},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        {"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32"},
        {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
        {"_target_": "Spacingd", "keys": "image", "pixdim": list(recipe.spacing), "mode": "bilinear"},
        normalise,
    ]
    if recipe.crop_foreground:
        preprocessing.append(
            {"_target_": "CropForegroundd", "keys": "image", "source_key": "image", "select_fn": "$lambda x: x > 0"}
        )
    return {
        "imports": ["$import glob", "$import os", "$import torch", "$import amos_zoo"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "$@bundle_root + '/data'",
        "datalist": "$list(sorted(glob.glob(@dataset_dir + '/*.nii*')))",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": _network_def(info),
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": preprocessing},
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False},
        "inferer": {
            "_target_": "SlidingWindowInferer",
            "roi_size": list(info["roi_size"]),
            "sw_batch_size": info["sw_batch_size"],
            "overlap": info["overlap"],
            "mode": "gaussian",
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


def _metadata(info: dict[str, Any], modality: str) -> dict[str, Any]:
    import monai

    import amos_zoo

    try:
        import ignite

        ignite_version = ignite.__version__
    except ImportError:  # pragma: no cover - a bundle's inference needs ignite; say which version it was made with
        ignite_version = "not installed"
    import nibabel

    channels = {str(i): name for i, name in sorted(info["labels"].items())}
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
        "name": f"amos-zoo {info['arch']}",
        "task": f"{modality} segmentation of {len(channels) - 1} structures",
        "description": f"amos-zoo {info['arch']} exported as a MONAI bundle ({info['load_report']})",
        "authors": "amos-zoo",
        "copyright": "see the training data's licence",
        "intended_use": "research; not for diagnostic use",
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "hounsfield" if modality.upper() == "CT" else "magnitude",
                    "modality": modality.upper(),
                    "num_channels": info["in_channels"],
                    "spatial_shape": list(info["roi_size"]),
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": True,
                    "channel_def": {str(c): "image" for c in range(info["in_channels"])},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": info["num_classes"],
                    "spatial_shape": list(info["roi_size"]),
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


def _export_bundle(net: nn.Module, info: dict[str, Any], out: Path, modality: str) -> float:
    (out / "configs").mkdir(parents=True)
    (out / "models").mkdir()
    (out / "docs").mkdir()
    torch.save(net.state_dict(), out / "models" / "model.pt")
    (out / "configs" / "inference.json").write_text(json.dumps(bundle_inference_config(info, modality), indent=2))
    (out / "configs" / "metadata.json").write_text(json.dumps(_metadata(info, modality), indent=2))
    labels = ", ".join(f"{i} {n}" for i, n in sorted(info["labels"].items()))
    (out / "docs" / "README.md").write_text(
        f"# amos-zoo {info['arch']} (MONAI bundle)\n\nLabels: {labels}.\n\n"
        f"Preprocessing: RAS, spacing {info['recipe'].spacing} mm, {modality} normalisation of recipe "
        f"`{info['recipe'].name}`; sliding window {info['roi_size']} (gaussian, overlap {info['overlap']}); the "
        "prediction is inverted back to each input's grid.\n\nRun:\n\n```\npython -m monai.bundle run "
        "--config_file configs/inference.json --meta_file configs/metadata.json --bundle_root . "
        "--dataset_dir DIR_OF_NIFTI --output_dir OUT\n```\n"
    )
    # check: monai.bundle parses the config, builds the network and loads the weights into it
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(out / "configs" / "inference.json")
    parser["bundle_root"] = str(out)
    rebuilt = parser.get_parsed_content("network_def")
    rebuilt.load_state_dict(torch.load(out / "models" / "model.pt", weights_only=True))
    x = torch.randn(1, info["in_channels"], *info["roi_size"])
    with torch.no_grad():
        return _max_diff(rebuilt.eval()(x), net(x))


def _export_torchscript(net: nn.Module, info: dict[str, Any], out: Path) -> float:
    x = torch.randn(1, info["in_channels"], *info["roi_size"])
    with torch.no_grad():
        traced = torch.jit.trace(net, x, check_trace=False)
        path = out / "model.ts"
        torch.jit.save(traced, str(path))
        loaded = torch.jit.load(str(path))
        probe = torch.randn(2, info["in_channels"], *info["roi_size"])
        return _max_diff(loaded(probe), net(probe))


def _export_onnx(net: nn.Module, info: dict[str, Any], out: Path) -> float:
    try:
        import onnxruntime as ort
    except ImportError as err:  # pragma: no cover
        raise RuntimeError("ONNX export needs onnx, onnxscript and onnxruntime: pip install 'amos-zoo[export]'") from (
            err
        )
    x = torch.randn(1, info["in_channels"], *info["roi_size"])
    path = out / "model.onnx"
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.onnx.export(
        net,
        (x,),
        str(path),
        input_names=["image"],
        output_names=["logits"],
        dynamic_shapes={"x": {0: batch}},
        dynamo=True,
        external_data=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probe = torch.randn(2, info["in_channels"], *info["roi_size"])
    (got,) = session.run(None, {"image": probe.numpy()})
    with torch.no_grad():
        return _max_diff(got, net(probe))


def export_model(
    ckpt: str | Path, fmt: str, out: str | Path, *, modality: str = "CT", trust: bool = False, tolerance: float = 1e-3
) -> ExportResult:
    """Export the network of ``ckpt`` (an amos-zoo checkpoint or registry name) to ``out``.

    ``bundle`` writes ``out/`` as a MONAI bundle folder; ``torchscript`` / ``onnx`` write ``out/model.ts`` /
    ``out/model.onnx`` with ``out/model.json`` (labels, recipe, patch size). The result's ``max_abs_diff``
    is the largest difference to the PyTorch network's logits; above ``tolerance`` the export fails.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: exists and is not empty; choose a new folder for the export")
    net, info = load_for_inference(ckpt, trust=trust)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if fmt == "bundle":
            diff = _export_bundle(net, info, staging, modality)
        else:
            diff = _export_torchscript(net, info, staging) if fmt == "torchscript" else _export_onnx(net, info, staging)
            sidecar = {
                "arch": info["arch"],
                "in_channels": info["in_channels"],
                "labels": {str(k): v for k, v in info["labels"].items()},
                "recipe": info["recipe"].to_dict(),
                "roi_size": list(info["roi_size"]),
                "max_abs_diff_vs_pytorch": diff,
            }
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
