"""The weights loaders' errors, at the bottom of the weights package so that every reader can raise them."""

from __future__ import annotations

__all__ = ["WeightsLoadError"]


class WeightsLoadError(RuntimeError):
    """A load that would leave the model without the weights it was meant to get."""
