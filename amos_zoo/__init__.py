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

_NAMES = {
    "ModelCard": "amos_zoo.card",
    "create_model": "amos_zoo.models.registry",
    "build_network": "amos_zoo.models.registry",
    "list_models": "amos_zoo.models.registry",
    "load_weights": "amos_zoo.weights.loading",
    "load_model": "amos_zoo.weights.loading",
    "list_weights": "amos_zoo.weights.registry",
    "load_index": "amos_zoo.data.index",
    "AMOS_LABELS": "amos_zoo.data.labels",
    "SegmentationDataModule": "amos_zoo.data.datamodule",
    "SegmentationModule": "amos_zoo.train.module",
    "Predictor": "amos_zoo.infer.predictor",
    "load_predictor": "amos_zoo.infer.pipeline",
    "evaluate_case": "amos_zoo.metrics.case",
    "evaluate_folders": "amos_zoo.metrics.evaluate",
    "surface_distances": "amos_zoo.metrics.surface",
    "get_protocol": "amos_zoo.protocols",
    "list_protocols": "amos_zoo.protocols",
}
__all__ = sorted(_NAMES) + ["__version__"]
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
