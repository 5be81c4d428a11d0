"""Experiments: the one fit -> predict -> evaluate -> row path, the quickstart, reproduce and the table."""

from amos_zoo._lazy import lazy_exports

_MODULES = {
    "amos_zoo.experiments.run": ("run_experiment", "config_file"),
    "amos_zoo.experiments.quickstart": ("run_quickstart", "QuickstartConfig"),
    "amos_zoo.experiments.reproduce": ("run_reproduce",),
    "amos_zoo.experiments.table": ("write_table",),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _MODULES)
