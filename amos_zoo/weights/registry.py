"""The weights registry: one typed entry per public checkpoint, the single source of truth for weights.md.

Each entry carries a :class:`~amos_zoo.card.ModelCard` (the network and its arguments, input channels, label map,
preprocessing recipe, window, patch-merging variant), what it was trained for, where it comes from (URL, the
SHA-256 or MD5 a source states, with where it states it, license, citation), its file format (one of
:data:`amos_zoo.weights.formats.FORMATS`) and its published metrics with their protocol.
``render_markdown()`` writes weights.md from it (``amos-zoo weights --markdown``); a test keeps them equal.
Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from amos_zoo.card import ModelCard
from amos_zoo.data.recipes import get_recipe

__all__ = [
    "Metric",
    "WeightEntry",
    "WEIGHTS",
    "register_weights",
    "get_weights",
    "list_weights",
    "render_markdown",
    "BTCV_LABELS",
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
        name: registry name (``amos_zoo.load_weights(name)``, ``amos-zoo predict --weights name``).
        card: the model card of the network the file fits (labels None: the file holds only an encoder).
        task: what the network was trained for.
        url: where the file is published; ``direct_download`` False when it is a web page that must be
            downloaded by hand and passed as a path.
        sha256 / md5: the digest a source states (SHA-256 preferred; MD5 where the source states only that);
            a file with neither loads only with ``trust=True``.
        hash_source: where the digest is stated, or why there is none.
        fmt: file format (a key of :data:`amos_zoo.weights.formats.FORMATS`).
    """

    name: str
    card: ModelCard
    task: str
    url: str
    sha256: str | None
    hash_source: str
    license: str
    source: str
    fmt: str
    md5: str | None = None
    size_bytes: int | None = None
    direct_download: bool = True
    metrics: tuple[Metric, ...] = field(default_factory=tuple)
    notes: str = ""

    def __post_init__(self) -> None:
        from amos_zoo.weights.formats import FORMATS

        if self.fmt not in FORMATS:
            raise ValueError(f"{self.name}: unknown format {self.fmt!r}; known: {', '.join(FORMATS)}")
        for algo, digest, length in (("sha256", self.sha256, 64), ("md5", self.md5, 32)):
            if digest is not None and (len(digest) != length or set(digest) - set("0123456789abcdef")):
                raise ValueError(f"{self.name}: {algo} must be {length} lowercase hex digits")

    @property
    def arch(self) -> str:
        """Model registry name of the network."""
        return self.card.arch

    @property
    def encoder_only(self) -> bool:
        """The file holds only an encoder (no label map)."""
        return self.card.labels is None

    @property
    def num_classes(self) -> int | None:
        """Output classes (None for an encoder)."""
        return self.card.num_classes

    @property
    def verification(self) -> str:
        """How a downloaded file is checked: ``sha256``, ``md5`` or ``none``."""
        return "sha256" if self.sha256 else "md5" if self.md5 else "none"


WEIGHTS: dict[str, WeightEntry] = {}


def register_weights(entry: WeightEntry) -> WeightEntry:
    """Add an entry (names are unique)."""
    from amos_zoo._registry import register_unique

    return register_unique(WEIGHTS, entry.name, entry, "weights")


def get_weights(name: str) -> WeightEntry:
    """The entry called ``name`` (``amos-zoo weights`` lists them)."""
    if name not in WEIGHTS:
        raise KeyError(f"unknown weights {name!r}; registered: {', '.join(sorted(WEIGHTS))}")
    return WEIGHTS[name]


def list_weights() -> list[WeightEntry]:
    """All entries, sorted by name."""
    return [WEIGHTS[k] for k in sorted(WEIGHTS)]


_RC = "https://github.com/Project-MONAI/research-contributions"
_RC_COMMIT = "21ed8e57c7256834d4fbaf19579ca25ad3d135ee"  # research-contributions main, 2025-05-09
_ZOO_COMMIT = "dfae206df112837d817e78d3727c9f32b3b52e82"  # model-zoo dev, 2024-10-11
_SWIN48 = {"feature_size": 48, "use_checkpoint": False, "norm_name": "instance"}
_UNETR_BTCV = {
    "feature_size": 16,
    "hidden_size": 768,
    "mlp_dim": 3072,
    "num_heads": 12,
    "proj_type": "perceptron",
    "norm_name": "instance",
    "res_block": True,
    "dropout_rate": 0.0,
}
_BTCV = get_recipe("btcv")


def _card(arch: str, kwargs: dict[str, Any], labels: dict[int, str] | None, recipe=_BTCV, legacy: bool = False):
    return ModelCard(
        arch=arch,
        arch_kwargs=kwargs,
        in_channels=1,
        labels=labels,
        recipe=recipe,
        roi_size=(96, 96, 96),
        sw_batch_size=4,
        sw_overlap=0.5,
        legacy_patch_merging=legacy,
        protocol="btcv",
    )


