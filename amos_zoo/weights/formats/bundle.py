"""MONAI bundles (folder or zip): ``configs/metadata.json``, ``configs/inference.json`` (or yaml) and
``models/model.pt`` (a plain state dict). The network is rebuilt from ``network_def``; bundles exported by
amos-zoo also carry their model card in metadata.json (``amos_zoo_card``)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

from amos_zoo.weights.formats._common import RawWeights, is_state_dict, torch_load

NAME = "bundle"
DESCRIPTION = "MONAI bundle folder or zip: configs/metadata.json, configs/inference.json, models/model.pt"

_CLASS_TO_ARCH = {"UNet": "unet", "UNETR": "unetr", "SwinUNETR": "swin_unetr", "VNet": "vnet", "DynUNet": "dynunet"}


def _zip_root(names: list[str]) -> str | None:
    for name in names:
        if name.endswith("configs/metadata.json"):
            return name[: -len("configs/metadata.json")]
    return None


def detect_path(path: Path) -> bool:
    """A folder, or a zip holding configs/metadata.json."""
    if path.is_dir():
        return True
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return _zip_root(zf.namelist()) is not None


def _parse_config(text: str, ext: str) -> dict[str, Any]:
    if ext == "json":
        return json.loads(text)
    import yaml

    return yaml.safe_load(text)


def read_path(path: Path, trust: bool) -> RawWeights:
    """The bundle's state dict, metadata and inference config."""
    if path.is_dir():
        meta_file, model_file = path / "configs" / "metadata.json", path / "models" / "model.pt"
        if not meta_file.is_file() or not model_file.is_file():
            raise ValueError(f"{path}: not a MONAI bundle (needs configs/metadata.json and models/model.pt)")
        metadata = json.loads(meta_file.read_text())
        inference: dict[str, Any] = {}
        for ext in ("json", "yaml", "yml"):
            f = path / "configs" / f"inference.{ext}"
            if f.is_file():
                inference = _parse_config(f.read_text(), ext)
                break
        obj = torch_load(model_file, str(model_file), trust)
    else:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            prefix = _zip_root(names)
            if prefix is None or f"{prefix}models/model.pt" not in names:
                raise ValueError(f"{path}: not a MONAI bundle zip (needs configs/metadata.json and models/model.pt)")
            metadata = json.loads(zf.read(f"{prefix}configs/metadata.json"))
            inference = {}
            for ext in ("json", "yaml", "yml"):
                member = f"{prefix}configs/inference.{ext}"
                if member in names:
                    inference = _parse_config(zf.read(member).decode(), ext)
                    break
            obj = torch_load(io.BytesIO(zf.read(f"{prefix}models/model.pt")), f"{path}:models/model.pt", trust)
    state = obj.get("model", obj) if isinstance(obj, dict) and not is_state_dict(obj) else obj
    if not is_state_dict(state):
        raise ValueError(f"{path}: the bundle's models/model.pt is not a state dict")
    return RawWeights(NAME, dict(state), {"metadata": metadata, "inference": inference})


def to_model_keys(raw: RawWeights) -> tuple[dict[str, Any], list[str]]:
    """Keys as the network's (``module.`` stripped)."""
    from amos_zoo.weights.formats._common import strip_prefix

    return strip_prefix("module.", dict(raw.state)), []


def predates_monai_1_5(raw: RawWeights) -> bool:
    """Made with MONAI < 1.5 (``monai_version`` in metadata.json)."""
    version = raw.meta["metadata"].get("monai_version")
    try:
        major, minor = (int(p) for p in str(version).split(".")[:2])
    except ValueError:
        return False
    return (major, minor) < (1, 5)


def network(raw: RawWeights) -> tuple[str, int, int, dict[str, Any]]:
    """(arch, in_channels, out_channels, constructor kwargs) from ``network_def``; arguments MONAI >= 1.5 rejects
    are translated (``pos_embed`` -> ``proj_type``) or dropped (SwinUNETR's ``img_size``)."""
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
    if target == "SwinUNETR":
        net.pop("img_size", None)
    return _CLASS_TO_ARCH[target], in_channels, out_channels, net


def card(raw: RawWeights):
    """The card an amos-zoo export stored, else one built from ``network_def``, the output ``channel_def`` and the
    inferer's window, with the BTCV recipe (a foreign bundle's preprocessing is not parsed)."""
    from amos_zoo.card import ModelCard
    from amos_zoo.data.recipes import get_recipe

    stored = raw.meta["metadata"].get("amos_zoo_card")
    if stored:
        return ModelCard.from_dict(stored)
    arch, cin, cout, kwargs = network(raw)
    channels = raw.meta["metadata"].get("network_data_format", {}).get("outputs", {}).get("pred", {}).get("channel_def")
    labels = {int(k): v for k, v in channels.items()} if channels else {i: f"class_{i}" for i in range(cout)}
    inferer = raw.meta.get("inference", {}).get("inferer", {})
    roi = tuple(inferer.get("roi_size", (96, 96, 96)))
    if isinstance(inferer.get("roi_size"), str):
        roi = (96, 96, 96)
    return ModelCard(
        arch=arch,
        arch_kwargs=kwargs,
        in_channels=cin,
        labels=labels if len(labels) == cout else {i: f"class_{i}" for i in range(cout)},
        recipe=get_recipe("btcv", patch_size=roi),
        roi_size=roi,
        sw_batch_size=int(inferer.get("sw_batch_size", 4)) if not isinstance(inferer.get("sw_batch_size"), str) else 4,
        sw_overlap=float(inferer.get("overlap", 0.5)) if not isinstance(inferer.get("overlap"), str) else 0.5,
        legacy_patch_merging=arch == "swin_unetr" and predates_monai_1_5(raw),
    )
