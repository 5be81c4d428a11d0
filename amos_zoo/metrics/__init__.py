"""The metric suite, the only place a metric is computed: Dice, NSD, HD95, ASSD (DeepMind's surface-distance
definitions), tolerance presets, the one accumulator, and folder evaluation."""

from amos_zoo._lazy import lazy_exports

_MODULES = {
    "amos_zoo.metrics.case": ("evaluate_case", "dice_score", "METRICS"),
    "amos_zoo.metrics.surface": ("surface_distances", "SurfaceDistances"),
    "amos_zoo.metrics.tolerances": ("get_tolerances", "TOLERANCE_PRESETS"),
    "amos_zoo.metrics.aggregate": ("MetricAccumulator", "CaseResult"),
    "amos_zoo.metrics.evaluate": ("evaluate_folders", "summarise"),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _MODULES)
