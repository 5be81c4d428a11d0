"""The model registry: one place that knows how to build each baseline from MONAI's networks.

``create_model(name, in_channels=1, out_channels=16, **overrides)`` builds a network with its recipe
hyperparameters; ``build_network(card)`` builds the network a :class:`~amos_zoo.card.ModelCard` describes;
``list_models()`` describes each one from stored facts (no network is built, so listing is instant; a test
recounts every stored parameter count). MONAI's networks are wrapped, never forked. Nothing here imports torch
until a network is built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

    from amos_zoo.card import ModelCard

__all__ = [
    "ModelSpec",
    "MODEL_REGISTRY",
    "register_model",
    "create_model",
    "build_network",
    "list_models",
    "count_parameters",
    "encoder_keys",
    "head_keys",
    "head_class_dims",
    "with_patch_size",
    "network_kwargs",
    "check_patch_size",
]


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture: builder, recipe defaults and input constraints."""

    name: str
    builder: Callable[..., nn.Module]
    defaults: dict[str, Any]
    description: str
    source: str
    #: every spatial side of an input patch must be divisible by this number
    divisor: int = 16
    #: the network accepts only this exact patch size (UNETR's positional embedding), else None
    fixed_size_arg: str | None = None
    published_params: float | None = None  # millions, with the defaults (in 1, out as in the source)
    published_params_setting: dict[str, Any] = field(default_factory=dict)
    #: trainable parameters with ``published_params_setting`` (or the defaults), as counted by amos-zoo; stored so
    #: that listing builds no network (tests/test_models.py recounts it)
    params: int | None = None
    #: which state-dict keys belong to the encoder (contracting path), for fine-tuning and load checks
    is_encoder_key: Callable[[str], bool] = lambda key: False

    def constraints(self, overrides: dict[str, Any] | None = None) -> str:
        """Human-readable input constraints."""
        args = {**self.defaults, **(overrides or {})}
        if self.fixed_size_arg:
            return f"patch must equal img_size={args.get(self.fixed_size_arg)} (sides divisible by 16)"
        return f"patch sides divisible by {self.divisor}"


MODEL_REGISTRY: dict[str, ModelSpec] = {}


