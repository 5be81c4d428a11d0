"""Promptable models' weights: registry entries (the sources' own addresses) and loaders for each real layout.

Layouts:

* ``sam-state-dict``: a flat SAM state dict (``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``): SAM's
  ``sam_vit_b_01ec64.pth`` and MedSAM's ``medsam_vit_b.pth`` (bowang-lab/MedSAM@d71e8a1 utils/ckpt_convert.py writes
  ``sam_model.state_dict()``-shaped files). Read with ``torch.load(weights_only=True)``.
* ``sam-med2d``: ``{"model": state_dict, "optimizer": <torch.optim.Adam object>}`` (OpenGVLab/SAM-Med2D@bfd2b93
  train.py: ``state = {'model': model.state_dict(), 'optimizer': optimizer}``). A whole optimizer object cannot be
  read weights-only, so the file is read by a restricted unpickler that rebuilds tensors and plain containers
  only and turns every other object (the optimizer, its defaultdict, anything else) into an inert placeholder,
  with storages memory-mapped so the optimizer's tensors are never read from disk. No code of the file runs.

When the network's input size differs from the checkpoint's (SAM ViT-B's 1024 weights in a 256 network), the
absolute position embedding and the global-attention relative position tables are resized bilinearly, as
SAM-Med2D's ``build_sam.py`` ``load_from`` does (it also re-initialises the mask tokens, hypernetwork MLPs and
IoU head in that case; amos-zoo keeps them, and the load report says what was resized).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "PromptableWeights",
    "PROMPTABLE_WEIGHTS",
    "PromptableLoadReport",
    "read_promptable_checkpoint",
    "load_promptable_weights",
    "resolve_promptable_weights",
]


@dataclass(frozen=True)
class PromptableWeights:
    """One published checkpoint of a promptable model."""

    name: str
    model: str
    url: str
    direct_download: bool
    sha256: str | None
    hash_source: str
    license: str
    source: str
    fmt: str
    notes: str = ""


PROMPTABLE_WEIGHTS: dict[str, PromptableWeights] = {}


def _register(entry: PromptableWeights) -> None:
    from amos_zoo._registry import register_unique

    register_unique(PROMPTABLE_WEIGHTS, entry.name, entry, "promptable weights")


_register(
    PromptableWeights(
        "sam_vit_b",
        "sam_vit_b",
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
        True,
        None,
        "not stated by the source (segment-anything README 'Model Checkpoints'; MedSAM@d71e8a1 README line 68 "
        "links the same file)",
        "Apache-2.0 (segment-anything)",
        "Kirillov et al., Segment Anything, ICCV 2023; facebookresearch/segment-anything README",
        "sam-state-dict",
    )
)
_register(
    PromptableWeights(
        "medsam_vit_b",
        "medsam_vit_b",
        "https://drive.google.com/drive/folders/1ETWmi4AiniJeWOt6HAsYgTjYv_fkgzoN",
        False,
        None,
        "not stated by the source (bowang-lab/MedSAM@d71e8a1 README 'Get Started': a Google Drive folder)",
        "Apache-2.0 (MedSAM)",
        "Ma et al., Segment anything in medical images, Nat. Commun. 2024; bowang-lab/MedSAM@d71e8a1",
        "sam-state-dict",
        notes="medsam_vit_b.pth; MedSAM_Inference.py loads it with sam_model_registry['vit_b'](checkpoint=...)",
    )
)
_register(
    PromptableWeights(
        "sam_med2d_vit_b",
        "sam_med2d_vit_b",
        "https://drive.google.com/file/d/1ARiB5RkSsWmAB_8mqWnwDF8ZKTtFwsjl/view",
        False,
        None,
        "not stated by the source (OpenGVLab/SAM-Med2D@bfd2b93 README results table, 'SAM-Med2D' checkpoint link; "
        "also on Baidu Netdisk)",
        "Apache-2.0 (SAM-Med2D)",
        "Cheng et al., SAM-Med2D, arXiv 2308.16184; OpenGVLab/SAM-Med2D@bfd2b93",
        "sam-med2d",
        notes="sam-med2d_b.pth, {'model', 'optimizer'}; test.py builds it with --image_size 256 --encoder_adapter True",
    )
)
_register(
    PromptableWeights(
        "ft_sam_vit_b",
        "sam_vit_b",
        "https://drive.google.com/file/d/1J4qQt9MZZYdv1eoxMTJ4FL8Fz65iUFM8/view",
        False,
        None,
        "not stated by the source (OpenGVLab/SAM-Med2D@bfd2b93 README results table, 'FT-SAM' checkpoint link)",
        "Apache-2.0 (SAM-Med2D)",
        "Cheng et al., SAM-Med2D, arXiv 2308.16184 (FT-SAM: SAM fine-tuned without adapters, evaluated at 256)",
        "sam-med2d",
        notes="evaluate with --image_size 256 (the README table's resolution); layout presumed as SAM-Med2D's "
        "(the same train.py), detected when read",
    )
)


@dataclass
class PromptableLoadReport:
    """What a load did: tensors loaded, resized, missing and unexpected; what was skipped unread."""

    source: str
    fmt: str
    loaded: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    verified: str = "local file"

    def summary(self) -> str:
        text = f"{self.source} ({self.fmt}): loaded {len(self.loaded)} tensors"
        if self.resized:
            text += f" ({len(self.resized)} resized to the input size: {', '.join(self.resized[:3])}...)"
        text += f", missing {len(self.missing)}, unexpected {len(self.unexpected)}"
        if self.skipped:
            text += f"; skipped unread: {', '.join(self.skipped)}"
        return text + f"; verified: {self.verified}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary(),
            "source": self.source,
            "fmt": self.fmt,
            "loaded": len(self.loaded),
            "resized": self.resized,
            "missing": self.missing,
            "unexpected": self.unexpected,
            "skipped": self.skipped,
            "verified": self.verified,
        }


class _Inert:
    """Stands in for any object the restricted reader does not rebuild; absorbs construction and state."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> _Inert:
        return _Inert()

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass


