"""The ten Medical Segmentation Decathlon tasks as plain records: each task's channels (modality per channel),
label names, MSD case prefix, and how amos-zoo's synthetic phantom builds each label (REFERENCE.md; the
challenge's dataset.json files). No amos-zoo imports: the data index and the MSD writers both read it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MsdTask", "MSD_TASKS"]


@dataclass(frozen=True)
class MsdTask:
    """One Decathlon task: its modality per channel, label names, and how the phantom builds each label."""

    name: str
    case_prefix: str
    modality: dict[str, str]
    labels: dict[str, str]
    #: label id -> ("organ", AMOS organ id) or ("lesion", host AMOS organ id, radius in mm)
    build: dict[int, tuple]

    @property
    def is_ct(self) -> bool:
        return self.modality["0"] == "CT"

    @property
    def num_channels(self) -> int:
        return len(self.modality)


MSD_TASKS: dict[str, MsdTask] = {
    t.name: t
    for t in [
        MsdTask(
            "Task01_BrainTumour",
            "BRATS",
            {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
            {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
            {1: ("lesion", 6, 24.0), 2: ("lesion", 6, 15.0), 3: ("lesion", 6, 8.0)},
        ),
        MsdTask("Task02_Heart", "la", {"0": "MRI"}, {"0": "background", "1": "left atrium"}, {1: ("organ", 7)}),
        MsdTask(
            "Task03_Liver",
            "liver",
            {"0": "CT"},
            {"0": "background", "1": "liver", "2": "cancer"},
            {1: ("organ", 6), 2: ("lesion", 6, 15.0)},
        ),
        MsdTask(
            "Task04_Hippocampus",
            "hippocampus",
            {"0": "MRI"},
            {"0": "background", "1": "Anterior", "2": "Posterior"},
            {1: ("organ", 2), 2: ("organ", 3)},
        ),
        MsdTask(
            "Task05_Prostate",
            "prostate",
            {"0": "T2", "1": "ADC"},
            {"0": "background", "1": "PZ", "2": "TZ"},
            {1: ("organ", 15), 2: ("lesion", 15, 9.0)},
        ),
        MsdTask("Task06_Lung", "lung", {"0": "CT"}, {"0": "background", "1": "cancer"}, {1: ("lesion", 7, 14.0)}),
        MsdTask(
            "Task07_Pancreas",
            "pancreas",
            {"0": "CT"},
            {"0": "background", "1": "pancreas", "2": "cancer"},
            {1: ("organ", 10), 2: ("lesion", 10, 9.0)},
        ),
        MsdTask(
            "Task08_HepaticVessel",
            "hepaticvessel",
            {"0": "CT"},
            {"0": "background", "1": "Vessel", "2": "Tumour"},
            {1: ("organ", 9), 2: ("lesion", 6, 14.0)},
        ),
        MsdTask("Task09_Spleen", "spleen", {"0": "CT"}, {"0": "background", "1": "spleen"}, {1: ("organ", 1)}),
        MsdTask(
            "Task10_Colon",
            "colon",
            {"0": "CT"},
            {"0": "background", "1": "colon cancer primaries"},
            {1: ("lesion", 13, 12.0)},
        ),
    ]
}
