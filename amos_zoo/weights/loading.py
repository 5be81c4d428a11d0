"""``amos_zoo.weights.load``: weights from a registry name, a path or a URL into a model, with a load report."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from amos_zoo.models.registry import create_model, encoder_keys, with_patch_size
from amos_zoo.weights.download import fetch
from amos_zoo.weights.formats import RawWeights, bundle_network, read_weights_file, to_model_keys
from amos_zoo.weights.registry import WEIGHTS, WeightEntry

__all__ = [
    "LoadReport",
    "WeightsLoadError",
    "UnverifiedWeightsError",
    "load",
    "load_with_report",
    "load_state_into",
    "resolve",
    "apply_weights",
    "file_labels",
    "transfer_head",
    "arch_of",
    "use_legacy_patch_merging",
]

log = logging.getLogger(__name__)


class WeightsLoadError(RuntimeError):
    """A load that would leave the model without the weights it was meant to get."""


class UnverifiedWeightsError(ValueError):
    """Downloading a file whose hash no source states, without the user's explicit trust."""


@dataclass
class LoadReport:
    """What a load did, tensor by tensor."""

    source: str
    fmt: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)
    legacy_patch_merging: bool = False

    def summary(self) -> str:
        """One line for logs and the CLI."""
        total = len(self.loaded) + len(self.missing) + len(self.reinitialised)
        text = f"{self.source} ({self.fmt}): loaded {len(self.loaded)} of {total} tensors"
        if self.reinitialised:
            text += f", re-initialised {len(self.reinitialised)} (head: {', '.join(self.reinitialised[:4])})"
        text += f", missing {len(self.missing)}, unexpected {len(self.unexpected)}"
        if self.legacy_patch_merging:
            text += "; legacy (MONAI < 1.5) Swin patch merging"
        return text


def arch_of(model: nn.Module) -> str | None:
    """Registry name of a MONAI network instance (None for other modules)."""
    names = {"UNet": "unet", "UNETR": "unetr", "SwinUNETR": "swin_unetr", "VNet": "vnet", "DynUNet": "dynunet"}
    return names.get(type(model).__name__)


def use_legacy_patch_merging(model: nn.Module) -> int:
    """Switch a SwinUNETR's patch-merging modules to the MONAI < 1.5 computation in place (same parameters).

    Returns the number of modules switched.
    """
    from monai.networks.nets.swin_unetr import PatchMerging, PatchMergingV2

    from amos_zoo.models.swin_legacy import LegacyPatchMerging

    switched = 0
    for module in model.modules():
        if type(module) in (PatchMerging, LegacyPatchMerging):
            module.__class__ = LegacyPatchMerging
            switched += 1
        elif type(module) is PatchMergingV2:
            raise ValueError("the model uses PatchMergingV2 ('mergingv2'); pre-1.5 checkpoints used 'merging'")
    return switched


def load_state_into(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    *,
    source: str = "state dict",
    fmt: str = "state-dict",
    required: list[str] | None = None,
    reinit: set[str] | frozenset[str] = frozenset(),
    allow_reinit_mismatched: bool = False,
    file_only_keys: list[str] | None = None,
) -> LoadReport:
    """Copy the tensors whose keys and shapes match into ``model``; report every other key.

    Args:
        required: keys that must load (all model keys by default); a load that misses any of them fails.
        reinit: keys deliberately left at their fresh initialisation (an output head for a new label set).
        allow_reinit_mismatched: re-initialise keys whose shapes differ instead of failing.
        file_only_keys: keys of the file that no model key maps to (reported as unexpected).

    Raises:
        WeightsLoadError: nothing would load, shapes clash, or a required key would stay un-loaded.
    """
    target = model.state_dict()
    report = LoadReport(source, fmt, unexpected=sorted(set(file_only_keys or [])))
    to_load: dict[str, torch.Tensor] = {}
    clashes = []
    for key, value in state.items():
        if key not in target:
            report.unexpected.append(key)
        elif key in reinit:
            continue
        elif tuple(value.shape) != tuple(target[key].shape):
            clashes.append(f"{key} {tuple(value.shape)} -> {tuple(target[key].shape)}")
        else:
            to_load[key] = value.to(target[key].dtype)
    if clashes and not allow_reinit_mismatched:
        raise WeightsLoadError(
            f"{source}: {len(clashes)} tensors have other shapes than the model's ({'; '.join(clashes[:3])}). "
            "The file was trained with other network arguments or another label set; to fine-tune to a new label "
            "set, re-initialise the head (reinit_head=True / amos-zoo finetune)."
        )
    reinit_keys = set(reinit) | {c.split(" ", 1)[0] for c in clashes}
    report.loaded = sorted(to_load)
    report.reinitialised = sorted(k for k in target if k in reinit_keys)
    report.missing = sorted(k for k in target if k not in to_load and k not in reinit_keys)
    if not to_load:
        raise WeightsLoadError(
            f"{source}: no tensor of the file matches the model ({len(state)} in the file, {len(target)} in the "
            f"model; file keys look like {list(state)[:3]}, model keys like {list(target)[:3]}). Nothing was loaded."
        )
    must = [k for k in (required if required is not None else list(target)) if k not in reinit_keys]
    absent = [k for k in must if k not in to_load]
    if absent:
        raise WeightsLoadError(
            f"{source}: {len(absent)} of the {len(must)} tensors that must load are not in the file "
            f"(e.g. {absent[:4]}); loaded {len(to_load)}. Refusing a partial load; check the architecture arguments."
        )
    model.load_state_dict(to_load, strict=False)
    return report


