"""Data: dataset indexes (AMOS, MSD, nnU-Net, SA-Med2D), the AMOS label map, recipes and transforms, folds,
synthetic data, checks, conversion, and the one LightningDataModule."""

from amos_zoo._lazy import lazy_exports

_MODULES = {
    "amos_zoo.data.index": (
        "load_index",
        "select_task_cases",
        "case_id_from_path",
        "DatasetIndex",
        "DatasetError",
        "TASKS",
    ),
    "amos_zoo.data.labels": ("AMOS_LABELS", "LabelMap"),
    "amos_zoo.data.recipes": ("Recipe", "get_recipe", "RECIPES"),
    "amos_zoo.data.folds": ("crossval_split",),
    "amos_zoo.data.synth": ("write_synthetic_dataset",),
    "amos_zoo.data.check": ("check_dataset",),
    "amos_zoo.data.datamodule": ("SegmentationDataModule",),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _MODULES)
