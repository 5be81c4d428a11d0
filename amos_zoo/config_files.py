"""The configs shipped with the package (``configs/`` in a source checkout): where they are and how to name one.

At the bottom of the package (no amos-zoo imports), so that the command line (:mod:`amos_zoo.train.cli`) and the
experiment path (:mod:`amos_zoo.experiments.run`) both read it without importing each other.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["config_root", "config_file"]


def config_root() -> Path:
    """The folder of the configs shipped with the package (``configs/`` in a source checkout)."""
    return Path(str(resources.files("amos_zoo").joinpath("configs")))


def config_file(relative: str) -> Path:
    """A shipped config by its path under ``configs/`` (``base/gpu.yaml``); a clear error when there is none."""
    path = config_root() / relative
    if not path.is_file():
        available = sorted(str(p.relative_to(config_root())) for p in config_root().rglob("*.yaml"))
        raise FileNotFoundError(f"no shipped config {relative!r}; available: {', '.join(available)}")
    return path
