"""Quiet output: third-party warnings and tips that are not the user's business, filtered by name.

Each entry names the library and the message it filters, so nothing else is silenced; ``amos-zoo --verbose``
(or ``AMOS_ZOO_VERBOSE=1``) shows everything.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

__all__ = ["quiet_third_party", "quiet_warnings", "NOISE", "help_formatter"]

#: (kind, module or logger, message regex, why it is noise)
NOISE: list[tuple[str, str, str, str]] = [
    (
        "log",
        "monai.data.nvimgcodec_pydicom_plugin",
        r"nvImageCodec is not available",
        "MONAI 1.6 probes a GPU JPEG decoder for DICOM on import; pydicom's own decoders are used instead",
    ),
    (
        "warning",
        "monai.data.image_reader",
        r"nvImageCodec decoder plugin did not register",
        "the same probe, reported a second time as a warning",
    ),
    (
        "warning",
        "monai.utils.deprecate_utils",
        r"Orientationd?\.__init__:labels",
        "MONAI 1.6 announces a new default for Orientation(labels=...); for NIfTI/DICOM (RAS/LPS space) both agree",
    ),
    (
        "warning",
        "monai.data.meta_tensor",
        r"Setting affine, but the applied meta contains an affine",
        "MONAI's inverse transforms replace the affine they restore; the restored affine is the one checked in tests",
    ),
    (
        "log",
        "pytorch_lightning.utilities.rank_zero",
        r"Tip: For seamless cloud",
        "Lightning advertises its hosted litlogger / litmodels services on every fit",
    ),
    (
        "warning",
        "pytorch_lightning.trainer.connectors.data_connector",
        r"does not have many workers",
        "the synthetic and CPU runs use num_workers from the config on purpose",
    ),
    (
        "warning",
        "pytorch_lightning.utilities._pytree",
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        "Lightning 2.6 calls a torch pytree API that torch 2.14 deprecates; nothing for a user to change",
    ),
    (
        "warning",
        "pytorch_lightning.cli",
        r"LightningCLI's args parameter is intended to run from within Python",
        "amos-zoo quickstart / reproduce compose the fit arguments and pass them on purpose",
    ),
    (
        "warning",
        "pytorch_lightning.trainer.connectors.logger_connector.result",
        r"It is recommended to use `self.log\('val/",
        "amos-zoo gathers every validation case's metrics from all processes (by case id) before logging, so every "
        "rank logs the same value; sync_dist would only average equal numbers",
    ),
    (
        "warning",
        "pytorch_lightning.utilities.model_summary.model_summary",
        r"Precision bf16-mixed is not supported by the model summary",
        "Lightning's summary sizes parameters as fp32 under bf16-mixed (the quickstart card's CPU precision); the "
        "parameters are fp32 under autocast, so the size it prints is right",
    ),
    (
        "log",
        "pytorch_lightning.utilities.rank_zero",
        r"^(TPU|HPU) available: False",
        "accelerators this project never uses (the GPU line stays)",
    ),
]


class _DropMessages(logging.Filter):
    def __init__(self, patterns: list[str]) -> None:
        super().__init__()
        import re

        self.patterns = [re.compile(p) for p in patterns]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(p.search(message) for p in self.patterns)


def _verbose() -> bool:
    return os.environ.get("AMOS_ZOO_VERBOSE", "") not in ("", "0")


def _ignore_known_warnings() -> None:
    for kind, _where, message, _why in NOISE:
        if kind == "warning":
            # the message regex is matched from the start; the attributed module varies with stacklevel
            warnings.filterwarnings("ignore", message=".*" + message)


def quiet_third_party(verbose: bool = False) -> None:
    """Filter the known third-party noise (:data:`NOISE`), unless ``verbose`` or ``AMOS_ZOO_VERBOSE`` is set."""
    if verbose or _verbose():
        return
    _ignore_known_warnings()
    by_logger: dict[str, list[str]] = {}
    for kind, where, message, _why in NOISE:
        if kind != "warning":
            by_logger.setdefault(where, []).append(message)
    for name, patterns in by_logger.items():
        logging.getLogger(name).addFilter(_DropMessages(patterns))


def quiet_warnings(func: F) -> F:
    """Run ``func`` (a public Python API call) with the known third-party warnings of :data:`NOISE` filtered, as the
    command line does, and only for the call: the caller's own warning filters are restored afterwards.
    ``AMOS_ZOO_VERBOSE=1`` shows everything."""

    @functools.wraps(func)
    def quietly(*args, **kwargs):
        if _verbose():
            return func(*args, **kwargs)
        with warnings.catch_warnings():
            _ignore_known_warnings()
            return func(*args, **kwargs)

    return quietly  # type: ignore[return-value]


def help_formatter():
    """A jsonargparse help formatter that keeps the line breaks of descriptions and epilogs (the examples)."""
    from jsonargparse import DefaultHelpFormatter

    class KeepLines(DefaultHelpFormatter):
        def _fill_text(self, text: str, width: int, indent: str) -> str:
            return "".join(indent + line for line in text.splitlines(keepends=True))

    return KeepLines
