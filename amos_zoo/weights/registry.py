"""The weights registry: one typed entry per public checkpoint, the single source of truth for weights.md.

Each entry says what network the file fits (architecture and constructor arguments), what it was trained
for (task, label map, preprocessing recipe, patch size), where it comes from (URL, SHA-256 when a source
states one, size, license, citation), its file format and its published metrics with their protocol.
``render_markdown()`` writes weights.md from it (``amos-zoo weights --markdown``); a test keeps them equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Metric",
    "WeightEntry",
    "WEIGHTS",
    "register_weights",
    "get_weights",
    "list_weights",
    "render_markdown",
    "BTCV_LABELS",
    "FORMATS",
]

#: The 13 BTCV organs in the order of the research-contributions checkpoints (README, "Target").
BTCV_LABELS: dict[int, str] = {
    0: "background",
    1: "spleen",
    2: "right kidney",
    3: "left kidney",
    4: "gallbladder",
    5: "esophagus",
    6: "liver",
    7: "stomach",
    8: "aorta",
    9: "inferior vena cava",
    10: "portal and splenic veins",
    11: "pancreas",
    12: "right adrenal gland",
    13: "left adrenal gland",
}

#: File formats the loader understands (amos_zoo/weights/formats.py).
FORMATS = {
    "lightning": "amos-zoo Lightning checkpoint (.ckpt: state_dict with 'net.' keys, hyper_parameters, amos_zoo)",
    "state-dict": "plain state dict {key: tensor} (MONAI bundle models/model.pt, torch.save(model.state_dict()))",
    "research-contributions": "{'epoch', 'best_acc' (numpy scalar), 'state_dict', optimizer, scheduler}",
    "ssl-swinvit": "Swin-UNETR self-supervised encoder: {'state_dict': {'module.patch_embed...', "
    "'module.layers1.0...'}}",
    "ssl-monai-filter": "{'model': {'encoder.patch_embed...', 'encoder.layers1.0.0...'}} read with MONAI's "
    "filter_swinunetr",
    "bundle": "MONAI bundle folder or zip: configs/metadata.json, configs/inference.json, models/model.pt",
}


@dataclass(frozen=True)
class Metric:
    """A published number with the protocol it was measured under."""

    name: str
    value: float
    protocol: str


@dataclass(frozen=True)
class WeightEntry:
    """One checkpoint: what it fits, what it does, where it comes from and how far it can be trusted.

    Attributes:
        name: registry name (``amos_zoo.weights.load(name)``, ``amos-zoo predict --weights name``).
        arch: model registry name; ``arch_kwargs`` are the constructor arguments the file was trained with.
        in_channels / num_classes: network input channels and output classes (None for encoder-only files).
        labels: id -> organ name of the output channels (None for encoder-only files).
        recipe: preprocessing recipe name plus overrides (``{"name": "btcv", "ct_window": [-57, 164]}``).
        roi_size: sliding-window size the model was trained and evaluated with.
        url: where the file is published; ``direct_download`` False when it is a web page (Google Drive)
            that must be downloaded by hand and passed as a path.
        sha256: hash stated by a source, else None: such a file loads only with ``trust=True``.
        hash_source: where the SHA-256 is stated, or why there is none.
        fmt: file format (``FORMATS``); ``encoder_only``: the file holds only the encoder.
        legacy_patch_merging: trained before MONAI 1.5's Swin-UNETR patch-merging fix (computed with the old
            merging; loaded with it).
    """

    name: str
    arch: str
    arch_kwargs: dict[str, Any]
    in_channels: int
    num_classes: int | None
    task: str
    labels: dict[int, str] | None
    recipe: dict[str, Any] | None
    roi_size: tuple[int, int, int]
    url: str
    sha256: str | None
    hash_source: str
    size_bytes: int | None
    license: str
    source: str
    fmt: str
    encoder_only: bool = False
    legacy_patch_merging: bool = False
    direct_download: bool = True
    metrics: tuple[Metric, ...] = field(default_factory=tuple)
    notes: str = ""

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise ValueError(f"{self.name}: unknown format {self.fmt!r}; known: {', '.join(FORMATS)}")
        if self.sha256 is not None and (len(self.sha256) != 64 or set(self.sha256) - set("0123456789abcdef")):
            raise ValueError(f"{self.name}: sha256 must be 64 lowercase hex digits")
        if not self.encoder_only and (self.num_classes is None or self.labels is None):
            raise ValueError(f"{self.name}: a full-network entry needs num_classes and labels")
        if self.labels is not None and self.num_classes != len(self.labels):
            raise ValueError(f"{self.name}: {len(self.labels)} labels but num_classes={self.num_classes}")

    @property
    def model_kwargs(self) -> dict[str, Any]:
        """Constructor arguments including the legacy patch merging where the file needs it."""
        kwargs = dict(self.arch_kwargs)
        if self.legacy_patch_merging:
            kwargs["downsample"] = "merging_legacy"
        return kwargs


WEIGHTS: dict[str, WeightEntry] = {}


def register_weights(entry: WeightEntry) -> WeightEntry:
    """Add an entry (names are unique)."""
    if entry.name in WEIGHTS:
        raise ValueError(f"weights {entry.name!r} are already registered")
    WEIGHTS[entry.name] = entry
    return entry


def get_weights(name: str) -> WeightEntry:
    """The entry called ``name`` (``amos-zoo weights`` lists them)."""
    if name not in WEIGHTS:
        raise KeyError(f"unknown weights {name!r}; registered: {', '.join(sorted(WEIGHTS))}")
    return WEIGHTS[name]


def list_weights() -> list[WeightEntry]:
    """All entries, sorted by name."""
    return [WEIGHTS[k] for k in sorted(WEIGHTS)]


_RC = "https://github.com/Project-MONAI/research-contributions"
_SWIN48 = {"feature_size": 48, "use_checkpoint": False, "norm_name": "instance"}

register_weights(
    WeightEntry(
        name="swin_unetr_btcv",
        arch="swin_unetr",
        arch_kwargs=_SWIN48,
        in_channels=1,
        num_classes=14,
        task="BTCV abdominal CT, 13 organs",
        labels=BTCV_LABELS,
        recipe={"name": "btcv"},
        roi_size=(96, 96, 96),
        url="https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
        "swin_unetr.base_5000ep_f48_lr2e-4_pretrained.pt",
        sha256=None,
        hash_source="not stated by the source (research-contributions SwinUNETR/BTCV README)",
        size_bytes=None,
        license="Apache-2.0 (research-contributions)",
        source=f"Tang et al., CVPR 2022; {_RC}/tree/main/SwinUNETR/BTCV",
        fmt="research-contributions",
        legacy_patch_merging=True,
        metrics=(
            Metric("mean Dice", 81.86, "BTCV validation split of dataset_0.json, sliding window overlap 0.5"),
            Metric("mean Dice", 82.25, "BTCV validation split of dataset_0.json, sliding window overlap 0.7"),
        ),
        notes="fine-tuned from the self-supervised encoder; the recipe's BTCV preprocessing",
    )
)
register_weights(
    WeightEntry(
        name="unetr_btcv",
        arch="unetr",
        arch_kwargs={
            "img_size": (96, 96, 96),
            "feature_size": 16,
            "hidden_size": 768,
            "mlp_dim": 3072,
            "num_heads": 12,
            "proj_type": "perceptron",
            "norm_name": "instance",
            "res_block": True,
            "dropout_rate": 0.0,
        },
        in_channels=1,
        num_classes=14,
        task="BTCV abdominal CT, 13 organs",
        labels=BTCV_LABELS,
        recipe={"name": "btcv"},
        roi_size=(96, 96, 96),
        url="https://drive.google.com/file/d/1kR5QuRAuooYcTNLMnMj80Z9IgSs8jtLO/view?usp=sharing",
        sha256=None,
        hash_source="not stated by the source (research-contributions UNETR/BTCV README)",
        size_bytes=None,
        license="Apache-2.0 (research-contributions)",
        source=f"Hatamizadeh et al., WACV 2022; {_RC}/tree/main/UNETR/BTCV",
        fmt="state-dict",
        direct_download=False,
        notes="UNETR_model_best_acc.pth; test.py loads it with model.load_state_dict(torch.load(path))",
    )
)
register_weights(
    WeightEntry(
        name="swin_unetr_ssl_encoder",
        arch="swin_unetr",
        arch_kwargs=_SWIN48,
        in_channels=1,
        num_classes=None,
        task="self-supervised encoder (5,050 CT volumes); fine-tune for any CT task",
        labels=None,
        recipe={"name": "btcv"},
        roi_size=(96, 96, 96),
        url="https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/model_swinvit.pt",
        sha256=None,
        hash_source="not stated by the source (research-contributions SwinUNETR/Pretrain README)",
        size_bytes=None,
        license="Apache-2.0 (research-contributions)",
        source=f"Tang et al., CVPR 2022; {_RC}/tree/main/SwinUNETR/Pretrain",
        fmt="ssl-swinvit",
        encoder_only=True,
        legacy_patch_merging=True,
        notes="keys 'module.*' mapped as SwinUNETR.load_from does; decoder and head start from scratch",
    )
)
register_weights(
    WeightEntry(
        name="swin_unetr_ssl_disruptive_ae",
        arch="swin_unetr",
        arch_kwargs=_SWIN48,
        in_channels=1,
        num_classes=None,
        task="self-supervised encoder (disruptive autoencoders); fine-tune for any CT task",
        labels=None,
        recipe={"name": "btcv"},
        roi_size=(96, 96, 96),
        url="https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/ssl_pretrained_weights.pth",
        sha256="c3564f40a6a051d3753a6d8fae5cc8eaf21ce8d82a9a3baf80748d15664055e8",
        hash_source="MONAI tests/testing_data/data_config.json (models.ssl_pretrained_weights, sha256)",
        size_bytes=None,
        license="Apache-2.0 (MONAI)",
        source="Valanarasu et al. 2023, arXiv 2307.16896; MONAI filter_swinunetr docstring",
        fmt="ssl-monai-filter",
        encoder_only=True,
        legacy_patch_merging=True,
        notes="keys 'encoder.*' mapped with MONAI's filter_swinunetr; feature size 48 as in MONAI's example",
    )
)
register_weights(
    WeightEntry(
        name="swin_unetr_btcv_bundle",
        arch="swin_unetr",
        arch_kwargs=_SWIN48,
        in_channels=1,
        num_classes=14,
        task="BTCV abdominal CT, 13 organs (MONAI model zoo bundle swin_unetr_btcv_segmentation)",
        labels=BTCV_LABELS,
        recipe={"name": "btcv"},
        roi_size=(96, 96, 96),
        url="https://developer.download.nvidia.com/assets/Clara/monai/tutorials/model_zoo/"
        "model_swin_unetr_btcv_segmentation_v1.pt",
        sha256=None,
        hash_source="the bundle's large_files.yml states only an MD5 (50dd67a01b28a1d5487fd9ac27e682fb)",
        size_bytes=None,
        license="Apache-2.0 (MONAI model zoo)",
        source="https://github.com/Project-MONAI/model-zoo/tree/dev/models/swin_unetr_btcv_segmentation",
        fmt="state-dict",
        legacy_patch_merging=True,
        notes="the bundle's models/model.pt; its inference.json passes img_size, which MONAI >= 1.5 rejects",
    )
)
register_weights(
    WeightEntry(
        name="unet_spleen_bundle",
        arch="unet",
        arch_kwargs={"channels": (16, 32, 64, 128, 256), "strides": (2, 2, 2, 2), "num_res_units": 2, "norm": "batch"},
        in_channels=1,
        num_classes=2,
        task="MSD Task09 spleen CT (MONAI model zoo bundle spleen_ct_segmentation)",
        labels={0: "background", 1: "spleen"},
        recipe={"name": "btcv", "ct_window": (-57.0, 164.0)},
        roi_size=(96, 96, 96),
        url="https://drive.google.com/file/d/1OS8fyzTxURhecSqLJq8ULfRUmZOi0tj5/view?usp=share_link",
        sha256=None,
        hash_source="the bundle's large_files.yml states only an MD5 (be4fa95e236df91766147c112ee6fafd)",
        size_bytes=None,
        license="Apache-2.0 (MONAI model zoo)",
        source="https://github.com/Project-MONAI/model-zoo/tree/dev/models/spleen_ct_segmentation",
        fmt="state-dict",
        direct_download=False,
        metrics=(Metric("mean Dice", 0.96, "bundle metadata.json eval_metrics (MSD Task09 validation)"),),
        notes="inference.json: RAS, 1.5x1.5x2.0 mm, CT window -57..164 HU -> [0, 1], sliding window 96^3",
    )
)


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_markdown() -> str:
    """weights.md, generated from the registry (``amos-zoo weights --markdown > weights.md``)."""
    lines = [
        "# amos-zoo weights",
        "",
        "Generated from `amos_zoo/weights/registry.py` by `amos-zoo weights --markdown`; a test fails when this",
        "file and the registry differ. Load with `amos_zoo.weights.load(NAME)` or `amos-zoo predict --weights NAME`;",
        "fine-tune with `amos-zoo finetune --weights NAME --config CONFIG --data.root DIR`.",
        "",
        "An entry without a SHA-256 stated by its source is not verified: it loads only with `trust=True`",
        "(`--trust`). Entries marked *manual download* point at a web page; download the file yourself and pass",
        "its path (with `--sha256` to verify it).",
        "",
        "| name | model | task | classes | format | SHA-256 | license |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in list_weights():
        sha = f"`{e.sha256[:12]}…`" if e.sha256 else "not verified"
        classes = "encoder only" if e.encoder_only else str(e.num_classes)
        lines.append(f"| `{e.name}` | {e.arch} | {_cell(e.task)} | {classes} | {e.fmt} | {sha} | {_cell(e.license)} |")
    for e in list_weights():
        lines += ["", f"## `{e.name}`", ""]
        lines.append(f"- model: `{e.arch}` with `{_cell(e.arch_kwargs)}`, {e.in_channels} input channel(s)")
        if e.labels:
            lines.append(f"- labels: {_cell(', '.join(f'{k} {v}' for k, v in sorted(e.labels.items())))}")
        if e.recipe:
            lines.append(f"- preprocessing recipe: `{_cell(e.recipe)}`; sliding window {e.roi_size}")
        lines.append(f"- file: {e.url}" + ("" if e.direct_download else " (*manual download*)"))
        lines.append(f"- SHA-256: {e.sha256 or 'none'} ({_cell(e.hash_source)})")
        lines.append(f"- format: {e.fmt}: {_cell(FORMATS[e.fmt])}")
        if e.legacy_patch_merging:
            lines.append("- trained before MONAI 1.5: loaded with the legacy Swin-UNETR patch merging")
        lines.append(f"- source: {e.source}; license: {e.license}")
        for m in e.metrics:
            lines.append(f"- published {m.name}: {m.value} ({_cell(m.protocol)})")
        if e.notes:
            lines.append(f"- notes: {_cell(e.notes)}")
    return "\n".join(lines) + "\n"
