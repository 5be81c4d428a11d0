"""The one rule of amos-zoo's registries (models, weights): a name is registered once."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def register_unique(table: dict[str, T], name: str, value: T, kind: str) -> T:
    """Put ``value`` under ``name`` in ``table``; a second registration of the name is an error."""
    if name in table:
        raise ValueError(f"{kind} {name!r} is already registered")
    table[name] = value
    return value
