"""Read dataset indexes: AMOS / Medical Segmentation Decathlon ``dataset.json`` and nnU-Net v2 raw folders.

A :class:`DatasetIndex` lists the cases of each split with their files, modality and the label map.
Paths in a dataset.json are resolved against the dataset root and may not escape it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from amos_zoo.data.labels import LabelMap, amos_modality
from amos_zoo.data.msd_tasks import MSD_TASKS
from amos_zoo.io import read_json_object

__all__ = [
    "CaseRecord",
    "DatasetIndex",
    "DatasetError",
    "TASKS",
    "load_index",
    "select_task_cases",
    "case_id_from_path",
    "modality_for",
]

_MRI_CHANNEL_NAMES = {"mri", "mr", "t1", "t1w", "t2", "t2w", "flair", "adc", "t1gd", "dwi", "pd"}
_AMOS_ID = re.compile(r"amos_(\d+)")

#: Task name -> modalities it includes (AMOS Task 1 is CT only; Task 2 CT + MRI).
TASKS: dict[str, tuple[str, ...]] = {
    "amos-ct": ("CT",),
    "amos-ctmr": ("CT", "MRI"),
    "amos-mr": ("MRI",),
    "all": ("CT", "MRI"),
}


class DatasetError(ValueError):
    """A dataset index or file is malformed; the message names the file and the problem."""


@dataclass(frozen=True)
class CaseRecord:
    """One case: its image channel files, optional label file and modality."""

    case_id: str
    images: tuple[Path, ...]
    label: Path | None
    modality: str

    def as_dict(self) -> dict:
        """The dictionary form MONAI dictionary transforms consume."""
        image: str | list[str] = str(self.images[0]) if len(self.images) == 1 else [str(p) for p in self.images]
        out = {"image": image, "case_id": self.case_id, "modality": self.modality}
        if self.label is not None:
            out["label"] = str(self.label)
        return out


@dataclass
class DatasetIndex:
    """Cases of a dataset per split, with the label map and channel names."""

    root: Path
    labels: LabelMap
    channel_names: list[str]
    splits: dict[str, list[CaseRecord]] = field(default_factory=dict)
    layout: str = "decathlon"
    name: str = ""

    @property
    def num_channels(self) -> int:
        """Input channels per case."""
        return len(self.channel_names)

    def split(self, name: str) -> list[CaseRecord]:
        """Cases of a split; a clear error when it is absent."""
        if name not in self.splits:
            raise DatasetError(
                f"{self.root / 'dataset.json'}: no '{name}' split (has: {', '.join(sorted(self.splits)) or 'none'})"
            )
        return self.splits[name]


def _safe_path(root: Path, rel: str, source: Path) -> Path:
    """Resolve a dataset.json path against the root; refuse paths that leave it."""
    if not isinstance(rel, str) or not rel:
        raise DatasetError(f"{source}: expected a file path string, got {rel!r}")
    path = (root / rel).resolve()
    root_resolved = root.resolve()
    if path != root_resolved and root_resolved not in path.parents:
        raise DatasetError(f"{source}: path {rel!r} escapes the dataset root {root}; use paths inside the dataset")
    return path


#: file endings a case id is cut from (longest first)
CASE_FILE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".png")


def case_id_from_path(path: str | Path) -> str:
    """The case id of a file: its name without the image ending (``amos_0004.nii.gz`` -> ``amos_0004``).

    The one case-id rule: the index, evaluation and prediction outputs all name cases with it.
    """
    name = Path(path).name
    for ext in CASE_FILE_ENDINGS:
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def modality_for(case_id: str, channel_names: list[str], override: dict[str, str] | None) -> str:
    """CT or MRI for a case: an override, else the AMOS id rule (< 500 CT), else the first channel's name."""
    if override and case_id in override:
        return override[case_id].upper().replace("MR", "MRI").replace("MRII", "MRI")
    match = _AMOS_ID.search(case_id)
    if match:
        return amos_modality(int(match.group(1)))
    first = channel_names[0].strip().lower() if channel_names else "ct"
    if first in _MRI_CHANNEL_NAMES or first.startswith("mr"):
        return "MRI"
    return "CT"


