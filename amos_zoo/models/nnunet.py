"""nnU-Net v2's network: ``dynamic_network_architectures``' PlainConvUNet (the package nnunetv2 builds it from),
configured from a plan's ``architecture`` as nnunetv2's ``get_network_from_plans`` configures it.

MONAI's DynUNet cannot be made equal (its blocks' convolutions have no bias; nnU-Net plans ``conv_bias=True`` and
InstanceNorm with ``affine=True``), so the nnunet-v2 protocol trains nnU-Net's own class. amos-zoo keeps images in
(x, y, z) order where nnU-Net uses (z, y, x) (transposed by the plan's ``transpose_forward``); a plan converted by
:func:`amos_zoo.data.plan.to_xyz` gives the same network on amos-zoo's axes, and :func:`weights_to_xyz` moves an
nnU-Net checkpoint's weights onto them (tests/test_nnunet_network.py: same parameter count, same logits).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "NNUNET_CLASS",
    "ARCH_KEYS",
    "nnunet_architecture",
    "plain_conv_unet",
    "weights_to_xyz",
    "default_architecture",
]

#: the network class nnU-Net v2's default planner writes into its plans
NNUNET_CLASS = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
#: what a plan's class-valued arguments must name (nnunetv2's ExperimentPlanner, 3D)
_EXPECTED_IMPORTS = {
    "conv_op": "torch.nn.modules.conv.Conv3d",
    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
    "dropout_op": None,
    "nonlin": "torch.nn.LeakyReLU",
}
ARCH_KEYS = (
    "n_stages",
    "features_per_stage",
    "kernel_sizes",
    "strides",
    "n_conv_per_stage",
    "n_conv_per_stage_decoder",
    "conv_bias",
    "norm_op_kwargs",
    "nonlin_kwargs",
)


def default_architecture() -> dict[str, Any]:
    """The registry's default: the 3d_fullres topology nnunetv2 plans for an AMOS-like CT fingerprint (0.6-0.9 mm
    in-plane, mostly 5 mm slices, some 2.5 and 1.25 mm; 512 x 512 in-plane; tests/test_plan.py plans it with
    nnunetv2), in (x, y, z) order. A run plans its own from its dataset."""
    return {
        "n_stages": 6,
        "features_per_stage": [32, 64, 128, 256, 320, 320],
        "kernel_sizes": [[3, 3, 1], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
        "strides": [[1, 1, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 1]],
        "n_conv_per_stage": [2] * 6,
        "n_conv_per_stage_decoder": [2] * 5,
        "conv_bias": True,
        "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "nonlin_kwargs": {"inplace": True},
    }


def nnunet_architecture(arch: dict[str, Any]) -> dict[str, Any]:
    """A plan's ``architecture`` entry as nnU-Net v2's ExperimentPlanner writes it (class name, ``arch_kwargs`` with
    the classes named, which of them to import) from PlainConvUNet's numeric arguments."""
    kwargs = {k: arch[k] for k in ARCH_KEYS if k in arch}
    ordered = {
        "n_stages": kwargs["n_stages"],
        "features_per_stage": kwargs["features_per_stage"],
        "conv_op": _EXPECTED_IMPORTS["conv_op"],
        "kernel_sizes": kwargs["kernel_sizes"],
        "strides": kwargs["strides"],
        "n_conv_per_stage": kwargs["n_conv_per_stage"],
        "n_conv_per_stage_decoder": kwargs["n_conv_per_stage_decoder"],
        "conv_bias": kwargs["conv_bias"],
        "norm_op": _EXPECTED_IMPORTS["norm_op"],
        "norm_op_kwargs": kwargs["norm_op_kwargs"],
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": _EXPECTED_IMPORTS["nonlin"],
        "nonlin_kwargs": kwargs["nonlin_kwargs"],
    }
    return {
        "network_class_name": NNUNET_CLASS,
        "arch_kwargs": ordered,
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def _check_imports(arch: dict[str, Any]) -> None:
    for key, expected in _EXPECTED_IMPORTS.items():
        if key in arch and arch[key] is not None and not isinstance(arch[key], str):
            arch[key] = f"{arch[key].__module__}.{arch[key].__name__}"
        if key in arch and arch[key] != expected:
            raise ValueError(
                f"nnU-Net plan: {key} is {arch[key]!r}; amos-zoo builds nnU-Net's default 3D PlainConvUNet "
                f"({key} {expected!r})"
            )
    if arch.get("dropout_op_kwargs"):
        raise ValueError("nnU-Net plan: dropout is not part of nnU-Net's default PlainConvUNet")


def plain_conv_unet(
    arch: dict[str, Any],
    in_channels: int,
    num_classes: int,
    deep_supervision: bool = False,
    initialize: bool = True,
) -> nn.Module:
    """nnunetv2's ``get_network_from_plans`` for a PlainConvUNet plan (``arch``: the plan's ``arch_kwargs``, or
    amos-zoo's (x, y, z) version of them): 3D convolutions, InstanceNorm3d, LeakyReLU, and nnU-Net's He
    initialisation (``InitWeights_He(1e-2)``) unless ``initialize`` is False."""
    import torch
    from torch import nn

    arch = dict(arch)
    _check_imports(arch)
    unknown = sorted(set(arch) - set(ARCH_KEYS) - set(_EXPECTED_IMPORTS) - {"dropout_op_kwargs", "deep_supervision"})
    if unknown:
        raise ValueError(f"nnU-Net plan: unknown PlainConvUNet arguments {unknown}")
    deep_supervision = bool(arch.pop("deep_supervision", deep_supervision))
    kwargs = {k: arch[k] for k in ARCH_KEYS if k in arch}
    if any(len(k) != 3 for k in kwargs["kernel_sizes"]):
        raise ValueError("amos-zoo builds nnU-Net's 3D network; this plan's kernels are not 3D")
    net = _nnunet_class()(
        input_channels=in_channels,
        num_classes=num_classes,
        conv_op=nn.Conv3d,
        norm_op=nn.InstanceNorm3d,
        dropout_op=None,
        dropout_op_kwargs=None,
        nonlin=nn.LeakyReLU,
        deep_supervision=deep_supervision,
        **{k: _plain(v) for k, v in kwargs.items()},
    )
    if initialize and not any(p.is_meta for p in net.parameters()):
        with torch.no_grad():
            net.apply(net.initialize)
    return net


def _plain(value: Any) -> Any:
    """JSON lists (and the model card's tuples) as nnU-Net's plans give them: lists."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return dict(value)
    return value


def _plain_conv_unet_class():
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    return PlainConvUNet


def __getattr__(name: str):
    """``NnUNetPlainConvUNet`` is made on first use, so that importing this module imports no torch."""
    if name == "NnUNetPlainConvUNet":
        return _nnunet_class()
    raise AttributeError(name)


_CLASS: Any = None


def _nnunet_class():
    global _CLASS
    if _CLASS is None:
        base = _plain_conv_unet_class()

        class NnUNetPlainConvUNet(base):
            """nnU-Net's PlainConvUNet; with deep supervision it returns its outputs (full resolution first) only
            while training, and the full-resolution logits otherwise (nnU-Net switches
            ``decoder.deep_supervision`` off for validation and inference)."""

            def forward(self, x):
                deep = self.decoder.deep_supervision
                self.decoder.deep_supervision = deep and self.training
                try:
                    return super().forward(x)
                finally:
                    self.decoder.deep_supervision = deep

        NnUNetPlainConvUNet.__module__ = __name__
        _CLASS = NnUNetPlainConvUNet
    return _CLASS


def _nnunet_axes(transpose_forward: Sequence[int]) -> list[int]:
    """For each of nnU-Net's network axes, the amos-zoo (x, y, z) axis it is (``transpose_forward`` maps nnU-Net's
    axes to the image's (z, y, x) axes)."""
    return [2 - int(t) for t in transpose_forward]


def weights_to_xyz(state: dict[str, torch.Tensor], transpose_forward: Sequence[int] = (0, 1, 2)) -> dict:
    """An nnU-Net checkpoint's ``network_weights`` on amos-zoo's (x, y, z) axes: every 5-D convolution and
    transposed-convolution kernel has its spatial dimensions reordered (other tensors are unchanged)."""
    axes = _nnunet_axes(transpose_forward)  # nnU-Net spatial dim i holds amos-zoo axis axes[i]
    spatial = [2 + axes.index(a) for a in range(3)]  # amos-zoo axis a comes from nnU-Net dim spatial[a]
    out = {}
    for key, value in state.items():
        out[key] = value.permute(0, 1, *spatial).contiguous() if value.ndim == 5 else value
    return out
