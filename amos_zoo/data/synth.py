"""Synthetic AMOS-layout phantom abdomens: the embedded default dataset of the quickstart and the tests.

Each case is a smooth phantom with all 15 AMOS organs at plausible positions in patient (RAS)
coordinates: liver right upper, spleen left, kidneys posterior, aorta left of the spine and the
inferior vena cava right of it, bladder and prostate/uterus low. CT cases carry Hounsfield-like
values; MRI cases (ids >= 500, the AMOS rule) carry T1-like contrasts with a smooth bias field and
Rician noise. Spacing is anisotropic and varies per case; half the cases are stored in LPS voxel
order so that loading must reorient. Everything is deterministic for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from amos_zoo.data.labels import AMOS_LABELS, AMOS_MRI_FIRST_ID
from amos_zoo.io import save_nifti, write_json

__all__ = ["PhantomCase", "make_phantom", "write_synthetic_dataset", "SYNTH_SHAPE"]

#: Voxel grid of every phantom (x, y, z).
SYNTH_SHAPE = (80, 64, 40)

# Organ id -> (kind, centre mm (x right, y anterior, z superior), semi-axes mm, CT HU, MRI T1-like value)
# "ellipsoid": centre + semi-axes; "tube": centre (x, y) + radius, z from centre[2] to semi[2].
_ORGANS: list[tuple[int, str, tuple, tuple, float, float]] = [
    (6, "ellipsoid", (55, 10, 45), (62, 55, 55), 60, 560),  # liver
    (7, "ellipsoid", (-42, 28, 45), (34, 26, 30), 15, 220),  # stomach
    (1, "ellipsoid", (-72, -22, 45), (24, 30, 40), 48, 420),  # spleen
    (2, "ellipsoid", (48, -45, -5), (22, 18, 40), 165, 460),  # right kidney
    (3, "ellipsoid", (-48, -45, 5), (22, 18, 40), 165, 460),  # left kidney
    (13, "duodenum", (12, 8, -5), (30, 10, 0), 30, 260),  # duodenum (C-shaped tube in the x-z plane)
    (10, "ellipsoid", (-8, 2, 12), (48, 12, 13), 100, 640),  # pancreas
    (4, "ellipsoid", (45, 38, 12), (14, 14, 22), 5, 90),  # gallbladder
    (11, "ellipsoid", (34, -42, 50), (11, 8, 17), -5, 330),  # right adrenal gland
    (12, "ellipsoid", (-34, -42, 55), (11, 8, 17), -5, 330),  # left adrenal gland
    (14, "ellipsoid", (0, 35, -82), (36, 25, 20), -10, 70),  # bladder
    (15, "ellipsoid", (0, -8, -88), (18, 14, 14), 70, 360),  # prostate/uterus
    (5, "tube", (-8, -35, 45), (10, 0, 100), -20, 200),  # esophagus
    (8, "tube", (-14, -42, -60), (11, 0, 100), 220, 40),  # aorta
    (9, "tube", (20, -36, -50), (10, 0, 75), 170, 80),  # inferior vena cava
]
_BODY_SEMI = (128.0, 96.0)
_FAT_RING = 12.0
_SPINE = ((0.0, -70.0), 17.0)
_CT_BACKGROUND = {"air": -1000.0, "fat": -100.0, "tissue": 40.0, "bone": 550.0}
_MR_BACKGROUND = {"air": 0.0, "fat": 900.0, "tissue": 300.0, "bone": 150.0}


@dataclass
class PhantomCase:
    """One phantom: image and label in the file's voxel order, with its affine."""

    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    modality: str


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], coarse: int = 4) -> np.ndarray:
    """A smooth random field in [-1, 1] (a coarse random grid upsampled with cubic splines)."""
    grid = rng.uniform(-1, 1, size=(coarse,) * len(shape))
    field = ndimage.zoom(grid, [s / coarse for s in shape], order=3, mode="nearest")
    return np.clip(field[tuple(slice(0, s) for s in shape)], -1, 1)


