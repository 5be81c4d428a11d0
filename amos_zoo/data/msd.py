"""The ten Medical Segmentation Decathlon tasks: their channels and label sets (REFERENCE.md), and small
synthetic datasets in the MSD layout (``amos-zoo synth --layout msd --task Task05_Prostate``).

The synthetic cases reuse the phantom abdomen: each task's structures are phantom organs or spherical
"lesions" inside one (nested where a task's labels nest, as BraTS' regions do), with intensities changed
so that they can be learned. Anatomy is not the point; the layout is: 4D NIfTI (x, y, z, channel) for
multi-channel tasks, the task's ``modality`` and ``labels`` in dataset.json, MSD case names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from amos_zoo.data.msd_tasks import MSD_TASKS, MsdTask
from amos_zoo.data.synth import SYNTH_SHAPE, make_phantom
from amos_zoo.io import save_nifti, write_json

__all__ = ["MsdTask", "MSD_TASKS", "write_msd_dataset", "check_task_dataset", "task_fit_args"]




def _task_case(task: MsdTask, case_id: int, seed: int, shape: tuple[int, int, int]):
    """(image (x, y, z[, c]), label, affine) of one synthetic case of ``task``."""
    phantom = make_phantom(case_id if task.is_ct else 500 + case_id, seed=seed, shape=shape)
    organs = phantom.label
    label = np.zeros_like(organs)
    image = phantom.image.astype(np.float32)
    spacing = np.abs(np.diag(phantom.affine)[:3])
    grid = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij"), -1)
    for label_id in sorted(task.build):
        spec = task.build[label_id]
        if spec[0] == "organ":
            region = organs == spec[1]
        else:
            host = np.argwhere(organs == spec[1])
            if host.size == 0:
                continue
            centre = host.mean(0) * spacing
            region = np.linalg.norm(grid - centre, axis=-1) <= spec[2]
            image[region] += -45.0 if task.is_ct else 0.35 * float(np.percentile(image, 99))
        label[region] = label_id
    if task.is_ct:
        image = np.round(image).astype(np.int16)
    if task.num_channels > 1:  # MSD stores channels last: (x, y, z, c), each channel a different contrast
        image = np.stack([image * (1.0 + 0.25 * c) + 15.0 * c for c in range(task.num_channels)], -1)
    return image.astype(np.float32 if not task.is_ct else np.int16), label, phantom.affine


def write_msd_dataset(
    out: str | Path,
    task: str,
    n_train: int = 4,
    n_test: int = 1,
    seed: int = 0,
    shape: tuple[int, int, int] = SYNTH_SHAPE,
) -> Path:
    """Write a small synthetic dataset of Decathlon ``task`` in the MSD layout (imagesTr, labelsTr, imagesTs,
    dataset.json with the task's modality and labels). Returns the dataset folder ``out``."""
    if task not in MSD_TASKS:
        raise KeyError(f"unknown Decathlon task {task!r}; one of: {', '.join(MSD_TASKS)}")
    spec = MSD_TASKS[task]
    out = Path(out)
    training, test = [], []
    for i in range(n_train + n_test):
        image, label, affine = _task_case(spec, i + 1, seed, shape)
        name = f"{spec.case_prefix}_{i + 1:03d}.nii.gz"
        if i < n_train:
            save_nifti(image, affine, out / "imagesTr" / name)
            save_nifti(label, affine, out / "labelsTr" / name)
            training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        else:
            save_nifti(image, affine, out / "imagesTs" / name)
            test.append(f"./imagesTs/{name}")
    write_json(
        out / "dataset.json",
        {
            "name": task.split("_", 1)[1],
            "description": f"amos-zoo synthetic stand-in for MSD {task} (layout, channels and labels only)",
            "reference": "amos-zoo",
            "licence": "CC-BY-SA 4.0",
            "release": "synthetic",
            "tensorImageSize": "4D" if spec.num_channels > 1 else "3D",
            "modality": spec.modality,
            "labels": spec.labels,
            "numTraining": len(training),
            "numTest": len(test),
            "training": training,
            "test": test,
        },
    )
    return out


def check_task_dataset(root: str | Path, task: str):
    """The index of the dataset at ``root``, after checking that its channels and labels are ``task``'s (a clear
    error naming dataset.json otherwise: most likely another task's folder)."""
    from amos_zoo.data.index import load_index

    spec = MSD_TASKS[task]
    index = load_index(root)
    want = sorted(int(k) for k in spec.labels)
    if index.num_channels != spec.num_channels or sorted(index.labels.names) != want:
        raise ValueError(
            f"{Path(root) / 'dataset.json'}: {index.num_channels} channel(s) {index.channel_names} and labels "
            f"{index.labels.to_json()}, but {task} has {spec.num_channels} channel(s) {list(spec.modality.values())} "
            f"and labels {spec.labels}; pass the {task} folder as --data"
        )
    return index


def task_fit_args(task: str, protocol: str) -> list[str]:
    """``fit`` options that put a protocol on Decathlon ``task``: every case of the task (the cross-validation's
    folds are made over them), the task's patch (``configs/msd/<task>.yaml``) and, for a protocol with a fixed
    spacing, the task's spacing from the same file; a protocol that plans its spacing (nnU-Net's) plans it from
    this task's fingerprint, as its normalisation statistics."""
    import json

    import yaml

    from amos_zoo.config_files import config_file
    from amos_zoo.data.recipes import get_recipe

    if task not in MSD_TASKS:
        raise KeyError(f"unknown Decathlon task {task!r}; one of: {', '.join(MSD_TASKS)}")
    data = yaml.safe_load(config_file(f"msd/{task}.yaml").read_text())["data"]
    args = ["--data.task", task, "--data.patch_size", json.dumps(data["patch_size"])]
    if get_recipe(protocol).spacing_rule == "fixed":
        args += ["--data.spacing", json.dumps(data["spacing"])]
    return args
