"""The model card: everything that says what a trained network is and how to feed it.

A :class:`ModelCard` names the architecture and its constructor arguments, the input channels, the label map,
the preprocessing recipe, the sliding window (size, overlap, batch), the Swin-UNETR patch-merging variant and
the protocol it was trained under. Lightning checkpoints, weight-registry entries, exported MONAI bundles and
the TorchScript / ONNX sidecars all carry one (``card.to_dict()``).

The card is a plain record at the bottom of the package: it imports only the recipe record it holds. The code
that builds something from a card lives beside what it builds, one way for each half:

* :func:`amos_zoo.models.registry.build_network` (``build_network(card)``) builds the network, with
  :func:`~amos_zoo.models.registry.network_kwargs` its constructor arguments;
* :func:`amos_zoo.data.transforms.deterministic_transforms` (``deterministic_transforms(card.recipe)``) builds the
  preprocessing, and the bundle's ``inference.json`` is rendered from the same transform list.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from amos_zoo.data.recipes import Recipe

__all__ = ["ModelCard", "CARD_VERSION"]

#: bump when a field changes meaning
CARD_VERSION = 1


def _tuples(value: Any) -> Any:
    """JSON lists back to tuples (constructor arguments such as ``channels`` are tuples in MONAI's signatures)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class ModelCard:
    """What a trained (or pretrained) network is and how to feed it.

    Attributes:
        arch: model registry name (``amos-zoo models``).
        arch_kwargs: constructor arguments beyond the registry's defaults (UNETR's ``img_size`` included).
        in_channels: input channels.
        labels: output channel id -> readable class name (background included); None for an encoder-only file.
        recipe: the preprocessing recipe the network was trained with (None: unknown, e.g. a bare state dict).
        roi_size: sliding-window size (the training patch size).
        sw_batch_size: windows per forward pass.
        sw_overlap: sliding-window overlap.
        sw_mode: window blending (``gaussian`` or ``constant``).
        legacy_patch_merging: Swin-UNETR only: run MONAI < 1.5's patch merging (checkpoints trained before the fix).
        protocol: the training protocol's name (``amos-zoo protocol show NAME``), when known.
        tta: the protocol predicts with mirror test-time augmentation (the predictor's default for this card).
        blend: what mirroring averages and the sliding window blends: ``logits`` (nnU-Net v2, MONAI's
            ``sliding_window_inference``) or ``probabilities`` (softmax per window: nnU-Net v1).
        sw_tiling: where the windows go: ``monai`` (``sliding_window_inference``) or ``nnunet`` (nnU-Net's window
            positions, padding and gaussian: :func:`amos_zoo.infer.predictor.nnunet_sliding_window`).
        interpolation: how the protocol puts labels back on a scan's grid: ``linear`` (class probabilities
            interpolated, then argmax: nnU-Net) or ``nearest`` (the network grid's argmax, nearest label:
            research-contributions, MONAI's Invertd).
    """

    arch: str
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    in_channels: int = 1
    labels: dict[int, str] | None = None
    recipe: Recipe | None = None
    roi_size: tuple[int, ...] = (96, 96, 96)
    sw_batch_size: int = 4
    sw_overlap: float = 0.5
    sw_mode: str = "gaussian"
    legacy_patch_merging: bool = False
    protocol: str | None = None
    tta: bool = False
    interpolation: str = "linear"
    blend: str = "logits"
    sw_tiling: str = "monai"

    def __post_init__(self) -> None:
        if not self.arch:
            raise ValueError("model card: arch names a registered architecture (amos-zoo models)")
        if self.interpolation not in ("linear", "nearest"):
            raise ValueError(f"model card: interpolation must be linear or nearest, got {self.interpolation!r}")
        if self.blend not in ("logits", "probabilities"):
            raise ValueError(f"model card: blend must be logits or probabilities, got {self.blend!r}")
        if self.sw_tiling not in ("monai", "nnunet"):
            raise ValueError(f"model card: sw_tiling must be monai or nnunet, got {self.sw_tiling!r}")
        if self.legacy_patch_merging and self.arch != "swin_unetr":
            raise ValueError(f"model card: legacy patch merging is a Swin-UNETR setting, not {self.arch}'s")
        if self.labels is not None and sorted(self.labels) != list(range(len(self.labels))):
            raise ValueError(f"model card: label ids must be 0..N-1, got {sorted(self.labels)}")
        object.__setattr__(self, "roi_size", tuple(int(s) for s in self.roi_size))
        object.__setattr__(self, "arch_kwargs", _tuples(dict(self.arch_kwargs)))
        if self.labels is not None:
            object.__setattr__(self, "labels", {int(k): str(v) for k, v in self.labels.items()})

    @property
    def num_classes(self) -> int | None:
        """Output classes including background (None for an encoder-only card)."""
        return None if self.labels is None else len(self.labels)

    @property
    def spatial_dims(self) -> int:
        """2 or 3."""
        return int(self.arch_kwargs.get("spatial_dims", len(self.roi_size)))

    def with_(self, **changes: Any) -> ModelCard:
        """A copy with fields replaced."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dictionary (stored in checkpoints, bundles and sidecars)."""
        out = asdict(self)
        out["recipe"] = self.recipe.to_dict() if self.recipe is not None else None
        out["labels"] = None if self.labels is None else {str(k): v for k, v in sorted(self.labels.items())}
        out["card_version"] = CARD_VERSION
        return _jsonable(out)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        version = data.pop("card_version", CARD_VERSION)
        if version > CARD_VERSION:
            raise ValueError(f"model card version {version} is newer than this amos-zoo's ({CARD_VERSION}); upgrade")
        recipe = data.pop("recipe", None)
        if isinstance(recipe, dict):
            recipe = Recipe.from_dict(recipe)
        labels = data.pop("labels", None)
        return cls(
            recipe=recipe,
            labels=None if labels is None else {int(k): v for k, v in labels.items()},
            **{k: v for k, v in data.items() if k in cls.__dataclass_fields__},
        )