def _nnunet_default_architecture() -> dict[str, Any]:
    from amos_zoo.models.nnunet import default_architecture

    return default_architecture()


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add an architecture to the registry (names are unique)."""
    from amos_zoo._registry import register_unique

    return register_unique(MODEL_REGISTRY, spec.name, spec, "model")


def _unet(in_channels: int, out_channels: int, spatial_dims: int = 3, **kw) -> nn.Module:
    from monai.networks.nets import UNet

    kw.setdefault("channels", (32, 64, 128, 256, 512))
    kw.setdefault("strides", (2,) * (len(kw["channels"]) - 1))
    return UNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **kw)


def _unetr(in_channels: int, out_channels: int, spatial_dims: int = 3, **kw) -> nn.Module:
    from monai.networks.nets import UNETR

    net = UNETR(in_channels=in_channels, out_channels=out_channels, spatial_dims=spatial_dims, **kw)
    # MONAI >= 1.4 builds a LayerNorm per transformer block for cross-attention that UNETR never uses
    # (vit.blocks.N.norm_cross_attn): frozen, so that DDP (which refuses parameters without gradients) trains UNETR.
    # The tensors stay in the state dict, so MONAI's checkpoints load unchanged.
    for block in net.vit.blocks:
        if not getattr(block, "with_cross_attention", False) and hasattr(block, "norm_cross_attn"):
            block.norm_cross_attn.requires_grad_(False)
    return net


def _swin_unetr(in_channels: int, out_channels: int, spatial_dims: int = 3, **kw) -> nn.Module:
    from monai.networks.nets import SwinUNETR

    kw.pop("img_size", None)  # MONAI >= 1.5 no longer takes img_size; sides must be divisible by 32
    return SwinUNETR(in_channels=in_channels, out_channels=out_channels, spatial_dims=spatial_dims, **kw)


def _vnet(in_channels: int, out_channels: int, spatial_dims: int = 3, **kw) -> nn.Module:
    from monai.networks.nets import VNet

    if spatial_dims != 3:
        raise ValueError("VNet is 3D only in MONAI (its blocks are 3D); use unet, unetr or swin_unetr for 2D")
    if 16 % in_channels != 0:
        raise ValueError(f"MONAI's VNet needs 16 % in_channels == 0; got in_channels={in_channels}")
    return VNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, **kw)


def _timm_unet(in_channels: int, out_channels: int, spatial_dims: int = 2, **kw) -> nn.Module:
    if spatial_dims != 2:
        raise ValueError("timm_unet is 2D only (timm encoders are 2D); use unet, unetr or swin_unetr for 3D")
    from amos_zoo.models.timm_unet import TimmUNet

    return TimmUNet(in_channels, out_channels, **kw)


def _dynunet(in_channels: int, out_channels: int, spatial_dims: int = 3, **kw) -> nn.Module:
    from monai.networks.nets import DynUNet

    kernels = kw.pop("kernel_size", [[3, 3, 3]] * 6)
    strides = kw.pop("strides", [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 1]])
    kw.setdefault("upsample_kernel_size", strides[1:])
    return DynUNet(spatial_dims, in_channels, out_channels, kernels, strides, **kw)


def _nnunet(in_channels: int, out_channels: int, spatial_dims: int = 3, **kw) -> nn.Module:
    from amos_zoo.models.nnunet import plain_conv_unet

    if spatial_dims != 3:
        raise ValueError("nnunet is nnU-Net's 3D PlainConvUNet; use unet or timm_unet for 2D")
    return plain_conv_unet(kw, in_channels, out_channels)


def _unet_is_encoder(key: str) -> bool:
    """MONAI UNet nests ``Sequential(down, SkipConnection(inner), up)``: index 0 is encoder, 2 decoder, the
    innermost (non-Sequential) submodule is the bottom layer (counted as encoder)."""
    parts = key.split(".")
    i = 1  # parts[0] == "model"
    while i < len(parts):
        token = parts[i]
        if not token.isdigit():
            return True  # the bottom layer's own parameters
        if token == "0":
            return True
        if token == "2":
            return False
        i += 2  # "1", "submodule"
    return False


def _prefixes(*prefixes: str) -> Callable[[str], bool]:
    return lambda key: key.startswith(prefixes)


register_model(
    ModelSpec(
        "unet",
        _unet,
        {"channels": (32, 64, 128, 256, 512), "strides": (2, 2, 2, 2), "num_res_units": 2, "norm": "instance"},
        "MONAI UNet (residual units)",
        "MONAI UNet; channels 32..512, 2 residual units: 19.2 M parameters (REFERENCE.md)",
        divisor=16,
        published_params=19.2,
        published_params_setting={"in_channels": 1, "out_channels": 16},
        params=19_247_953,
        is_encoder_key=_unet_is_encoder,
    )
)
register_model(
    ModelSpec(
        "unetr",
        _unetr,
        {
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
        "MONAI UNETR (ViT-B encoder, perceptron patch embedding)",
        "Hatamizadeh et al. 2022 / research-contributions BTCV recipe: 92.8 M parameters (3D UX-Net table)",
        divisor=16,
        fixed_size_arg="img_size",
        published_params=92.8,
        published_params_setting={"in_channels": 1, "out_channels": 14},
        params=92_802_478,
        is_encoder_key=_prefixes("vit."),
    )
)
register_model(
    ModelSpec(
        "swin_unetr",
        _swin_unetr,
        {"feature_size": 48, "use_checkpoint": False, "norm_name": "instance"},
        "MONAI SwinUNETR (Swin-T encoder)",
        "Hatamizadeh et al. 2022 / research-contributions BTCV recipe: feature 48, 62.2 M parameters",
        divisor=32,
        published_params=62.2,
        published_params_setting={"in_channels": 1, "out_channels": 14},
        params=62_187_296,
        is_encoder_key=_prefixes("swinViT."),
    )
)
register_model(
    ModelSpec(
        "vnet",
        _vnet,
        {"dropout_prob_down": 0.5, "dropout_prob_up": (0.5, 0.5)},
        "MONAI VNet",
        "Milletari et al. 2016, MONAI implementation; 1 in channel, 16 out: 45.7 M parameters",
        divisor=16,
        published_params=45.7,
        published_params_setting={"in_channels": 1, "out_channels": 16},
        params=45_654_192,
        is_encoder_key=_prefixes("in_tr.", "down_tr"),
    )
)
register_model(
    ModelSpec(
        "dynunet",
        _dynunet,
        {"norm_name": "instance", "deep_supervision": False, "res_block": False},
        "MONAI DynUNet configured like nnU-Net 3d_fullres",
        "Isensee et al. 2021 (nnU-Net) 3d_fullres topology: 6 stages, 32..320 filters",
        divisor=32,
        params=30_772_592,
        is_encoder_key=_prefixes("input_block.", "downsamples.", "bottleneck."),
    )
)

register_model(
    ModelSpec(
        "nnunet",
        _nnunet,
        {**_nnunet_default_architecture(), "deep_supervision": False},
        "nnU-Net v2's PlainConvUNet (dynamic_network_architectures), topology from the dataset's plan",
        "Isensee et al. 2021 (nnU-Net) / nnunetv2 2.8.1 get_network_from_plans: InstanceNorm (affine), conv bias; "
        "the default is the plan of an AMOS-like fingerprint (amos-zoo plan makes a dataset's own)",
        divisor=8,  # the default plan pools x and y 5 times (32), z 3 times (8)
        params=30_714_768,
        is_encoder_key=_prefixes("encoder."),
    )
)


register_model(
    ModelSpec(
        "timm_unet",
        _timm_unet,
        {"encoder": "resnet18", "pretrained": False, "spatial_dims": 2},
        "2D U-Net over a timm encoder (features_only), e.g. resnet18/34, efficientnet",
        "amos-zoo: MONAI convolution blocks over timm's feature pyramid; ImageNet weights with pretrained=True",
        divisor=32,
        params=14_321_072,
        is_encoder_key=_prefixes("encoder."),
    )
)


def create_model(name: str, in_channels: int = 1, out_channels: int = 16, **overrides: Any) -> nn.Module:
    """Build a registered model with its recipe defaults, updated by ``overrides``.

    A promptable model's name (``sam_vit_b``, ``medsam_vit_b``, ``sam_med2d_vit_b``: :mod:`amos_zoo.promptable`)
    builds that SAM-family network; it takes no channel arguments.

    Args:
        name: registry name (``amos-zoo models`` lists them).
        in_channels: input channels (1 for AMOS, 4 for MSD BrainTumour...).
        out_channels: classes including background (16 for AMOS).
        **overrides: MONAI constructor arguments replacing the recipe defaults (e.g. ``feature_size=12``).
    """
    if name not in MODEL_REGISTRY:
        from amos_zoo.promptable.models import PROMPTABLE_MODELS, build_promptable

        if name in PROMPTABLE_MODELS:  # a promptable 2D model (SAM family): image + prompt in, mask out
            if (in_channels, out_channels) != (1, 16):
                raise ValueError(f"{name} is a promptable model (RGB image + prompt -> mask): no channel arguments")
            return build_promptable(name, **overrides)
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(sorted(MODEL_REGISTRY))}")
    spec = MODEL_REGISTRY[name]
    args = {**spec.defaults, **overrides}
    return spec.builder(in_channels, out_channels, **args)


def build_network(card: ModelCard, num_classes: int | None = None) -> nn.Module:
    """The network a model card describes (freshly initialised): the one place a card becomes a network.

    ``num_classes`` replaces the card's class count (an encoder-only card has none). A card with
    ``legacy_patch_merging`` gets MONAI < 1.5's Swin-UNETR patch merging (:mod:`amos_zoo.models.swin_legacy`).
    """
    classes = num_classes or card.num_classes
    if classes is None:
        raise ValueError(f"the {card.arch} card is encoder-only: say how many classes the network should output")
    kwargs = network_kwargs(card)
    if card.legacy_patch_merging:
        from amos_zoo.models.swin_legacy import LegacyPatchMerging

        kwargs["downsample"] = LegacyPatchMerging
    return create_model(card.arch, card.in_channels, classes, **kwargs)


def network_kwargs(card: ModelCard) -> dict[str, Any]:
    """The constructor arguments :func:`create_model` receives for a card (UNETR's ``img_size`` = its window); a
    clear error for an architecture this amos-zoo does not know (a card written by another version)."""
    if card.arch not in MODEL_REGISTRY:
        raise ValueError(f"model card: unknown architecture {card.arch!r}; known: {', '.join(MODEL_REGISTRY)}")
    return with_patch_size(card.arch, card.arch_kwargs, card.roi_size)


def with_patch_size(name: str, overrides: dict[str, Any] | None, patch_size) -> dict[str, Any]:
    """Constructor overrides with a fixed-size network's input size (UNETR's ``img_size``) taken from the
    training patch when the overrides do not set it."""
    kwargs = dict(overrides or {})
    spec = MODEL_REGISTRY[name]
    if spec.fixed_size_arg and spec.fixed_size_arg not in kwargs and patch_size is not None:
        kwargs[spec.fixed_size_arg] = tuple(int(s) for s in patch_size)
    return kwargs


def encoder_keys(name: str, model: nn.Module) -> list[str]:
    """State-dict keys of ``model`` (built by ``create_model(name, ...)``) that belong to its encoder."""
    rule = MODEL_REGISTRY[name].is_encoder_key
    return [k for k in model.state_dict() if rule(k)]


def head_keys(name: str, in_channels: int = 1, out_channels: int = 16, **overrides: Any) -> list[str]:
    """State-dict keys whose shapes depend on the number of output classes (the output head).

    Found by building the network on the meta device with ``out_channels`` and ``out_channels + 1`` classes
    and comparing shapes, so it holds for every architecture without a hand-written list.
    """
    return list(head_class_dims(name, in_channels, out_channels, **overrides))


def head_class_dims(name: str, in_channels: int = 1, out_channels: int = 16, **overrides: Any) -> dict[str, tuple]:
    """For each output-head key, the tensor dimensions that index classes (found as in :func:`head_keys`)."""
    import torch

    def shapes(classes: int) -> dict[str, torch.Size]:
        try:
            with torch.device("meta"):  # no memory, no init cost
                state = create_model(name, in_channels, classes, **overrides).state_dict()
        except RuntimeError:  # a constructor that needs real tensors (SwinUNETR calls .item())
            state = create_model(name, in_channels, classes, **overrides).state_dict()
        return {k: v.shape for k, v in state.items()}

    a, b = shapes(out_channels), shapes(out_channels + 1)
    return {k: tuple(d for d in range(len(a[k])) if a[k][d] != b[k][d]) for k in a if a[k] != b[k]}


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (frozen ones included: UNETR's unused cross-attention norms count, as in MONAI's and the
    papers' counts)."""
    return sum(p.numel() for p in model.parameters())


def list_models() -> list[dict[str, Any]]:
    """One row per registered model from stored facts (nothing is built): name, parameter counts (amos-zoo's
    count and the published one, in millions), constraints, description and source."""
    rows = []
    for spec in MODEL_REGISTRY.values():
        rows.append(
            {
                "name": spec.name,
                "params_M": None if spec.params is None else round(spec.params / 1e6, 1),
                "params_published_M": spec.published_params,
                "constraints": spec.constraints(),
                "description": spec.description,
                "source": spec.source,
            }
        )
    return rows


def check_patch_size(name: str, patch_size: tuple[int, ...], overrides: dict[str, Any] | None = None) -> None:
    """Raise a clear error when a patch size does not fit a model's input constraints."""
    spec = MODEL_REGISTRY[name]
    args = {**spec.defaults, **(overrides or {})}
    if spec.fixed_size_arg:
        want = tuple(args[spec.fixed_size_arg])
        if tuple(patch_size) != want[: len(patch_size)]:
            raise ValueError(f"{name}: patch size {tuple(patch_size)} must equal img_size {want}")
    bad = [s for s in patch_size if s % spec.divisor]
    if bad:
        raise ValueError(f"{name}: patch size {tuple(patch_size)} must have sides divisible by {spec.divisor}")