register_weights(
    WeightEntry(
        name="swin_unetr_btcv",
        card=_card("swin_unetr", _SWIN48, BTCV_LABELS, legacy=True),
        task="BTCV abdominal CT, 13 organs",
        url="https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
        "swin_unetr.base_5000ep_f48_lr2e-4_pretrained.pt",
        sha256=None,
        hash_source=f"not stated by the source (research-contributions@{_RC_COMMIT[:7]} SwinUNETR/BTCV/README.md)",
        license="Apache-2.0 (research-contributions)",
        source=f"Tang et al., CVPR 2022; {_RC}/tree/{_RC_COMMIT}/SwinUNETR/BTCV",
        fmt="research-contributions",
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
        card=_card("unetr", _UNETR_BTCV, BTCV_LABELS),
        task="BTCV abdominal CT, 13 organs",
        url="https://developer.download.nvidia.com/assets/Clara/monai/research/UNETR_model_best_acc.pth",
        sha256=None,
        hash_source=f"not stated by the source (research-contributions@{_RC_COMMIT[:7]} UNETR/BTCV/README.md, "
        "'Finetuning'; the address replaced the Google Drive link, research-contributions #404)",
        license="Apache-2.0 (research-contributions)",
        source=f"Hatamizadeh et al., WACV 2022; {_RC}/tree/{_RC_COMMIT}/UNETR/BTCV",
        fmt="state-dict",
        notes="UNETR_model_best_acc.pth; UNETR/BTCV/test.py loads it with model.load_state_dict(torch.load(path))",
    )
)
register_weights(
    WeightEntry(
        name="swin_unetr_ssl_encoder",
        card=_card("swin_unetr", _SWIN48, None, legacy=True),
        task="self-supervised encoder (5,050 CT volumes); fine-tune for any CT task",
        url="https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/model_swinvit.pt",
        sha256=None,
        hash_source=f"not stated by the source (research-contributions@{_RC_COMMIT[:7]} SwinUNETR/BTCV/README.md)",
        license="Apache-2.0 (research-contributions)",
        source=f"Tang et al., CVPR 2022; {_RC}/tree/{_RC_COMMIT}/SwinUNETR/Pretrain",
        fmt="ssl-swinvit",
        notes="keys 'module.*' mapped as SwinUNETR.load_from does; decoder and head start from scratch",
    )
)
register_weights(
    WeightEntry(
        name="swin_unetr_ssl_disruptive_ae",
        card=_card("swin_unetr", _SWIN48, None, legacy=True),
        task="self-supervised encoder (disruptive autoencoders); fine-tune for any CT task",
        url="https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/ssl_pretrained_weights.pth",
        sha256="c3564f40a6a051d3753a6d8fae5cc8eaf21ce8d82a9a3baf80748d15664055e8",
        hash_source="MONAI tests/testing_data/data_config.json (models.ssl_pretrained_weights, sha256)",
        license="Apache-2.0 (MONAI)",
        source="Valanarasu et al. 2023, arXiv 2307.16896; MONAI filter_swinunetr docstring",
        fmt="ssl-monai-filter",
        notes="keys 'encoder.*' mapped with MONAI's filter_swinunetr; feature size 48 as in MONAI's example",
    )
)
register_weights(
    WeightEntry(
        name="swin_unetr_btcv_bundle",
        card=_card("swin_unetr", _SWIN48, BTCV_LABELS, legacy=True),
        task="BTCV abdominal CT, 13 organs (MONAI model zoo bundle swin_unetr_btcv_segmentation)",
        url="https://developer.download.nvidia.com/assets/Clara/monai/tutorials/model_zoo/"
        "model_swin_unetr_btcv_segmentation_v1.pt",
        sha256=None,
        md5="50dd67a01b28a1d5487fd9ac27e682fb",
        hash_source=f"MD5 stated in model-zoo@{_ZOO_COMMIT[:7]} models/swin_unetr_btcv_segmentation/large_files.yml "
        "(the source states no SHA-256)",
        license="Apache-2.0 (MONAI model zoo)",
        source=f"https://github.com/Project-MONAI/model-zoo/tree/{_ZOO_COMMIT}/models/swin_unetr_btcv_segmentation",
        fmt="state-dict",
        notes="the bundle's models/model.pt; its inference.json passes img_size, which MONAI >= 1.5 rejects",
    )
)
register_weights(
    WeightEntry(
        name="unet_spleen_bundle",
        card=_card(
            "unet",
            {"channels": (16, 32, 64, 128, 256), "strides": (2, 2, 2, 2), "num_res_units": 2, "norm": "batch"},
            {0: "background", 1: "spleen"},
            recipe=get_recipe("btcv", ct_window=(-57.0, 164.0)),
        ).with_(protocol=None),
        task="MSD Task09 spleen CT (MONAI model zoo bundle spleen_ct_segmentation)",
        url="https://developer.download.nvidia.com/assets/Clara/monai/tutorials/model_zoo/"
        "model_spleen_ct_segmentation_v1.pt",
        sha256=None,
        md5="be4fa95e236df91766147c112ee6fafd",
        hash_source=f"MD5 stated in model-zoo@{_ZOO_COMMIT[:7]} models/spleen_ct_segmentation/large_files.yml (the "
        "source states no SHA-256; the address replaced the Google Drive link, model-zoo #646)",
        license="Apache-2.0 (MONAI model zoo)",
        source=f"https://github.com/Project-MONAI/model-zoo/tree/{_ZOO_COMMIT}/models/spleen_ct_segmentation",
        fmt="state-dict",
        metrics=(Metric("mean Dice", 0.96, "bundle metadata.json eval_metrics (MSD Task09 validation)"),),
        notes="inference.json: RAS, 1.5x1.5x2.0 mm, CT window -57..164 HU -> [0, 1], sliding window 96^3",
    )
)


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_markdown() -> str:
    """weights.md, generated from the registry (``amos-zoo weights --markdown > weights.md``)."""
    from amos_zoo.weights.formats import FORMATS

    lines = [
        "# amos-zoo weights",
        "",
        "Generated from `amos_zoo/weights/registry.py` by `amos-zoo weights --markdown`; a test fails when this",
        "file and the registry differ. Load with `amos_zoo.load_weights(NAME)` or `amos-zoo predict --weights NAME`;",
        "fine-tune with `amos-zoo fit ... --model.pretrained NAME`.",
        "",
        "A file is verified against the SHA-256 its source states, or, where the source states only an MD5 (the",
        "MONAI model-zoo bundles), against that MD5 (a weaker check, reported as such). A file whose source states",
        "no digest is not verified: it loads only with `trust=True` (`--trust`), or with a hash you checked",
        "(`--sha256`). Entries marked *manual download* point at a web page; download the file yourself and pass",
        "its path.",
        "",
        "| name | model | task | classes | format | verified by | license |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in list_weights():
        check = {"sha256": f"SHA-256 `{e.sha256[:12]}…`" if e.sha256 else "", "md5": f"MD5 `{(e.md5 or '')[:12]}…`"}
        verified = check.get(e.verification, "not verified")
        classes = "encoder only" if e.encoder_only else str(e.num_classes)
        lines.append(
            f"| `{e.name}` | {e.arch} | {_cell(e.task)} | {classes} | {e.fmt} | {verified} | {_cell(e.license)} |"
        )
    for e in list_weights():
        card = e.card
        lines += ["", f"## `{e.name}`", ""]
        lines.append(f"- model: `{e.arch}` with `{_cell(card.arch_kwargs)}`, {card.in_channels} input channel(s)")
        if card.labels:
            lines.append(f"- labels: {_cell(', '.join(f'{k} {v}' for k, v in sorted(card.labels.items())))}")
        if card.recipe:
            recipe = card.recipe
            lines.append(
                f"- preprocessing: recipe `{recipe.name}`, spacing {recipe.spacing} mm, CT window {recipe.ct_window}; "
                f"sliding window {card.roi_size}, overlap {card.sw_overlap}"
            )
        lines.append(f"- file: {e.url}" + ("" if e.direct_download else " (*manual download*)"))
        if e.sha256:
            lines.append(f"- SHA-256: {e.sha256} ({_cell(e.hash_source)})")
        elif e.md5:
            lines.append(f"- MD5: {e.md5} ({_cell(e.hash_source)})")
        else:
            lines.append(f"- digest: none ({_cell(e.hash_source)})")
        lines.append(f"- format: {e.fmt}: {_cell(FORMATS[e.fmt].DESCRIPTION)}")
        if card.legacy_patch_merging:
            lines.append("- trained before MONAI 1.5: loaded with the legacy Swin-UNETR patch merging")
        lines.append(f"- source: {e.source}; license: {e.license}")
        for m in e.metrics:
            lines.append(f"- published {m.name}: {m.value} ({_cell(m.protocol)})")
        if e.notes:
            lines.append(f"- notes: {_cell(e.notes)}")
    lines += _promptable_markdown()
    return "\n".join(lines) + "\n"


def _promptable_markdown() -> list[str]:
    """weights.md's section on the promptable 2D models' checkpoints (:mod:`amos_zoo.promptable.weights`)."""
    from amos_zoo.promptable.weights import PROMPTABLE_WEIGHTS

    lines = [
        "",
        "## Promptable 2D models (`amos-zoo evaluate-prompts --weights NAME`)",
        "",
        "| name | model | format | verified by | file | license |",
        "|---|---|---|---|---|---|",
    ]
    for p in PROMPTABLE_WEIGHTS.values():
        where = p.url if p.direct_download else f"{p.url} (*manual download*)"
        check = f"SHA-256 `{p.sha256[:12]}…`" if p.sha256 else "not verified"
        lines.append(f"| `{p.name}` | {p.model} | {p.fmt} | {check} | {where} | {_cell(p.license)} |")
    for p in PROMPTABLE_WEIGHTS.values():
        lines += ["", f"### `{p.name}`", "", f"- digest: {p.sha256 or 'none'} ({_cell(p.hash_source)})",
                  f"- source: {_cell(p.source)}"]
        if p.notes:
            lines.append(f"- notes: {_cell(p.notes)}")
    return lines
