"""Inference: the predictor (sliding window, labels on the input grid), the folder pipeline, and export."""

from amos_zoo._lazy import lazy_exports

_MODULES = {
    "amos_zoo.infer.predictor": (
        "Predictor",
        "InputError",
        "load_scan",
        "labels_on_input_grid",
        "resample_to_input_grid",
    ),
    "amos_zoo.infer.pipeline": ("PredictJob", "collect_inputs", "load_predictor", "predict_many"),
    "amos_zoo.infer.export": ("export_model",),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _MODULES)
