"""Training with Lightning: the one LightningModule, callbacks, and the LightningCLI of fit / validate / test."""

from amos_zoo._lazy import lazy_exports

_NAMES = {
    "SegmentationModule": "amos_zoo.train.module",
    "PreemptionCheckpoint": "amos_zoo.train.callbacks",
    "AmosLightningCLI": "amos_zoo.train.cli",
    "run_lightning_cli": "amos_zoo.train.cli",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
