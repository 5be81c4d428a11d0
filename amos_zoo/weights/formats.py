"""Reading weight files in the layouts found in the wild, safely, into one shape: tensors under model keys.

Everything is loaded with ``torch.load(weights_only=True)``; the one non-tensor object real checkpoints
carry (research-contributions' ``best_acc``, a numpy scalar) is allow-listed by name instead of turning
weights-only loading off. ``trust=True`` (a user's explicit choice) allows full unpickling.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from amos_zoo.io import numpy_safe_globals

__all__ = ["RawWeights", "read_weights_file", "to_model_keys", "UnsafeCheckpointError", "bundle_network"]


class UnsafeCheckpointError(ValueError):
    """The file needs full unpickling (it may run code) and the user did not say they trust it."""


@dataclass
class RawWeights:
    """Tensors read from a file, in the file's own key names, with what the file says about itself."""

    fmt: str
    state: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)


_ALLOWED: list[Any] = []


def _torch_load(source: str | Path | io.BytesIO, where: str, trust: bool) -> Any:
    if not _ALLOWED:  # added for good: torch's safe_globals context manager would, on exit, also remove the
        _ALLOWED.extend(numpy_safe_globals())  # numpy entries the dataset cache allow-listed before
        torch.serialization.add_safe_globals(_ALLOWED)
    try:
        return torch.load(source, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f"{where}: refused: loading it needs full unpickling, which can run arbitrary code (it holds Python "
            f"objects beyond tensors, containers and numpy scalars: {str(err).splitlines()[0][:200]}). Only if you "
            "trust where the file came from, pass trust=True (--trust)."
        ) from err


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _find_bundle_root(names: list[str]) -> str | None:
    for name in names:
        if name.endswith("configs/metadata.json"):
            return name[: -len("configs/metadata.json")]
    return None


def _read_bundle(path: Path, trust: bool) -> RawWeights:
    """A MONAI bundle folder or zip: models/model.pt (a state dict) with configs/metadata.json and inference.json."""
    if path.is_dir():
        root = path
        meta_file, model_file = root / "configs" / "metadata.json", root / "models" / "model.pt"
        if not meta_file.is_file() or not model_file.is_file():
            raise ValueError(f"{path}: not a MONAI bundle (needs configs/metadata.json and models/model.pt)")
        metadata = json.loads(meta_file.read_text())
        inference = _read_config(root / "configs")
        obj = _torch_load(model_file, str(model_file), trust)
    else:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            prefix = _find_bundle_root(names)
            if prefix is None or f"{prefix}models/model.pt" not in names:
                raise ValueError(f"{path}: not a MONAI bundle zip (needs configs/metadata.json and models/model.pt)")
            metadata = json.loads(zf.read(f"{prefix}configs/metadata.json"))
            inference = {}
            for ext in ("json", "yaml", "yml"):
                member = f"{prefix}configs/inference.{ext}"
                if member in names:
                    inference = _parse_config(zf.read(member).decode(), ext)
                    break
            obj = _torch_load(io.BytesIO(zf.read(f"{prefix}models/model.pt")), f"{path}:models/model.pt", trust)
    state = obj.get("model", obj) if isinstance(obj, dict) and not _is_state_dict(obj) else obj
    if not _is_state_dict(state):
        raise ValueError(f"{path}: the bundle's models/model.pt is not a state dict")
    return RawWeights("bundle", dict(state), {"metadata": metadata, "inference": inference})


def _parse_config(text: str, ext: str) -> dict[str, Any]:
    if ext == "json":
        return json.loads(text)
    import yaml

    return yaml.safe_load(text)


def _read_config(configs: Path) -> dict[str, Any]:
    for ext in ("json", "yaml", "yml"):
        f = configs / f"inference.{ext}"
        if f.is_file():
            return _parse_config(f.read_text(), ext)
    return {}


