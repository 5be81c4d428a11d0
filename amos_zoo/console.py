"""Quiet output: third-party warnings and tips that are not the user's business, filtered by name.

Each entry names the library and the message it filters, so nothing else is silenced; ``amos-zoo --verbose``
(or ``AMOS_ZOO_VERBOSE=1``) shows everything.
"""

from __future__ import annotations

import logging
import os
import warnings

__all__ = ["quiet_third_party", "NOISE", "help_formatter"]

#: (kind, module or logger, message regex, why it is noise)
NOISE: list[tuple[str, str, str, str]] = []


class _DropMessages(logging.Filter):
    def __init__(self, patterns: list[str]) -> None:
        super().__init__()
        import re

        self.patterns = [re.compile(p) for p in patterns]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(p.search(message) for p in self.patterns)


def quiet_third_party(verbose: bool = False) -> None:
    """Filter the known third-party noise (:data:`NOISE`), unless ``verbose`` or ``AMOS_ZOO_VERBOSE`` is set."""
    if verbose or os.environ.get("AMOS_ZOO_VERBOSE", "") not in ("", "0"):
        return
    by_logger: dict[str, list[str]] = {}
    for kind, where, message, _why in NOISE:
        if kind == "warning":
            warnings.filterwarnings("ignore", message=message, module=where)
        else:
            by_logger.setdefault(where, []).append(message)
    for name, patterns in by_logger.items():
        logging.getLogger(name).addFilter(_DropMessages(patterns))


def help_formatter():
    """A jsonargparse help formatter that keeps the line breaks of descriptions and epilogs (the examples)."""
    from jsonargparse import DefaultHelpFormatter

    class KeepLines(DefaultHelpFormatter):
        def _fill_text(self, text: str, width: int, indent: str) -> str:
            return "".join(indent + line for line in text.splitlines(keepends=True))

    return KeepLines
