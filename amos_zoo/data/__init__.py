"""Data: dataset indexes (AMOS, MSD, nnU-Net, SA-Med2D), the AMOS label map, recipes and transforms, folds,
synthetic data, checks, conversion, and the one LightningDataModule."""

from amos_zoo._lazy import lazy_exports

_NAMES = {
    "load_index": "amos_zoo.data.index",
    "select_task_cases": "amos_zoo.data.index",
    "case_id_from_path": "amos_zoo.data.index",
    "DatasetIndex": "amos_zoo.data.index",
    "DatasetError": "amos_zoo.data.index",
    "TASKS": "amos_zoo.data.index",
    "AMOS_LABELS": "amos_zoo.data.labels",
    "LabelMap": "amos_zoo.data.labels",
    "Recipe": "amos_zoo.data.recipes",
    "get_recipe": "amos_zoo.data.recipes",
    "RECIPES": "amos_zoo.data.recipes",
    "crossval_split": "amos_zoo.data.folds",
    "write_synthetic_dataset": "amos_zoo.data.synth",
    "check_dataset": "amos_zoo.data.check",
    "SegmentationDataModule": "amos_zoo.data.datamodule",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
