"""Loading weights: from a registry name, a path or a URL into a network, with a load report.

``load(source, model=None)`` fills a network; ``load_model(source)`` returns a network ready to segment scans
together with its :class:`~amos_zoo.card.ModelCard`. What network a file fits, which preprocessing it expects and
whether it needs Swin-UNETR's pre-1.5 patch merging all come from one card: the registry entry's, else the one
the file carries (:func:`amos_zoo.weights.formats.card_of`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from amos_zoo.card import ModelCard
from amos_zoo.models.registry import build_network, encoder_keys
from amos_zoo.weights.download import fetch
from amos_zoo.weights.errors import WeightsLoadError
from amos_zoo.weights.formats import RawWeights, card_of, is_encoder_only, predates_monai_1_5, read_weights_file
from amos_zoo.weights.formats import to_model_keys as _to_model_keys
from amos_zoo.weights.registry import WEIGHTS, WeightEntry

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "LoadReport",
    "WeightsLoadError",
    "UnverifiedWeightsError",
    "load",
    "load_weights",
    "load_model",
    "save_checkpoint",
    "load_with_report",
    "load_state_into",
    "resolve",
    "apply_weights",
    "file_card",
    "transfer_head",
    "use_legacy_patch_merging",
]

log = logging.getLogger(__name__)


class UnverifiedWeightsError(ValueError):
    """Downloading a file whose hash no source states, without the user's explicit trust."""


@dataclass
class LoadReport:
    """What a load did, tensor by tensor, and how the file was verified."""

    source: str
    fmt: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)
    legacy_patch_merging: bool = False
    verified: str = "local file"

    def summary(self) -> str:
        """One line for logs and the command line."""
        total = len(self.loaded) + len(self.missing) + len(self.reinitialised)
        text = f"{self.source} ({self.fmt}): loaded {len(self.loaded)} of {total} tensors"
        if self.reinitialised:
            text += f", re-initialised {len(self.reinitialised)} (head: {', '.join(self.reinitialised[:4])})"
        text += f", missing {len(self.missing)}, unexpected {len(self.unexpected)}"
        if self.legacy_patch_merging:
            text += "; legacy (MONAI < 1.5) Swin patch merging"
        return text + f"; verified: {self.verified}"


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
            "set, re-initialise the head (reinit_head=True / fit --model.pretrained)."
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


def resolve(
    source: str | Path, sha256: str | None = None, trust: bool = False, progress: bool = True
) -> tuple[Path, WeightEntry | None, str]:
    """The local file for a registry name, path or URL (downloaded and verified), its registry entry, and how it
    was verified (``sha256``, ``md5 (stated by the source)``, ``none (trusted)`` or ``local file``)."""
    entry = WEIGHTS.get(str(source))
    if entry is not None:
        sha = sha256 or entry.sha256
        md5 = None if sha else entry.md5  # an MD5 only where no SHA-256 is known
        if sha is None and md5 is None and not trust:
            raise UnverifiedWeightsError(
                f"weights {entry.name!r} are not verified: {entry.hash_source}. Pass trust=True (--trust) if you "
                f"trust {entry.url}, or sha256=... (--sha256) with a hash you checked."
            )
        if not entry.direct_download:
            raise FileNotFoundError(
                f"weights {entry.name!r} are published on a web page, not as a direct download: open {entry.url}, "
                "download the file, then pass its path (and --sha256 HASH or --trust)."
            )
        how = "sha256" if sha else "md5 (stated by the source; no SHA-256 published)" if md5 else "none (trusted)"
        return fetch(entry.url, sha, md5=md5, progress=progress), entry, how
    remote = urlparse(str(source)).scheme in ("http", "https")
    if remote and sha256 is None and not trust:
        raise UnverifiedWeightsError(
            f"{source}: a download needs a SHA-256 to verify (sha256=..., --sha256) or an explicit trust=True (--trust)"
        )
    how = "sha256" if sha256 else "none (trusted)" if remote else "local file"
    return fetch(source, sha256, progress=progress), None, how


def file_card(raw: RawWeights, entry: WeightEntry | None) -> ModelCard | None:
    """The card of the network a file fits: the registry entry's, else what the file says (None: nothing)."""
    return entry.card if entry is not None else card_of(raw)


def _legacy(raw: RawWeights, card: ModelCard | None, arch: str | None) -> bool:
    if arch != "swin_unetr":
        return False
    if card is not None and (card.legacy_patch_merging or raw.fmt in ("lightning", "bundle")):
        return card.legacy_patch_merging
    return predates_monai_1_5(raw)