def load_index(
    root: str | Path, dataset_json: str | Path | None = None, modality_override: dict | None = None
) -> DatasetIndex:
    """Read a dataset's index.

    Args:
        root: dataset folder.
        dataset_json: the JSON file; defaults to ``root/dataset.json``.
        modality_override: case id -> "CT"/"MRI", overriding the AMOS id rule and the channel names.

    Returns:
        The index with splits ``training``, ``validation`` (if listed) and ``test`` (if listed).
    """
    root = Path(root)
    path = Path(dataset_json) if dataset_json else root / "dataset.json"
    if not path.is_file():
        raise DatasetError(f"{path}: dataset.json not found; pass the dataset folder (holding dataset.json) as root")
    meta = read_json_object(path, DatasetError)
    if "labels" not in meta:
        raise DatasetError(f"{path}: no 'labels' entry; a segmentation dataset.json maps label ids to names")
    try:
        labels = LabelMap.from_json(meta["labels"])
    except ValueError as err:
        raise DatasetError(f"{path}: bad 'labels': {err}") from err

    if "channel_names" in meta:  # nnU-Net v2
        channels = [meta["channel_names"][k] for k in sorted(meta["channel_names"], key=int)]
        return _load_nnunet(root, path, meta, labels, channels, modality_override)
    modality = meta.get("modality", {"0": "CT"})
    channels = [modality[k] for k in sorted(modality, key=int)] if isinstance(modality, dict) else [str(modality)]
    index = DatasetIndex(
        root=root, labels=labels, channel_names=channels, layout="decathlon", name=meta.get("name", "")
    )
    for split in ("training", "validation"):
        if split in meta:
            index.splits[split] = _read_entries(root, path, meta[split], split, channels, modality_override)
    if "test" in meta:
        tests = [{"image": e} if isinstance(e, str) else e for e in meta["test"]]
        index.splits["test"] = _read_entries(root, path, tests, "test", channels, modality_override)
    return index


def _read_entries(root, path, entries, split, channels, override) -> list[CaseRecord]:
    if not isinstance(entries, list):
        raise DatasetError(f"{path}: '{split}' must be a list of cases")
    records, seen = [], set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "image" not in entry:
            raise DatasetError(f"{path}: '{split}'[{i}] must be an object with an 'image' path, got {entry!r}")
        images = entry["image"] if isinstance(entry["image"], list) else [entry["image"]]
        image_paths = tuple(_safe_path(root, p, path) for p in images)
        label = _safe_path(root, entry["label"], path) if entry.get("label") else None
        case_id = case_id_from_path(image_paths[0])
        if case_id in seen:
            raise DatasetError(f"{path}: case {case_id!r} is listed twice in '{split}'; remove the duplicate")
        seen.add(case_id)
        records.append(CaseRecord(case_id, image_paths, label, modality_for(case_id, channels, override)))
    return records


def _load_nnunet(root, path, meta, labels, channels, override) -> DatasetIndex:
    ending = meta.get("file_ending", ".nii.gz")
    index = DatasetIndex(root=root, labels=labels, channel_names=channels, layout="nnunet", name=meta.get("name", ""))
    for split, img_dir, lbl_dir in (("training", "imagesTr", "labelsTr"), ("test", "imagesTs", None)):
        folder = root / img_dir
        if not folder.is_dir():
            continue
        cases = sorted({p.name[: -len(ending) - 5] for p in folder.glob(f"*_0000{ending}")})
        records = []
        for case in cases:
            imgs = tuple(folder / f"{case}_{c:04d}{ending}" for c in range(len(channels)))
            label = (root / lbl_dir / f"{case}{ending}") if lbl_dir else None
            records.append(CaseRecord(case, imgs, label, modality_for(case, channels, override)))
        index.splits[split] = records
    return index


def select_task_cases(index: DatasetIndex, split: str, task: str) -> list[CaseRecord]:
    """Cases of ``split`` that belong to ``task`` (``amos-ct``, ``amos-ctmr``, ``amos-mr``, ``all``, or a Decathlon
    task name such as ``Task09_Spleen``: every case of its dataset)."""
    if task not in TASKS and task not in MSD_TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join([*TASKS, *MSD_TASKS])}")
    keep = TASKS.get(task, TASKS["all"])
    cases = [c for c in index.split(split) if c.modality in keep]
    if not cases:
        raise DatasetError(
            f"{index.root / 'dataset.json'}: split '{split}' has no {'/'.join(keep)} cases for task {task!r}"
        )
    return cases