def _monai_before_1_5(version: str | None) -> bool:
    if not version:
        return False
    try:
        major, minor = (int(p) for p in str(version).split(".")[:2])
    except ValueError:
        return False
    return (major, minor) < (1, 5)


def resolve(
    source: str | Path, sha256: str | None = None, trust: bool = False, progress: bool = True
) -> tuple[Path, WeightEntry | None]:
    """The local file for a registry name, path or URL (downloaded and verified), and its registry entry."""
    entry = WEIGHTS.get(str(source))
    if entry is not None:
        sha = sha256 or entry.sha256
        if sha is None and not trust:
            raise UnverifiedWeightsError(
                f"weights {entry.name!r} are not verified: {entry.hash_source}. Pass trust=True (--trust) if you "
                f"trust {entry.url}, or sha256=... (--sha256) with a hash you checked."
            )
        if not entry.direct_download:
            raise FileNotFoundError(
                f"weights {entry.name!r} are published on a web page, not as a direct download: open {entry.url}, "
                "download the file, then pass its path (and --sha256 HASH or --trust)."
            )
        return fetch(entry.url, sha, progress=progress), entry
    if urlparse(str(source)).scheme in ("http", "https") and sha256 is None and not trust:
        raise UnverifiedWeightsError(
            f"{source}: a download needs a SHA-256 to verify (sha256=..., --sha256) or an explicit trust=True (--trust)"
        )
    return fetch(source, sha256, progress=progress), None


def _build(raw: RawWeights, entry: WeightEntry | None, num_classes: int | None) -> tuple[nn.Module, str, dict, bool]:
    """A fresh network for the file: (model, arch, kwargs, legacy merging)."""
    if entry is not None:
        classes = num_classes or entry.num_classes
        if classes is None:
            raise ValueError(f"weights {entry.name!r} hold only an encoder: pass num_classes= (or model=)")
        return (
            create_model(entry.arch, entry.in_channels, classes, **entry.model_kwargs),
            entry.arch,
            entry.model_kwargs,
            entry.legacy_patch_merging,
        )
    if raw.fmt == "lightning":
        hp = raw.meta["hyper_parameters"]
        arch = hp["arch"]
        kwargs = with_patch_size(arch, hp.get("arch_kwargs"), hp.get("roi_size"))
        legacy = kwargs.get("downsample") == "merging_legacy"
        model = create_model(arch, hp.get("in_channels", 1), num_classes or hp["num_classes"], **kwargs)
        return model, arch, kwargs, legacy
    if raw.fmt == "bundle":
        arch, cin, cout, kwargs = bundle_network(raw)
        legacy = arch == "swin_unetr" and _monai_before_1_5(raw.meta["metadata"].get("monai_version"))
        if legacy:
            kwargs["downsample"] = "merging_legacy"
        return create_model(arch, cin, num_classes or cout, **kwargs), arch, kwargs, legacy
    raise ValueError(
        f"a {raw.fmt} file does not say which network it fits: pass model= (or use a registry name, "
        "`amos-zoo weights` lists them)"
    )


def transfer_head(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    class_dims: dict[str, tuple[int, ...]],
    class_map: dict[int, int],
) -> list[str]:
    """Copy the output-head channels of classes both label sets share (new id -> old id in ``class_map``).

    A fine-tuned head then starts from what the network already knew about those classes (e.g. spleen from an
    AMOS model), and only new classes start from scratch. Returns the keys that were (partly) copied.
    """
    import itertools

    pairs = sorted(class_map.items())
    target = model.state_dict()
    done = []
    with torch.no_grad():
        for key, dims in class_dims.items():
            src, dst = state.get(key), target.get(key)
            if src is None or dst is None or not pairs or src.ndim != dst.ndim:
                continue
            if any(src.shape[d] != dst.shape[d] for d in range(src.ndim) if d not in dims):
                continue
            if any(max(o for _, o in pairs) >= src.shape[d] for d in dims):
                continue
            for combo in itertools.product(pairs, repeat=len(dims)):
                dst_idx: list[Any] = [slice(None)] * dst.ndim
                src_idx: list[Any] = [slice(None)] * src.ndim
                for d, (new, old) in zip(dims, combo):
                    dst_idx[d], src_idx[d] = new, old
                dst[tuple(dst_idx)] = src[tuple(src_idx)].to(dst.dtype)
            done.append(key)
    model.load_state_dict({k: target[k] for k in done}, strict=False)
    return done