def _arch_of(model: nn.Module) -> str | None:
    names = {"UNet": "unet", "UNETR": "unetr", "SwinUNETR": "swin_unetr", "VNet": "vnet", "DynUNet": "dynunet"}
    return names.get(type(model).__name__)


def apply_weights(
    model: nn.Module,
    raw: RawWeights,
    card: ModelCard | None = None,
    *,
    source: str = "",
    reinit: set[str] | frozenset[str] = frozenset(),
    reinit_head: bool = False,
    legacy_patch_merging: bool | None = None,
) -> LoadReport:
    """Put the tensors of ``raw`` into ``model`` (which it fits), switching a Swin-UNETR to the pre-1.5 patch
    merging when the card (or, without one, the file's age) says so, and requiring the whole network (or, for
    encoder-only files, the whole encoder)."""
    arch = _arch_of(model) or (card.arch if card is not None else None)
    legacy = _legacy(raw, card, arch) if legacy_patch_merging is None else legacy_patch_merging and arch == "swin_unetr"
    if legacy:
        use_legacy_patch_merging(model)
    state, file_only = _to_model_keys(raw)
    encoder_only = is_encoder_only(raw) or (card is not None and card.labels is None)
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

    import torch

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
) -> tuple[nn.Module, LoadReport, ModelCard | None, RawWeights]:
    """:func:`load`, also returning the report, the file's model card (None when nothing says) and the raw file."""
    path, entry, verified = resolve(source, sha256=sha256, trust=trust, progress=progress)
    raw = read_weights_file(path, trust=trust)
    card = file_card(raw, entry)
    if model is None:
        if card is None:
            raise ValueError(
                f"{source}: a {raw.fmt} file does not say which network it fits: pass model= (or use a registry "
                "name; `amos-zoo weights` lists them)"
            )
        if card.labels is None and num_classes is None:
            raise ValueError(f"{source}: the file holds only an encoder: pass num_classes= (or model=)")
        model = build_network(card, num_classes)
        if legacy_patch_merging is None:
            legacy_patch_merging = card.legacy_patch_merging
    report = apply_weights(
        model,
        raw,
        card,
        source=str(source),
        reinit_head=reinit_head or num_classes is not None,
        legacy_patch_merging=legacy_patch_merging,
    )
    report.verified = verified
    return model, report, card, raw


def load_weights(
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
        model: the network to fill; None builds it from the file's model card (registry entry, amos-zoo
            checkpoint or bundle).
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


def load_model(
    source: str | Path, *, trust: bool = False, sha256: str | None = None, progress: bool = True
) -> tuple[nn.Module, ModelCard, LoadReport]:
    """A network ready to segment scans (eval mode), with its model card and load report.

    ``source``: an amos-zoo checkpoint, a weights registry name (not an encoder-only one), a URL or a MONAI bundle.
    """
    net, report, card, raw = load_with_report(source, sha256=sha256, trust=trust, progress=progress)
    if card.labels is None:
        raise ValueError(f"{source}: the weights hold only an encoder; fine-tune them first (fit --model.pretrained)")
    if card.recipe is None:
        raise ValueError(
            f"{source}: a {raw.fmt} file does not say how to preprocess scans; use an amos-zoo checkpoint (.ckpt), "
            "a MONAI bundle or a registry name (amos-zoo weights)"
        )
    if report.legacy_patch_merging != card.legacy_patch_merging:
        card = card.with_(legacy_patch_merging=report.legacy_patch_merging)
    return net.eval(), card, report


def save_checkpoint(net: nn.Module, card: ModelCard, path: str | Path) -> Path:
    """Save a network with its model card as an amos-zoo checkpoint (the layout ``amos-zoo fit`` writes), so that
    ``predict``, ``export`` and ``load_weights`` can use a network trained elsewhere. Written atomically."""
    import torch

    from amos_zoo.io import atomic_path

    hparams = {
        "arch": card.arch,
        "arch_kwargs": dict(card.arch_kwargs),
        "in_channels": card.in_channels,
        "num_classes": card.num_classes,
        "roi_size": list(card.roi_size),
        "label_names": {i: n for i, n in (card.labels or {}).items() if i != 0},
        "preprocessing": card.recipe.to_dict() if card.recipe is not None else None,
        "legacy_patch_merging": card.legacy_patch_merging,
    }
    checkpoint = {
        "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
        "hyper_parameters": hparams,
        "amos_zoo": {"format": 2, "card": card.to_dict()},
        "pytorch-lightning_version": "amos-zoo",
    }
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)
    return Path(path)


#: ``amos_zoo.weights.load`` is ``load_weights``
load = load_weights
