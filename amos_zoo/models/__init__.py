"""Networks: the model registry (MONAI's UNet, UNETR, Swin-UNETR, VNet, DynUNet; a timm 2D U-Net)."""

from amos_zoo.models.registry import (
    MODEL_REGISTRY,
    ModelSpec,
    build_network,
    check_patch_size,
    count_parameters,
    create_model,
    list_models,
)

__all__ = [
    "MODEL_REGISTRY",
    "ModelSpec",
    "build_network",
    "check_patch_size",
    "count_parameters",
    "create_model",
    "list_models",
]
