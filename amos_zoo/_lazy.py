"""Lazy package faces: ``from amos_zoo import create_model`` imports only what that name needs."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, modules: dict[str, tuple[str, ...]]
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``__all__``, ``__getattr__`` and ``__dir__`` for a package whose public names live in submodules
    (``{module: names}``); a name's module is imported on first use."""
    names = {name: module for module, exported in modules.items() for name in exported}

    def getattr_(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(names[name])
        value = getattr(module, name)
        importlib.import_module(package).__dict__[name] = value
        return value

    def dir_() -> list[str]:
        return sorted(names)

    return sorted(names), getattr_, dir_
