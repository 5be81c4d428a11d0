"""A torchmetrics accumulator of per-organ metrics, summed across DDP processes.

Per-case values come from :func:`amos_zoo.metrics.case.evaluate_case`; this class only adds them up
(sum and count per organ and metric, NaN entries left out and counted), so the means are exact over
all cases of all processes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric

__all__ = ["OrganMetricAccumulator"]


class OrganMetricAccumulator(Metric):
    """Sum and count of each metric per organ; ``compute()`` returns the per-organ means.

    Args:
        label_ids: organ ids scored (usually 1..N-1).
        metrics: metric names, e.g. ``("dice", "nsd")``.
    """

    full_state_update = False

    def __init__(self, label_ids: Sequence[int], metrics: Sequence[str] = ("dice",)) -> None:
        super().__init__()
        self.label_ids = [int(i) for i in label_ids]
        self.metric_names = list(metrics)
        shape = (len(self.metric_names), len(self.label_ids))
        self.add_state("total", default=torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("cases", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, case: dict[int, dict[str, float]]) -> None:
        """Add one case's ``evaluate_case`` result."""
        values = torch.tensor(
            [[case[lid][m] for lid in self.label_ids] for m in self.metric_names], dtype=torch.float64
        )
        valid = ~torch.isnan(values)
        self.total += torch.where(valid, values, torch.zeros_like(values)).to(self.total.device)
        self.count += valid.to(self.count.dtype).to(self.count.device)
        self.cases += 1

    def compute(self) -> dict[str, torch.Tensor]:
        """metric -> tensor of per-organ means (NaN for an organ never scored), plus ``cases``."""
        means = self.total / self.count.clamp_min(1)
        means = torch.where(self.count > 0, means, torch.full_like(means, float("nan")))
        out = {m: means[i] for i, m in enumerate(self.metric_names)}
        out["cases"] = self.cases
        return out
