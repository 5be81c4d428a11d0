"""The synthetic phantom dataset: AMOS layout, all 15 organs at plausible places, deterministic."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np

from amos_zoo.data.index import load_index
from amos_zoo.data.labels import AMOS_LABELS
from amos_zoo.data.synth import make_phantom


def _world_centroid(img_path, lbl_path, organ):
    lbl = nib.load(str(lbl_path))
    idx = np.argwhere(np.asanyarray(lbl.dataobj) == organ).mean(0)
    return nib.affines.apply_affine(lbl.affine, idx)


def test_layout_and_official_json(synth_root):
    meta = json.loads((synth_root / "dataset.json").read_text())
    assert meta["labels"]["8"] == "arota" and meta["labels"]["9"] == "postcava"
    assert meta["numTraining"] == 4 and meta["numValidation"] == 3 and meta["numTest"] == 1
    for folder in ("imagesTr", "labelsTr", "imagesVa", "labelsVa", "imagesTs"):
        assert any((synth_root / folder).iterdir())
    index = load_index(synth_root)
    assert [c.modality for c in index.split("training")] == ["CT", "CT", "CT", "MRI"]
    assert index.split("training")[3].case_id == "amos_0500"


def test_all_organs_present_with_plausible_anatomy(synth_root):
    img = synth_root / "imagesTr" / "amos_0001.nii.gz"
    lbl = synth_root / "labelsTr" / "amos_0001.nii.gz"
    labels = np.asanyarray(nib.load(str(lbl)).dataobj)
    assert set(np.unique(labels)) == set(range(16))
    c = {k: _world_centroid(img, lbl, k) for k in range(1, 16)}
    assert c[6][0] > 0 > c[1][0], "liver on the patient's right (+x in RAS), spleen on the left"
    assert c[2][0] > 0 > c[3][0], "right kidney right, left kidney left"
    assert c[2][1] < c[10][1] and c[3][1] < c[10][1], "kidneys posterior to the pancreas"
    assert c[8][0] < c[9][0], "aorta left of the inferior vena cava"
    assert c[14][2] < c[10][2] < c[6][2], "bladder low, liver high"
    assert c[11][2] > c[2][2] and c[12][2] > c[3][2], "adrenal glands above the kidneys"


def test_ct_and_mri_intensities_and_geometry(synth_root):
    ct = nib.load(str(synth_root / "imagesTr" / "amos_0001.nii.gz"))
    mr = nib.load(str(synth_root / "imagesTr" / "amos_0500.nii.gz"))
    ct_lbl = np.asanyarray(nib.load(str(synth_root / "labelsTr" / "amos_0001.nii.gz")).dataobj)
    ct_data = np.asanyarray(ct.dataobj)
    assert ct_data.dtype == np.int16 and ct_data.min() < -900  # air in HU
    assert 30 < np.median(ct_data[ct_lbl == 6]) < 90  # liver about 60 HU
    assert np.asanyarray(mr.dataobj).min() >= 0
    zooms = ct.header.get_zooms()
    assert zooms[2] > zooms[0] * 1.2, "anisotropic: thicker slices"
    assert nib.aff2axcodes(mr.affine) == ("L", "P", "S")  # even ids are stored in LPS voxel order
    assert nib.aff2axcodes(ct.affine) == ("R", "A", "S")


def test_deterministic_per_seed():
    a, b, c = make_phantom(7, seed=1), make_phantom(7, seed=1), make_phantom(7, seed=2)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
    assert not np.array_equal(a.label, c.label)
    assert AMOS_LABELS.num_classes == 16
