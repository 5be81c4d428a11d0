"""The model registry builds MONAI's networks with the published parameter counts."""

from __future__ import annotations

import pytest
import torch

from amos_zoo.models.registry import MODEL_REGISTRY, check_patch_size, count_parameters, create_model

#: parameter counts a paper publishes, in millions: 3D UX-Net (Lee et al., ICLR 2023), Table 1's #Params column,
#: which counts MONAI's UNETR and SwinUNETR at the BTCV recipe's settings (1 input channel, 14 classes)
PAPER_COUNTS = {"unetr": 92.8, "swin_unetr": 62.2}


@pytest.mark.parametrize("name", sorted(PAPER_COUNTS))
def test_parameter_counts_match_the_paper(name):
    spec = MODEL_REGISTRY[name]
    net = create_model(name, **spec.published_params_setting)
    millions = count_parameters(net) / 1e6
    assert spec.published_params == PAPER_COUNTS[name]
    assert millions == pytest.approx(PAPER_COUNTS[name], rel=0.005), f"{name}: {millions:.2f} M"


def test_unet_and_vnet_counts_are_monais_own():
    """No paper publishes a count for these two configurations: the listed 19.2 M and 45.7 M are MONAI's own
    networks' counts, checked here against the networks built directly from MONAI (not through the registry)."""
    from monai.networks.nets import UNet, VNet

    unet = UNet(3, 1, 16, channels=(32, 64, 128, 256, 512), strides=(2, 2, 2, 2), num_res_units=2, norm="instance")
    vnet = VNet(3, 1, 16, dropout_prob_down=0.5, dropout_prob_up=(0.5, 0.5))
    for name, reference in (("unet", unet), ("vnet", vnet)):
        spec = MODEL_REGISTRY[name]
        ours = count_parameters(create_model(name, **spec.published_params_setting))
        assert ours == count_parameters(reference) == spec.params, name
        assert round(ours / 1e6, 1) == spec.published_params, name


def test_swin_unetr_feature_sizes_from_recipe_table():
    # research-contributions: feature 24 -> 15.7 M, feature 12 -> 4.0 M parameters
    assert count_parameters(create_model("swin_unetr", out_channels=14, feature_size=24)) / 1e6 == pytest.approx(
        15.7, rel=0.01
    )
    assert count_parameters(create_model("swin_unetr", out_channels=14, feature_size=12)) / 1e6 == pytest.approx(
        4.0, rel=0.02
    )


@pytest.mark.parametrize(
    "name, kwargs, shape",
    [
        ("unet", {"channels": (8, 16, 32), "strides": (2, 2), "num_res_units": 1}, (32, 32, 16)),
        (
            "unetr",
            {"img_size": (32, 32, 32), "hidden_size": 48, "mlp_dim": 96, "num_heads": 4, "feature_size": 8},
            (32, 32, 32),
        ),
        ("swin_unetr", {"feature_size": 12}, (64, 64, 64)),
        ("vnet", {}, (32, 32, 32)),
        ("dynunet", {"filters": (8, 16, 32, 64, 64, 64)}, (64, 64, 32)),
    ],
)
def test_forward_shapes(name, kwargs, shape):
    net = create_model(name, in_channels=1, out_channels=16, **kwargs).eval()
    with torch.no_grad():
        out = net(torch.zeros(1, 1, *shape))
    assert out.shape == (1, 16, *shape)


def test_input_constraints_are_clear():
    with pytest.raises(ValueError, match="divisible by 32"):
        check_patch_size("swin_unetr", (96, 96, 48 + 8))
    with pytest.raises(ValueError, match="must equal img_size"):
        check_patch_size("unetr", (64, 64, 64))
    check_patch_size("unetr", (96, 96, 96))
    with pytest.raises(ValueError, match="16 % in_channels"):
        create_model("vnet", in_channels=3)
    with pytest.raises(ValueError, match="3D only"):
        create_model("vnet", spatial_dims=2)
    with pytest.raises(KeyError, match="registered: "):
        create_model("resnet")
