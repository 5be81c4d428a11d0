"""nnU-Net v2 interop: AMOS and MSD layouts to nnU-Net raw data and back, geometry and values unchanged; our
index reads the converted folder; `amos-zoo evaluate` scores an nnU-Net prediction folder."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np

from amos_zoo.cli.main import main
from amos_zoo.data.index import load_index
from amos_zoo.data.msd import write_msd_dataset


def _same(a, b):
    x, y = nib.load(a), nib.load(b)
    np.testing.assert_array_equal(np.asanyarray(x.dataobj), np.asanyarray(y.dataobj))
    np.testing.assert_allclose(x.affine, y.affine)


def test_amos_to_nnunet_and_back(synth_root, tmp_path):
    assert main(["convert", "to-nnunet", "--data", str(synth_root), "--out", str(tmp_path / "raw")]) == 0
    root = tmp_path / "raw" / "Dataset501_AMOS-synthetic"
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["labels"]["arota"] == 8 and meta["channel_names"] == {"0": "CT"} and meta["numTraining"] == 4
    original = load_index(synth_root)
    first = original.split("training")[0]
    _same(first.images[0], root / "imagesTr" / f"{first.case_id}_0000.nii.gz")
    _same(first.label, root / "labelsTr" / f"{first.case_id}.nii.gz")
    val = original.split("validation")[0]
    _same(val.label, root / "labelsTs" / f"{val.case_id}.nii.gz")  # official validation -> imagesTs + labelsTs

    converted = load_index(root)  # our index reads nnU-Net raw data directly
    assert converted.layout == "nnunet" and converted.labels == original.labels
    assert {c.modality for c in converted.split("training")} == {"CT", "MRI"}  # AMOS id rule kept

    assert main(["convert", "from-nnunet", "--data", str(root), "--out", str(tmp_path / "back")]) == 0
    back = load_index(tmp_path / "back")
    assert [c.case_id for c in back.split("training")] == sorted(c.case_id for c in original.split("training"))
    _same(first.images[0], tmp_path / "back" / "imagesTr" / f"{first.case_id}.nii.gz")


def test_multichannel_msd_to_nnunet_and_back(tmp_path):
    src = write_msd_dataset(tmp_path / "prostate", "Task05_Prostate", n_train=2, n_test=1)
    assert main(["convert", "to-nnunet", "--data", str(src), "--out", str(tmp_path / "raw"), "--dataset_id", "5"]) == 0
    root = tmp_path / "raw" / "Dataset005_Prostate"
    four_d = nib.load(src / "imagesTr" / "prostate_001.nii.gz")
    for c in range(2):
        channel = nib.load(root / "imagesTr" / f"prostate_001_{c:04d}.nii.gz")
        assert channel.ndim == 3
        np.testing.assert_array_equal(np.asanyarray(channel.dataobj), np.asanyarray(four_d.dataobj)[..., c])
    assert json.loads((root / "dataset.json").read_text())["channel_names"] == {"0": "T2", "1": "ADC"}
    assert main(["convert", "from-nnunet", "--data", str(root), "--out", str(tmp_path / "back")]) == 0
    _same(src / "imagesTr" / "prostate_001.nii.gz", tmp_path / "back" / "imagesTr" / "prostate_001.nii.gz")


def test_evaluate_reads_an_nnunet_prediction_folder(synth_root, tmp_path):
    main(["convert", "to-nnunet", "--data", str(synth_root), "--out", str(tmp_path / "raw")])
    root = tmp_path / "raw" / "Dataset501_AMOS-synthetic"
    pred = tmp_path / "nnunet_pred"  # what nnUNetv2_predict writes: <case>.nii.gz plus its JSON files
    shutil.copytree(root / "labelsTs", pred)
    (pred / "plans.json").write_text("{}")
    (pred / "dataset.json").write_text("{}")
    (pred / "predict_from_raw_data_args.json").write_text("{}")
    out = tmp_path / "eval"
    assert (
        main(["evaluate", "--pred", str(pred), "--gt", str(root / "labelsTs"), "--out", str(out), "--workers", "1"])
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["all"]["cases"] == 3 and summary["all"]["overall"]["dice"] == 1.0
