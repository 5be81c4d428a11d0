"""Training with Lightning: the one LightningModule, callbacks, and the LightningCLI of fit / validate / test."""

from amos_zoo._lazy import lazy_exports

_MODULES = {
    "amos_zoo.train.module": ("SegmentationModule",),
    "amos_zoo.train.callbacks": ("PreemptionCheckpoint",),
    "amos_zoo.train.cli": ("AmosLightningCLI", "run_lightning_cli"),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _MODULES)