def read_weights_file(path: str | Path, trust: bool = False) -> RawWeights:
    """Read any supported layout (see ``registry.FORMATS``) and say which one it is."""
    path = Path(path)
    if path.is_dir() or (zipfile.is_zipfile(path) and _find_bundle_root(zipfile.ZipFile(path).namelist())):
        return _read_bundle(path, trust)
    obj = _torch_load(path, str(path), trust)
    if isinstance(obj, torch.nn.Module):  # only reachable with trust=True (a pickled model)
        return RawWeights("state-dict", dict(obj.state_dict()), {"pickled_module": type(obj).__name__})
    if _is_state_dict(obj):
        return RawWeights("state-dict", dict(obj))
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: holds a {type(obj).__name__}, not a checkpoint dict or state dict")
    if "state_dict" in obj and ("pytorch-lightning_version" in obj or "hyper_parameters" in obj):
        return RawWeights(
            "lightning",
            dict(obj["state_dict"]),
            {
                "hyper_parameters": obj.get("hyper_parameters", {}),
                "amos_zoo": obj.get("amos_zoo", {}),
                "datamodule_hyper_parameters": obj.get("datamodule_hyper_parameters", {}),
            },
        )
    if _is_state_dict(obj.get("model")) and any(k.startswith("encoder.") for k in obj["model"]):
        return RawWeights("ssl-monai-filter", dict(obj["model"]))
    if _is_state_dict(obj.get("state_dict")):
        state = obj["state_dict"]
        ssl = any(k.startswith("module.patch_embed.") for k in state)
        if ssl and not any(k.startswith("module.swinViT.") for k in state):
            return RawWeights("ssl-swinvit", dict(state))
        extra = {k: (v.item() if hasattr(v, "item") else v) for k, v in obj.items() if k in ("epoch", "best_acc")}
        return RawWeights("research-contributions", dict(state), extra)
    raise ValueError(
        f"{path}: unrecognised checkpoint layout (top-level keys {sorted(obj)[:10]}); expected a state dict, an "
        "amos-zoo/Lightning checkpoint, a research-contributions checkpoint or a MONAI bundle"
    )


def _strip(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def to_model_keys(raw: RawWeights) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Translate a file's keys into the MONAI network's keys; also return the file keys that map to none."""
    dropped: list[str] = []
    if raw.fmt == "lightning":
        state = {k[len("net.") :]: v for k, v in raw.state.items() if k.startswith("net.")}
        dropped = [k for k in raw.state if not k.startswith("net.")]
        return state, dropped
    if raw.fmt == "ssl-swinvit":  # as SwinUNETR.load_from: module.X -> swinViT.X, mlp.fc1/fc2 -> linear1/linear2
        state = {}
        for k, v in raw.state.items():
            key = "swinViT." + k[len("module.") :] if k.startswith("module.") else k
            key = key.replace(".mlp.fc1.", ".mlp.linear1.").replace(".mlp.fc2.", ".mlp.linear2.")
            state[key] = v
        return state, dropped
    if raw.fmt == "ssl-monai-filter":
        from monai.networks.nets.swin_unetr import filter_swinunetr

        state = {}
        for k, v in raw.state.items():
            pair = filter_swinunetr(k, v)
            if pair is None:
                dropped.append(k)
            else:
                state[pair[0]] = pair[1]
        return state, dropped
    state = _strip("module.", dict(raw.state))  # DataParallel / DDP saves
    return state, dropped


_CLASS_TO_ARCH = {"UNet": "unet", "UNETR": "unetr", "SwinUNETR": "swin_unetr", "VNet": "vnet", "DynUNet": "dynunet"}


def bundle_network(raw: RawWeights) -> tuple[str, int, int, dict[str, Any]]:
    """(arch, in_channels, out_channels, constructor kwargs) from a bundle's inference config ``network_def``.

    Arguments that MONAI >= 1.5 rejects are translated (``pos_embed`` -> ``proj_type``) or dropped
    (SwinUNETR's ``img_size``).
    """
    net = dict(raw.meta.get("inference", {}).get("network_def") or {})
    target = str(net.pop("_target_", "")).rsplit(".", 1)[-1]
    if target not in _CLASS_TO_ARCH:
        raise ValueError(f"bundle network {target or '(none)'} is not one of {', '.join(_CLASS_TO_ARCH)}")
    bad = [k for k, v in net.items() if isinstance(v, str) and v.startswith(("@", "$", "%"))]
    if bad:
        raise ValueError(f"bundle network_def uses config expressions for {bad}; pass model= built by hand")
    in_channels = int(net.pop("in_channels", 1))
    out_channels = int(net.pop("out_channels"))
    net.pop("spatial_dims", None)
    if "pos_embed" in net:
        net["proj_type"] = net.pop("pos_embed")
    net.pop("img_size", None) if target == "SwinUNETR" else None
    return _CLASS_TO_ARCH[target], in_channels, out_channels, net
