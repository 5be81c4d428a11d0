"""Lazy package faces: ``from amos_zoo import create_model`` imports only what that name needs."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, names: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a package whose public ``names`` live in submodules (name -> module)."""

    def getattr_(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(names[name])
        value = getattr(module, name)
        importlib.import_module(package).__dict__[name] = value
        return value

    def dir_() -> list[str]:
        return sorted(names)

    return getattr_, dir_
