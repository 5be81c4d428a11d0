"""Inference: the predictor (sliding window, labels on the input grid), the folder pipeline, and export."""

from amos_zoo._lazy import lazy_exports

_NAMES = {
    "Predictor": "amos_zoo.infer.predictor",
    "InputError": "amos_zoo.infer.predictor",
    "load_scan": "amos_zoo.infer.predictor",
    "labels_on_input_grid": "amos_zoo.infer.predictor",
    "resample_to_input_grid": "amos_zoo.infer.predictor",
    "PredictJob": "amos_zoo.infer.pipeline",
    "collect_inputs": "amos_zoo.infer.pipeline",
    "load_predictor": "amos_zoo.infer.pipeline",
    "predict_many": "amos_zoo.infer.pipeline",
    "export_model": "amos_zoo.infer.export",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