_TENSOR_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("collections", "OrderedDict"),
    ("torch", "Size"),
}


class _TensorsOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _TENSOR_GLOBALS or (module == "torch" and name.endswith("Storage")):
            return super().find_class(module, name)
        return _Inert


class _TensorsOnly:
    """A ``pickle_module`` for ``torch.load``: tensors and containers rebuilt, everything else inert."""

    Unpickler = _TensorsOnlyUnpickler
    load = pickle.load


def read_promptable_checkpoint(path: str | Path) -> tuple[dict[str, Any], str, list[str]]:
    """(state dict, layout name, top-level entries skipped unread) of a SAM / MedSAM / SAM-Med2D file, or of an
    amos-zoo fine-tuning checkpoint (``amos-zoo fit`` with a promptable arch)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        # a whole optimizer object (SAM-Med2D): rebuild the tensors only, nothing else runs
        obj = torch.load(path, map_location="cpu", weights_only=False, mmap=True, pickle_module=_TensorsOnly)
    except RuntimeError as err:
        raise ValueError(f"{path}: not a torch checkpoint ({err})") from err
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) and "amos_zoo" in obj:
        # an amos-zoo fine-tuning checkpoint (SegmentationModule with a promptable arch): the network is ``net.``
        state = {k[4:]: v for k, v in obj["state_dict"].items() if k.startswith("net.")}
        return state, "amos-zoo-checkpoint", sorted(str(k) for k in obj if k != "state_dict")
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        state = {k: v for k, v in obj["model"].items() if isinstance(v, torch.Tensor)}
        return state, "sam-med2d", sorted(str(k) for k in obj if k != "model")
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        if not any(str(k).startswith("image_encoder.") for k in obj):
            raise ValueError(f"{path}: a state dict without SAM's image_encoder.* keys (first keys {list(obj)[:4]})")
        return dict(obj), "sam-state-dict", []
    keys = sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
    raise ValueError(f"{path}: unrecognised layout ({keys}); expected a SAM state dict or {{'model', 'optimizer'}}")


def _resize_to(name: str, tensor, target):
    import torch.nn.functional as F

    if name.endswith("pos_embed"):  # (1, H, W, C)
        return F.interpolate(
            tensor.permute(0, 3, 1, 2).float(), target.shape[1:3], mode="bilinear", align_corners=False
        ).permute(0, 2, 3, 1)
    return F.interpolate(tensor[None, None].float(), target.shape, mode="bilinear", align_corners=False)[0, 0]


def load_promptable_weights(model, path: str | Path, allow_missing: bool = False, verified: str = "local file"):
    """Load a checkpoint into a promptable network; refuse a load that would leave tensors missing (SAM weights in
    SAM-Med2D's network leave the adapters) unless ``allow_missing``. Returns the report."""
    import torch

    from amos_zoo.weights.errors import WeightsLoadError

    state, fmt, skipped = read_promptable_checkpoint(path)
    report = PromptableLoadReport(str(path), fmt, skipped=skipped, verified=verified)
    own = model.state_dict()
    ready = {}
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
            continue
        if value.shape != own[key].shape:
            if ("pos_embed" in key or "rel_pos" in key) and value.dim() == own[key].dim():
                value = _resize_to(key, value, own[key])
                report.resized.append(key)
            else:
                raise WeightsLoadError(f"{path}: {key} is {tuple(value.shape)}, the network's {tuple(own[key].shape)}")
        ready[key] = value.to(own[key].dtype)
        report.loaded.append(key)
    report.missing = [k for k in own if k not in state]
    if report.missing and not allow_missing:
        raise WeightsLoadError(
            f"{path}: {len(report.missing)} tensors of the network are not in the file ({report.missing[:4]}...); "
            "wrong model for these weights?"
        )
    with torch.no_grad():
        model.load_state_dict({**own, **ready})
    return report


def resolve_promptable_weights(weights: str, trust: bool = False, sha256: str | None = None) -> tuple[str, str]:
    """(local path, how it was verified) of promptable weights: a registry name is downloaded (and checked against
    its digest; a source without one needs ``trust``; a web page needs the manual download), a path is kept."""
    from amos_zoo.weights.download import fetch

    if weights not in PROMPTABLE_WEIGHTS:
        if sha256 is not None:
            from amos_zoo.weights.download import sha256_of

            if sha256_of(Path(weights)) != sha256:
                raise ValueError(f"{weights}: SHA-256 differs from the expected {sha256}")
            return str(weights), "sha256"
        return str(weights), "local file"
    entry = PROMPTABLE_WEIGHTS[weights]
    if not entry.direct_download:
        raise ValueError(
            f"weights {weights!r} are published as a web page ({entry.url}): download the file by hand and "
            "pass its path (--weights PATH, --model.pretrained PATH)"
        )
    digest = entry.sha256 or sha256
    if digest is None and not trust:
        raise ValueError(f"weights {weights!r}: the source states no digest; pass --trust to download {entry.url}")
    return str(fetch(entry.url, digest)), "sha256" if digest else "not verified (trusted by the user)"
