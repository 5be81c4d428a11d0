"""The amos-zoo command line."""

from amos_zoo.cli.main import main

__all__ = ["main"]
