"""Sliding-window passes that survive a whole-volume output too large for the device: the windows stay on the
device and the stitched output moves to CPU memory, for that pass and every later one. Shared by the Predictor and
validation in training."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

__all__ = ["with_cpu_stitching_fallback"]


def with_cpu_stitching_fallback(
    owner: object, run: Callable[[str | None], torch.Tensor], device: str | torch.device, what: str
) -> torch.Tensor:
    """``run(None)`` (stitch on the device) until it runs out of memory once, then ``run("cpu")`` for this and every
    later pass; ``owner._stitch_on_cpu`` remembers the switch, and one warning names ``what`` did not fit."""
    if not getattr(owner, "_stitch_on_cpu", False):
        try:
            return run(None)
        except torch.OutOfMemoryError:
            owner._stitch_on_cpu = True
        # outside the except block, so the failed attempt's tensors (held by the traceback) are freed first
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
        warnings.warn(f"out of memory on {device} for {what}; stitching windows on the CPU from now on", stacklevel=3)
    return run("cpu")
