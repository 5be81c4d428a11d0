"""amos-zoo: benchmarked MONAI baselines for AMOS 2022 and the Medical Segmentation Decathlon.

The public API (imported lazily, so ``import amos_zoo`` is instant)::

    from amos_zoo import create_model, list_models, load_weights, load_index, evaluate_case

Packages, in pipeline order: ``data`` (indexes, recipes, transforms, the data module), ``models`` (the network
registry), ``weights`` (pretrained weights, checkpoint formats), ``train`` (the Lightning module, callbacks, CLI),
``infer`` (predictor, prediction pipeline, export), ``metrics`` (the metric suite), ``experiments`` (quickstart,
reproduce, table), ``protocols`` (training protocols as data), ``cli`` (the ``amos-zoo`` command).
"""

from amos_zoo._lazy import lazy_exports

__version__ = "0.2.0"

_MODULES = {
    "amos_zoo.card": ("ModelCard",),
    "amos_zoo.models.registry": ("create_model", "build_network", "list_models"),
    "amos_zoo.weights.loading": ("load_weights", "load_model"),
    "amos_zoo.weights.registry": ("list_weights",),
    "amos_zoo.data.index": ("load_index",),
    "amos_zoo.data.labels": ("AMOS_LABELS",),
    "amos_zoo.data.datamodule": ("SegmentationDataModule",),
    "amos_zoo.train.module": ("SegmentationModule",),
    "amos_zoo.infer.predictor": ("Predictor",),
    "amos_zoo.infer.pipeline": ("load_predictor",),
    "amos_zoo.metrics.case": ("evaluate_case",),
    "amos_zoo.metrics.evaluate": ("evaluate_folders",),
    "amos_zoo.metrics.surface": ("surface_distances",),
    "amos_zoo.protocols": ("get_protocol", "list_protocols"),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _MODULES)
__all__ += ["__version__"]
