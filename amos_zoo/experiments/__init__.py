"""Experiments: the one fit -> predict -> evaluate -> row path, the quickstart, reproduce and the table."""

from amos_zoo._lazy import lazy_exports

_NAMES = {
    "run_experiment": "amos_zoo.experiments.run",
    "config_file": "amos_zoo.experiments.run",
    "run_quickstart": "amos_zoo.experiments.quickstart",
    "QuickstartConfig": "amos_zoo.experiments.quickstart",
    "run_reproduce": "amos_zoo.experiments.reproduce",
    "write_table": "amos_zoo.experiments.table",
}
__all__ = sorted(_NAMES)
__getattr__, __dir__ = lazy_exports(__name__, _NAMES)
