"""Swin-UNETR's patch merging as it computed before MONAI 1.5.

Up to MONAI 1.4, ``PatchMerging`` concatenated the 2x2x2 neighbours in an order that took two of them twice
((0,1,0) and (0,0,1)) and two never ((1,1,0) and (0,1,1)); MONAI 1.5 fixed the indices (MONAI issue #8284,
PR #8285). Checkpoints trained before the fix (the research-contributions BTCV models, the self-supervised
encoders) load into the new code without an error but compute something else. Passing this module as
``downsample`` restores what they computed when they were published.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.nets.swin_unetr import PatchMerging

__all__ = ["LegacyPatchMerging", "LEGACY_MERGING_OFFSETS"]

#: (d, h, w) offsets of the eight slices in the order MONAI <= 1.4 concatenated them (duplicates included).
LEGACY_MERGING_OFFSETS = ((0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 1), (0, 1, 0), (0, 0, 1), (1, 1, 1))


class LegacyPatchMerging(PatchMerging):
    """MONAI <= 1.4 3D patch merging (same parameters as :class:`monai.networks.nets.swin_unetr.PatchMerging`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            return super().forward(x)  # the 2D path did not change
        _, d, h, w, _ = x.shape
        if d % 2 or h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2, 0, d % 2))
        parts = [x[:, i::2, j::2, k::2, :] for i, j, k in LEGACY_MERGING_OFFSETS]
        return self.reduction(self.norm(torch.cat(parts, -1)))
