"""SAM-Med2D's Adapter: a channel gate and a spatial bottleneck added to every ViT block of SAM's image encoder.

The structure and the state-dict key names follow OpenGVLab/SAM-Med2D@bfd2b93
``segment_anything/modeling/image_encoder.py`` (``Adapter_Layer`` and ``Block``): each block gets a module named
``Adapter`` with ``norm`` (LayerNorm), ``channel`` (Linear C -> C/4, ReLU, Linear C/4 -> C, Sigmoid; no biases) and
``spatial`` (Conv 3x3 stride 2, ReLU, ConvTranspose 4x4 stride 2, ReLU; no biases), and the block computes
``x + mlp(norm2(x)) + Adapter(norm2(x))`` after attention, so checkpoints load key for key. Everything else is
the ``segment-anything`` package's :class:`Block`.
"""

from __future__ import annotations

import torch
from segment_anything.modeling.image_encoder import Block
from torch import nn

__all__ = ["Adapter", "AdapterBlock"]


class Adapter(nn.Module):
    """SAM-Med2D's ``Adapter_Layer`` (input and output channels-last: B, H, W, C)."""

    def __init__(self, embed_dim: int, mlp_ratio: float = 0.25, skip_connect: bool = True) -> None:
        super().__init__()
        hidden = int(embed_dim * mlp_ratio)
        self.skip_connect = skip_connect
        self.norm = nn.LayerNorm(embed_dim)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.channel = nn.Sequential(
            nn.Linear(embed_dim, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, embed_dim, bias=False), nn.Sigmoid()
        )
        self.spatial = nn.Sequential(
            nn.Conv2d(embed_dim, embed_dim, kernel_size=3, stride=2, padding=1, bias=False),
            nn.ReLU(),
            nn.ConvTranspose2d(embed_dim, embed_dim, kernel_size=4, stride=2, padding=1, bias=False),
            nn.ReLU(),
        )
        for m in self.modules():  # as the source initialises them
            if isinstance(m, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2)
        b, c = x.shape[:2]
        gated = self.channel(self.avg_pool(x).view(b, c)).view(b, c, 1, 1) * x
        spatial = self.spatial(gated)
        x = x + spatial if self.skip_connect else spatial
        return self.norm(x.permute(0, 2, 3, 1))


class AdapterBlock(Block):
    """A ``segment-anything`` ViT block with SAM-Med2D's adapter beside its MLP."""

    def __init__(self, dim: int, *args, **kwargs) -> None:
        super().__init__(dim, *args, **kwargs)
        self.Adapter = Adapter(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from segment_anything.modeling.image_encoder import window_partition, window_unpartition

        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            h, w = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, self.window_size)
        x = self.attn(x)
        if self.window_size > 0:
            x = window_unpartition(x, self.window_size, pad_hw, (h, w))
        x = shortcut + x
        x_norm = self.norm2(x)
        return x + self.mlp(x_norm) + self.Adapter(x_norm)
