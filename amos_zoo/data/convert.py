"""Conversion between the AMOS/Decathlon layout and nnU-Net v2's raw format, so the same data can be given to
nnU-Net and its predictions scored by ``amos-zoo evaluate``.

nnU-Net v2 raw (``DatasetXXX_Name/``): ``imagesTr/{case}_{channel:04d}.nii.gz`` (one 3D file per channel),
``labelsTr/{case}.nii.gz``, ``imagesTs/``; dataset.json with ``channel_names`` (index -> name), ``labels``
(name -> id, the reverse of the Decathlon's), ``numTraining`` and ``file_ending``. The official AMOS
validation split goes to ``imagesTs`` with its references in ``labelsTs`` (nnU-Net ignores that folder), so
``nnUNetv2_predict -i imagesTs`` followed by ``amos-zoo evaluate --gt labelsTs`` scores the same cases.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from amos_zoo.data.index import load_index
from amos_zoo.data.labels import LabelMap
from amos_zoo.io import write_json

__all__ = ["to_nnunet", "from_nnunet"]


def _save(img: nib.Nifti1Image, data: np.ndarray, path: Path) -> None:
    from amos_zoo.io import save_nifti

    save_nifti(np.asarray(data), img.affine, path, header=img.header)


def _channels(path: Path) -> list[np.ndarray]:
    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)
    return [data[..., c] for c in range(data.shape[-1])] if data.ndim == 4 else [data]


def to_nnunet(data: str | Path, out: str | Path, dataset_id: int = 501, name: str | None = None) -> Path:
    """Write ``data`` (AMOS/Decathlon layout) as nnU-Net v2 raw data ``out/Dataset{id:03d}_{name}``."""
    index = load_index(data)
    name = name or (index.name or Path(data).name).replace(" ", "")
    root = Path(out) / f"Dataset{dataset_id:03d}_{name}"
    n_channels = index.num_channels
    jobs = [(c, "imagesTr", "labelsTr") for c in index.split("training")]
    jobs += [(c, "imagesTs", "labelsTs") for c in index.splits.get("validation", [])]
    jobs += [(c, "imagesTs", None) for c in index.splits.get("test", [])]
    for case, img_dir, lbl_dir in tqdm(jobs, desc="to nnU-Net", unit="case"):
        files = list(case.images)
        arrays = [a for f in files for a in _channels(f)]
        if len(arrays) != n_channels:
            raise ValueError(f"{files[0]}: {len(arrays)} channel(s), the dataset declares {n_channels}")
        ref = nib.load(str(files[0]))
        for c, array in enumerate(arrays):
            _save(ref, array, root / img_dir / f"{case.case_id}_{c:04d}.nii.gz")
        if lbl_dir and case.label is not None:
            lbl = nib.load(str(case.label))
            _save(lbl, np.asanyarray(lbl.dataobj), root / lbl_dir / f"{case.case_id}.nii.gz")
    labels = {n: i for i, n in index.labels.names.items()}
    if len(labels) != len(index.labels.names):
        raise ValueError("nnU-Net needs unique label names; the dataset repeats one")
    write_json(
        root / "dataset.json",
        {
            "channel_names": {str(i): n for i, n in enumerate(index.channel_names)},
            "labels": labels,
            "numTraining": len(index.split("training")),
            "file_ending": ".nii.gz",
            # nnU-Net's own AMOS conversions read with reorientation to RAS, as amos-zoo's pipeline does
            "overwrite_image_reader_writer": "NibabelIOWithReorient",
            "name": name,
            "description": f"converted by amos-zoo from {Path(data).resolve()}; validation cases are in imagesTs "
            "with references in labelsTs",
        },
    )
    return root


def from_nnunet(data: str | Path, out: str | Path) -> Path:
    """Write nnU-Net v2 raw data as a Decathlon-layout dataset (multi-channel cases as 4D NIfTI)."""
    index = load_index(data)
    out = Path(out)
    entries: dict[str, list] = {"training": [], "test": []}
    for split, img_dir, lbl_dir in (("training", "imagesTr", "labelsTr"), ("test", "imagesTs", None)):
        for case in tqdm(index.splits.get(split, []), desc=f"from nnU-Net ({split})", unit="case"):
            ref = nib.load(str(case.images[0]))
            arrays = [np.asanyarray(nib.load(str(f)).dataobj) for f in case.images]
            image = arrays[0] if len(arrays) == 1 else np.stack(arrays, -1)
            _save(ref, image, out / img_dir / f"{case.case_id}.nii.gz")
            if lbl_dir and case.label is not None:
                lbl = nib.load(str(case.label))
                _save(lbl, np.asanyarray(lbl.dataobj), out / lbl_dir / f"{case.case_id}.nii.gz")
                entries[split].append(
                    {"image": f"./{img_dir}/{case.case_id}.nii.gz", "label": f"./{lbl_dir}/{case.case_id}.nii.gz"}
                )
            else:
                entries[split].append(f"./{img_dir}/{case.case_id}.nii.gz")
    labels: LabelMap = index.labels
    write_json(
        out / "dataset.json",
        {
            "name": index.name,
            "description": f"converted by amos-zoo from nnU-Net v2 raw data {Path(data).resolve()}",
            "tensorImageSize": "4D" if index.num_channels > 1 else "3D",
            "modality": {str(i): n for i, n in enumerate(index.channel_names)},
            "labels": labels.to_json(),
            "numTraining": len(entries["training"]),
            "numTest": len(entries["test"]),
            **entries,
        },
    )
    return out