def make_phantom(
    case_id: int,
    seed: int = 0,
    shape: tuple[int, int, int] = SYNTH_SHAPE,
    spacing: tuple[float, float, float] | None = None,
    anatomy_scale: float = 1.0,
) -> PhantomCase:
    """Build one phantom case; CT for ``case_id < 500``, MRI otherwise.

    Args:
        case_id: AMOS-style numeric id; decides the modality and, with ``seed``, the random draw.
        seed: dataset seed.
        shape: voxel grid (x, y, z).
        spacing: voxel size in mm; drawn per case (about 3.5 x 3.5 x 5 mm) when not given.
        anatomy_scale: size of the body and organs relative to the default phantom (1.3 gives adult organ
            volumes: liver about 1.4 L, which the benchmarks use).

    Long because the phantom's anatomy is a table of organ shapes written out.
    """
    rng = np.random.default_rng([seed, case_id])
    modality = "CT" if case_id < AMOS_MRI_FIRST_ID else "MRI"
    drawn = np.array([rng.uniform(3.2, 3.8), rng.uniform(3.2, 3.8), rng.uniform(4.5, 5.5)])
    spacing = drawn if spacing is None else np.asarray(spacing, dtype=float)
    # voxel centres in RAS mm, origin at the volume centre
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing)]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    # a global pose change (rotation about z, scale) and a smooth shape deformation per case
    theta = np.deg2rad(rng.uniform(-8, 8))
    scale = rng.uniform(0.92, 1.08) * anatomy_scale
    xr = (np.cos(theta) * x + np.sin(theta) * y) / scale
    yr = (-np.sin(theta) * x + np.cos(theta) * y) / scale
    zr = z / scale
    wobble = 0.18 * _smooth_field(rng, shape)

    label = np.zeros(shape, dtype=np.uint8)
    tissue_class = np.zeros(shape, dtype=np.uint8)  # 0 air, 1 fat, 2 tissue, 3 bone
    body = (xr / _BODY_SEMI[0]) ** 2 + (yr / _BODY_SEMI[1]) ** 2 + 0.5 * wobble
    inner = (xr / (_BODY_SEMI[0] - _FAT_RING)) ** 2 + (yr / (_BODY_SEMI[1] - _FAT_RING)) ** 2 + 0.5 * wobble
    tissue_class[body < 1] = 1
    tissue_class[inner < 1] = 2
    (sx, sy), sr = _SPINE
    tissue_class[(xr - sx) ** 2 + (yr - sy) ** 2 < sr**2] = 3

    for organ_id, kind, centre, semi, _, _ in _ORGANS:
        jitter = rng.uniform(-4, 4, size=3)
        grow = rng.uniform(0.9, 1.1)
        cx, cy, cz = np.asarray(centre, dtype=float) + jitter
        if kind == "ellipsoid":
            rx, ry, rz = np.asarray(semi, dtype=float) * grow
            f = ((xr - cx) / rx) ** 2 + ((yr - cy) / ry) ** 2 + ((zr - cz) / rz) ** 2 + wobble
        elif kind == "tube":
            radius, _, z_top = semi
            radius *= grow
            f = ((xr - cx) ** 2 + (yr - cy) ** 2) / radius**2 + 0.5 * wobble
            f = np.where((zr >= cz) & (zr <= z_top), f, 2.0)
        else:  # duodenum: a C-shaped tube around (cx, cz) in the x-z plane, open to the patient's left
            ring_radius, tube_radius, _ = semi
            d = np.hypot(xr - cx, zr - cz) - ring_radius * grow
            f = (d**2 + (yr - cy) ** 2) / tube_radius**2 + 0.5 * wobble
            f = np.where(xr >= cx - 0.3 * ring_radius, f, 2.0)
        label[(f < 1) & (tissue_class >= 1)] = organ_id

    values = _CT_BACKGROUND if modality == "CT" else _MR_BACKGROUND
    lut_bg = np.array([values["air"], values["fat"], values["tissue"], values["bone"]], dtype=np.float32)
    image = lut_bg[tissue_class]
    organ_value = np.zeros(AMOS_LABELS.num_classes, dtype=np.float32)
    for organ_id, _, _, _, hu, t1 in _ORGANS:
        organ_value[organ_id] = hu if modality == "CT" else t1
    image = np.where(label > 0, organ_value[label], image).astype(np.float32)
    image = ndimage.gaussian_filter(image, sigma=0.6)
    if modality == "CT":
        image = image + rng.normal(0, 12, size=shape)
        image = np.clip(np.round(image), -1024, 3071).astype(np.int16)
    else:
        bias = 1.0 + 0.25 * _smooth_field(rng, shape, coarse=3)
        image = image * bias * rng.uniform(0.8, 1.2)
        sigma = 20.0
        image = np.sqrt((image + rng.normal(0, sigma, shape)) ** 2 + rng.normal(0, sigma, shape) ** 2)
        image = np.clip(np.round(image), 0, 32767).astype(np.int16)

    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [a[0] for a in axes]
    if case_id % 2 == 0:  # store in LPS voxel order (as many DICOM conversions do)
        image, label = image[::-1, ::-1].copy(), label[::-1, ::-1].copy()
        flipped = affine.copy()
        flipped[:3, 0] *= -1
        flipped[:3, 1] *= -1
        flipped[:3, 3] = affine[:3, 3] + (shape[0] - 1) * affine[:3, 0] + (shape[1] - 1) * affine[:3, 1]
        affine = flipped
    return PhantomCase(image=image, label=label, affine=affine, modality=modality)


