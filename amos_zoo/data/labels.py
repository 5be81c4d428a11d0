"""The one AMOS 2022 label map: official ids and spellings plus readable display names.

Everything in amos-zoo that needs an organ name or id imports it from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "AMOS_LABELS",
    "AMOS_OFFICIAL_NAMES",
    "LabelMap",
    "amos_modality",
    "AMOS_MRI_FIRST_ID",
    "label_key",
]

#: Label names exactly as the official AMOS 2022 ``dataset.json`` spells them ("arota", "postcava").
AMOS_OFFICIAL_NAMES: dict[int, str] = {
    0: "background",
    1: "spleen",
    2: "right kidney",
    3: "left kidney",
    4: "gall bladder",
    5: "esophagus",
    6: "liver",
    7: "stomach",
    8: "arota",
    9: "postcava",
    10: "pancreas",
    11: "right adrenal gland",
    12: "left adrenal gland",
    13: "duodenum",
    14: "bladder",
    15: "prostate/uterus",
}

_READABLE = {"arota": "aorta", "postcava": "inferior vena cava", "gall bladder": "gallbladder"}

#: AMOS ids with at or above this number are MRI, below it CT (the AMOS release's id rule).
AMOS_MRI_FIRST_ID = 500


def label_key(name: str) -> str:
    """A class name reduced for matching across datasets: lower case, letters and digits only
    ("Inferior_Vena_Cava" and "inferior vena cava" match)."""
    return re.sub(r"[^0-9a-z]+", "", name.lower())


@dataclass(frozen=True)
class LabelMap:
    """Integer label ids with their names as stored in a dataset and as shown to people.

    Attributes:
        names: id -> name as written in the dataset's JSON (official spelling kept).
    """

    names: dict[int, str]

    def __post_init__(self) -> None:
        if 0 not in self.names:
            raise ValueError(f"a label map needs id 0 (background); got ids {sorted(self.names)}")
        ids = sorted(self.names)
        if ids != list(range(len(ids))):
            raise ValueError(f"label ids must be 0..N-1 without gaps; got {ids}")

    @property
    def num_classes(self) -> int:
        """Number of classes including background."""
        return len(self.names)

    @property
    def foreground_ids(self) -> list[int]:
        """Ids 1..N-1."""
        return [i for i in sorted(self.names) if i != 0]

    def display_name(self, label_id: int) -> str:
        """Readable name for an id ("arota" shows as "aorta")."""
        name = self.names[label_id]
        return _READABLE.get(name, name)

    @property
    def display_names(self) -> dict[int, str]:
        """id -> readable name."""
        return {i: self.display_name(i) for i in sorted(self.names)}

    def to_json(self) -> dict[str, str]:
        """The Decathlon ``labels`` form: {"0": "background", ...}."""
        return {str(i): self.names[i] for i in sorted(self.names)}

    @classmethod
    def from_json(cls, labels: dict) -> LabelMap:
        """Read Decathlon (id -> name) or nnU-Net v2 (name -> id) ``labels`` dictionaries."""
        if not labels:
            raise ValueError("dataset.json has an empty 'labels' entry")
        keys_are_ids = all(str(k).strip().lstrip("-").isdigit() for k in labels)
        if keys_are_ids:
            return cls({int(k): str(v) for k, v in labels.items()})
        out: dict[int, str] = {}
        for name, value in labels.items():
            if isinstance(value, (list, tuple)):  # nnU-Net v2 region-based labels: not a plain label map
                raise ValueError(f"label {name!r} is a region ({value}); region-based labels are not supported")
            out[int(value)] = str(name)
        return cls(out)


#: The AMOS 2022 15-organ label map.
AMOS_LABELS = LabelMap(AMOS_OFFICIAL_NAMES)


def amos_modality(case_id: int) -> str:
    """Modality of an AMOS case from its id: ``"CT"`` below 500, ``"MRI"`` otherwise."""
    return "CT" if int(case_id) < AMOS_MRI_FIRST_ID else "MRI"
