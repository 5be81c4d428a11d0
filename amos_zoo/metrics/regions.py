"""What a Decathlon task scores: its labels one by one, or, for BrainTumour, the BraTS tumour regions.

A :class:`Region` is a set of label ids scored as one mask. Every Decathlon task but one scores each of its labels
on its own (a one-label region each). Task01_BrainTumour stores the labels 1 edema, 2 non-enhancing tumour,
3 enhancing tumour (the MSD dataset.json), and brain tumour segmentation is scored on the nested regions the BraTS
challenge evaluates: whole tumour (1, 2, 3), tumour core (2, 3) and enhancing tumour (3). Sources: nnU-Net's
``documentation/region_based_training.md`` (BraTS in nnU-Net's convention 1 edema, 2 non-enhancing tumour and
necrosis, 3 enhancing tumour: "The challenge evaluation is done on the regions"), ``nnunetv2``'s
``dataset_conversion/Dataset137_BraTS21.py`` labels ``{'whole tumor': (1, 2, 3), 'tumor core': (2, 3),
'enhancing tumor': (3, )}`` and ``nnunet`` 1.7.1's ``evaluation/region_based_evaluation.py get_brats_regions``
(the same tuples). In the challenge's own labels (1 necrotic / non-enhancing core, 2 edema, 4 enhancing; BraTS 2019 /
2020 task pages) these are whole tumour {1, 2, 4}, tumour core {1, 4}, enhancing tumour {4}. tests/test_msd_reproduce.py
checks the regions against nnunetv2's BraTS conversion and scores files with nnunetv2's own metric code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from amos_zoo.data.labels import LabelMap

__all__ = ["Region", "BRATS_REGIONS", "task_regions", "regions_label_map", "evaluate_regions"]


@dataclass(frozen=True)
class Region:
    """A named set of label ids scored as one mask."""

    name: str
    labels: tuple[int, ...]

    def mask(self, segmentation: np.ndarray) -> np.ndarray:
        """The region's voxels in a label volume (boolean)."""
        return np.isin(segmentation, self.labels)


#: BraTS' evaluation regions in the MSD / nnU-Net label convention (1 edema, 2 non-enhancing tumour, 3 enhancing)
BRATS_REGIONS = (
    Region("whole tumour", (1, 2, 3)),
    Region("tumour core", (2, 3)),
    Region("enhancing tumour", (3,)),
)

#: Decathlon tasks scored on regions other than their labels
_TASK_REGIONS = {"Task01_BrainTumour": BRATS_REGIONS}


def task_regions(task: str, labels: LabelMap) -> tuple[Region, ...]:
    """The regions ``task`` is scored on: BraTS' regions for Task01_BrainTumour (its labels must be the MSD's
    1..3), else each foreground label of ``labels`` on its own."""
    if task in _TASK_REGIONS:
        regions = _TASK_REGIONS[task]
        needed = sorted({i for r in regions for i in r.labels})
        if labels.foreground_ids != needed:
            raise ValueError(
                f"{task} is scored on regions of the labels {needed}; the dataset's labels are "
                f"{labels.to_json()} (is it the MSD {task} folder?)"
            )
        return regions
    return tuple(Region(labels.display_name(i), (i,)) for i in labels.foreground_ids)


def regions_label_map(regions: Sequence[Region]) -> LabelMap:
    """Region names as a label map (region k has id k), for the accumulator and reports."""
    return LabelMap({0: "background", **{k: r.name for k, r in enumerate(regions, 1)}})


def evaluate_regions(
    gt: np.ndarray, pred: np.ndarray, spacing: Sequence[float], regions: Sequence[Region], tolerance, **kwargs
) -> dict[int, dict[str, float]]:
    """Metrics of each region (keyed 1..R) with :func:`~amos_zoo.metrics.case.evaluate_case` on the region masks;
    region k's NSD tolerance is the preset's value for id k."""
    from amos_zoo.metrics.case import evaluate_case
    from amos_zoo.metrics.tolerances import get_tolerances

    preset = get_tolerances(tolerance)
    out = {}
    for k, region in enumerate(regions, 1):
        masks = region.mask(gt).astype(np.uint8), region.mask(pred).astype(np.uint8)
        out[k] = evaluate_case(*masks, spacing, [1], tolerance=preset.for_label(k), **kwargs)[1]
    return out