def write_synthetic_dataset(
    out: str | Path,
    n_train_ct: int = 16,
    n_train_mr: int = 4,
    n_val_ct: int = 4,
    n_val_mr: int = 2,
    n_test: int = 2,
    seed: int = 0,
    shape: tuple[int, int, int] = SYNTH_SHAPE,
    organs: tuple[str, ...] | None = None,
) -> Path:
    """Write an AMOS-layout synthetic dataset (imagesTr, labelsTr, imagesVa, labelsVa, imagesTs, dataset.json).

    ``organs`` keeps only those AMOS organs (official names, e.g. ``("spleen",)``), renumbered 1..k in the
    given order, all others become background: a smaller task (like MSD spleen) for fine-tuning.

    CT cases get ids 1, 2, ...; MRI cases ids 500, 501, ... (the AMOS rule). Existing identical files
    are rewritten atomically, so an interrupted call can simply be repeated.

    Returns:
        The dataset root.

    Long because it writes each split and the dataset.json in the official layout.
    """
    out = Path(out)
    ct_ids = iter(range(1, 500))
    mr_ids = iter(range(AMOS_MRI_FIRST_ID, 1000))
    plan = {
        "training": [next(ct_ids) for _ in range(n_train_ct)] + [next(mr_ids) for _ in range(n_train_mr)],
        "validation": [next(ct_ids) for _ in range(n_val_ct)] + [next(mr_ids) for _ in range(n_val_mr)],
        "test": [next(ct_ids) for _ in range(n_test)],
    }
    folders = {"training": ("imagesTr", "labelsTr"), "validation": ("imagesVa", "labelsVa"), "test": ("imagesTs", None)}
    labels_json = AMOS_LABELS.to_json()
    lut = None
    if organs is not None:
        ids = {name: i for i, name in AMOS_LABELS.names.items()}
        unknown = [o for o in organs if o not in ids]
        if unknown:
            raise ValueError(f"unknown AMOS organs {unknown}; known: {', '.join(list(ids)[1:])}")
        lut = np.zeros(len(AMOS_LABELS.names), dtype=np.uint8)
        for new_id, organ in enumerate(organs, start=1):
            lut[ids[organ]] = new_id
        labels_json = {"0": "background", **{str(i): o for i, o in enumerate(organs, start=1)}}
    entries: dict[str, list] = {k: [] for k in plan}
    for split, ids in plan.items():
        img_dir, lbl_dir = folders[split]
        for case_id in ids:
            case = make_phantom(case_id, seed=seed, shape=shape)
            name = f"amos_{case_id:04d}.nii.gz"
            save_nifti(case.image, case.affine, out / img_dir / name)
            if lbl_dir is None:
                entries[split].append(f"./{img_dir}/{name}")
                continue
            label = case.label if lut is None else lut[case.label]
            save_nifti(label, case.affine, out / lbl_dir / name)
            entries[split].append({"image": f"./{img_dir}/{name}", "label": f"./{lbl_dir}/{name}"})
    meta = {
        "name": "AMOS-synthetic",
        "description": f"amos-zoo synthetic phantom abdomens (seed {seed}); AMOS 2022 layout and label ids",
        "tensorImageSize": "3D",
        "reference": "amos-zoo",
        "licence": "CC-BY-SA 4.0",
        "release": "synthetic",
        "modality": {"0": "CT"},
        "labels": labels_json,
        "numTraining": len(entries["training"]),
        "numValidation": len(entries["validation"]),
        "numTest": len(entries["test"]),
        **entries,
    }
    write_json(out / "dataset.json", meta)
    return out
