"""The metric suite, the only place a metric is computed: Dice, NSD, HD95, ASSD (DeepMind's surface-distance
definitions), tolerance presets, the one accumulator, and folder evaluation."""

from amos_zoo._lazy import lazy_exports

_NAMES = {
    "evaluate_case": "amos_zoo.metrics.case",
    "dice_score": "amos_zoo.metrics.case",
    "METRICS": "amos_zoo.metrics.case",
    "surface_distances": "amos_zoo.metrics.surface",
    "SurfaceDistances": "amos_zoo.metrics.surface",
    "get_tolerances": "amos_zoo.metrics.tolerances",
    "TOLERANCE_PRESETS": "amos_zoo.metrics.tolerances",
    "MetricAccumulator": "amos_zoo.metrics.aggregate",
    "CaseResult": "amos_zoo.metrics.aggregate",
    "evaluate_folders": "amos_zoo.metrics.evaluate",
    "summarise": "amos_zoo.metrics.evaluate",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
