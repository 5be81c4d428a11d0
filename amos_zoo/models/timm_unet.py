"""A 2D U-Net whose encoder is any timm backbone (``features_only``): ImageNet-style encoders for 2D work.

The decoder upsamples the deepest feature map stage by stage, concatenating the encoder's skip features,
with MONAI convolution blocks (conv, instance norm, LeakyReLU); a last upsampling returns to the input
resolution. ``pretrained=True`` loads timm's ImageNet weights (downloaded by timm; off by default).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn

__all__ = ["TimmUNet"]


class TimmUNet(nn.Module):
    """U-Net decoder over a timm encoder.

    Args:
        in_channels: input channels (timm adapts the first convolution, also of pretrained weights).
        out_channels: classes including background.
        encoder: timm model name (``timm.list_models()``), e.g. ``resnet18``, ``resnet34``, ``efficientnet_b0``.
        pretrained: load timm's pretrained encoder weights.
        decoder_channels: channels of the decoder stages, deepest first (one per encoder stage).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        encoder: str = "resnet18",
        pretrained: bool = False,
        decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16),
    ) -> None:
        super().__init__()
        import timm

        self.encoder = timm.create_model(encoder, features_only=True, pretrained=pretrained, in_chans=in_channels)
        channels = list(self.encoder.feature_info.channels())
        self.reductions = list(self.encoder.feature_info.reduction())
        if len(decoder_channels) < len(channels):
            raise ValueError(f"{encoder} has {len(channels)} stages; give as many decoder_channels")
        blocks = []
        previous = channels[-1]
        skips = channels[:-1][::-1] + [0]  # the skip of each decoder stage, deepest first; none at the end
        for skip, width in zip(skips, decoder_channels):
            blocks.append(
                nn.Sequential(
                    Convolution(2, previous + skip, width, kernel_size=3, norm="instance", act="leakyrelu"),
                    Convolution(2, width, width, kernel_size=3, norm="instance", act="leakyrelu"),
                )
            )
            previous = width
        self.decoder = nn.ModuleList(blocks)
        self.head = nn.Conv2d(previous, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        y = features[-1]
        skips = features[:-1][::-1]
        for i, block in enumerate(self.decoder):
            if i < len(skips):
                y = F.interpolate(y, size=skips[i].shape[2:], mode="bilinear", align_corners=False)
                y = torch.cat([y, skips[i]], 1)
            else:
                y = F.interpolate(y, size=x.shape[2:], mode="bilinear", align_corners=False)
            y = block(y)
        return self.head(y)