def file_labels(raw: RawWeights, entry: WeightEntry | None) -> dict[int, str] | None:
    """The label map a file's output channels stand for, when the file or its registry entry says."""
    if entry is not None:
        return entry.labels
    if raw.fmt == "lightning":
        stored = raw.meta.get("amos_zoo", {}).get("labels")
        if stored:
            return {int(k): v for k, v in stored.items()}
        names = raw.meta["hyper_parameters"].get("label_names")
        return {0: "background", **{int(k): v for k, v in names.items()}} if names else None
    if raw.fmt == "bundle":
        pred = raw.meta["metadata"].get("network_data_format", {}).get("outputs", {}).get("pred", {})
        channels = pred.get("channel_def")
        return {int(k): v for k, v in channels.items()} if channels else None
    return None


def apply_weights(
    model: nn.Module,
    raw: RawWeights,
    entry: WeightEntry | None = None,
    *,
    source: str = "",
    reinit: set[str] | frozenset[str] = frozenset(),
    reinit_head: bool = False,
    legacy_patch_merging: bool | None = None,
) -> LoadReport:
    """Put the tensors of ``raw`` into ``model`` (which it fits), switching to legacy Swin merging when the file
    predates MONAI 1.5, and requiring the whole network (or, for encoder-only files, the whole encoder)."""
    arch = arch_of(model)
    legacy = bool(entry.legacy_patch_merging) if entry is not None else False
    if entry is None:
        if raw.fmt in ("research-contributions", "ssl-swinvit", "ssl-monai-filter"):
            legacy = True  # these layouts all predate MONAI 1.5
        elif raw.fmt == "bundle":
            legacy = _monai_before_1_5(raw.meta["metadata"].get("monai_version"))
        elif raw.fmt == "lightning":
            legacy = (raw.meta["hyper_parameters"].get("arch_kwargs") or {}).get("downsample") == "merging_legacy"
    if legacy_patch_merging is not None:
        legacy = legacy_patch_merging
    legacy = legacy and arch == "swin_unetr"
    if legacy:
        use_legacy_patch_merging(model)
    state, file_only = to_model_keys(raw)
    encoder_only = (entry is not None and entry.encoder_only) or raw.fmt in ("ssl-swinvit", "ssl-monai-filter")
    required = None
    if encoder_only:
        if arch is None:
            raise ValueError(f"{source}: an encoder-only file needs a registered network (got {type(model).__name__})")
        required = encoder_keys(arch, model)
    report = load_state_into(
        model,
        state,
        source=source,
        fmt=raw.fmt,
        required=required,
        reinit=reinit,
        allow_reinit_mismatched=reinit_head,
        file_only_keys=file_only,
    )
    report.legacy_patch_merging = legacy
    log.info(report.summary())
    return report


def load_with_report(
    source: str | Path,
    model: nn.Module | None = None,
    *,
    sha256: str | None = None,
    trust: bool = False,
    num_classes: int | None = None,
    reinit_head: bool = False,
    legacy_patch_merging: bool | None = None,
    progress: bool = True,
) -> tuple[nn.Module, LoadReport, WeightEntry | None, RawWeights]:
    """:func:`load`, also returning the report, the registry entry (or None) and the file's own metadata."""
    path, entry = resolve(source, sha256=sha256, trust=trust, progress=progress)
    raw = read_weights_file(path, trust=trust)
    if model is None:
        model, _, _, legacy = _build(raw, entry, num_classes)
        legacy_patch_merging = legacy if legacy_patch_merging is None else legacy_patch_merging
    report = apply_weights(
        model,
        raw,
        entry,
        source=str(source),
        reinit_head=reinit_head or num_classes is not None,
        legacy_patch_merging=legacy_patch_merging,
    )
    return model, report, entry, raw


def load(
    source: str | Path,
    model: nn.Module | None = None,
    *,
    sha256: str | None = None,
    trust: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """A network with the weights of ``source`` in it.

    Args:
        source: a registry name (``amos-zoo weights``), a path, a ``file://`` or an ``http(s)://`` URL; also a
            MONAI bundle folder or zip.
        model: the network to fill; None builds it from the registry entry, the Lightning checkpoint's
            hyperparameters or the bundle's ``network_def``.
        sha256: expected SHA-256 (overrides the registry's); a mismatch is an error and keeps nothing.
        trust: allow files no source states a hash for, and full unpickling of files that need it.
        **kwargs: ``num_classes`` (build with another head; encoder-only files), ``reinit_head`` (leave tensors
            with other shapes freshly initialised), ``legacy_patch_merging`` (force on/off), ``progress``.

    Raises:
        WeightsLoadError: the file would load nothing, or less than the whole network (the encoder, for
            encoder-only files). Every load logs how many tensors were loaded, missing and unexpected.
    """
    net, report, _, _ = load_with_report(source, model, sha256=sha256, trust=trust, **kwargs)
    print(f"amos-zoo weights: {report.summary()}")
    return net
