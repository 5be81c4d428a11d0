"""The one metric accumulator: per-case values in, per-organ / per-modality / overall means out.

Training validation (``SegmentationModule``) and ``amos-zoo evaluate`` both collect :class:`CaseResult` objects in
a :class:`MetricAccumulator` and read its :meth:`~MetricAccumulator.summary`, so a number logged during training
and the same number in ``summary.json`` are computed by the same code. Under DDP, :meth:`gather` merges every
process's cases by case id (each case counted once).

Aggregation: ``per_organ[organ][metric]`` is the mean over cases; ``overall[metric]`` the mean over organs of the
per-organ means (how the AMOS tables report mDSC / mNSD); ``pooled[metric]`` the mean over every scored (case,
organ) pair. Values that are NaN (the ``ignore`` empty-mask policy: organ absent from the reference) leave the
means and are counted under ``excluded``; an organ with no scored case has mean None.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["CaseResult", "MetricAccumulator"]


@dataclass
class CaseResult:
    """Metrics of one case: label id -> metric -> value."""

    case_id: str
    modality: str
    values: dict[int, dict[str, float]]
    missing_prediction: bool = False


def _mean(values: Iterable[float]) -> float | None:
    vals = [float(v) for v in values if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else None


class MetricAccumulator:
    """Collect per-case results and aggregate them.

    Args:
        labels: foreground label id -> readable organ name (the keys of ``per_organ``).
        metrics: metric names every case carries (``dice``, ``nsd``, ...).
    """

    def __init__(self, labels: Mapping[int, str], metrics: Sequence[str]) -> None:
        self.labels = {int(k): str(v) for k, v in sorted(labels.items()) if int(k) != 0}
        self.metrics = tuple(metrics)
        self.cases: dict[str, CaseResult] = {}

    def add(self, result: CaseResult) -> None:
        """Add (or replace) one case's result, keyed by its case id."""
        self.cases[result.case_id] = result

    def reset(self) -> None:
        """Forget every case."""
        self.cases = {}

    def gather(self) -> None:
        """Under ``torch.distributed``: merge every process's cases (by case id) into every process."""
        import torch

        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        parts: list = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(parts, self.cases)
        self.cases = {k: v for part in parts for k, v in part.items()}

    def _block(self, results: Sequence[CaseResult]) -> dict:
        per_organ = {}
        for lid, name in self.labels.items():
            entry: dict[str, float | int | None] = {}
            for m in self.metrics:
                vals = [r.values[lid][m] for r in results]
                entry[m] = _mean(vals)
                entry[f"{m}_n"] = sum(not math.isnan(v) for v in vals)
            per_organ[name] = entry
        overall = {}
        for m in self.metrics:
            overall[m] = _mean(v for v in (per_organ[n][m] for n in per_organ) if v is not None)
        pooled = {m: _mean(r.values[lid][m] for r in results for lid in self.labels) for m in self.metrics}
        first = self.metrics[0] if self.metrics else None
        excluded = sum(math.isnan(r.values[lid][first]) for r in results for lid in self.labels) if first else 0
        return {
            "cases": len(results),
            "per_organ": per_organ,
            "overall": overall,
            "pooled": pooled,
            "excluded": excluded,
        }

    def summary(self, tolerance: dict | None = None) -> dict:
        """Means per organ, per modality and overall, per-case means, missing predictions (``tolerance``: the NSD
        tolerance's description, stored alongside)."""
        results = [self.cases[k] for k in sorted(self.cases)]
        modalities = sorted({r.modality for r in results})
        return {
            "tolerance": tolerance,
            "metrics": list(self.metrics),
            "all": self._block(results),
            "per_modality": {mod: self._block([r for r in results if r.modality == mod]) for mod in modalities},
            "per_case": {
                r.case_id: {m: _mean(r.values[lid][m] for lid in self.labels) for m in self.metrics} for r in results
            },
            "missing_predictions": [r.case_id for r in results if r.missing_prediction],
        }
