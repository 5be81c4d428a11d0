"""Dataset indexes: the official AMOS dataset.json, MSD (4D multi-channel) and nnU-Net v2 layouts."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from amos_zoo.data.index import DatasetError, load_index, select_task_cases
from amos_zoo.data.labels import AMOS_LABELS, LabelMap, amos_modality

OFFICIAL_LABELS = {
    "0": "background",
    "1": "spleen",
    "2": "right kidney",
    "3": "left kidney",
    "4": "gall bladder",
    "5": "esophagus",
    "6": "liver",
    "7": "stomach",
    "8": "arota",
    "9": "postcava",
    "10": "pancreas",
    "11": "right adrenal gland",
    "12": "left adrenal gland",
    "13": "duodenum",
    "14": "bladder",
    "15": "prostate/uterus",
}


def _touch(path, shape=(4, 4, 4)):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros(shape, np.int16), np.eye(4)), str(path))


def _amos_json(root, train_ids, val_ids, test_ids):
    meta = {
        "name": "AMOS",
        "modality": {"0": "CT"},
        "labels": OFFICIAL_LABELS,
        "training": [
            {"image": f"./imagesTr/amos_{i:04d}.nii.gz", "label": f"./labelsTr/amos_{i:04d}.nii.gz"} for i in train_ids
        ],
        "validation": [
            {"image": f"./imagesVa/amos_{i:04d}.nii.gz", "label": f"./labelsVa/amos_{i:04d}.nii.gz"} for i in val_ids
        ],
        "test": [f"./imagesTs/amos_{i:04d}.nii.gz" for i in test_ids],
    }
    (root / "dataset.json").write_text(json.dumps(meta))


def test_official_amos_labels_keep_spelling_and_show_readable_names():
    assert AMOS_LABELS.names[8] == "arota" and AMOS_LABELS.names[9] == "postcava"
    assert AMOS_LABELS.display_name(8) == "aorta"
    assert AMOS_LABELS.display_name(9) == "inferior vena cava"
    assert AMOS_LABELS.num_classes == 16
    assert LabelMap.from_json(OFFICIAL_LABELS) == AMOS_LABELS


def test_amos_modality_rule():
    assert [amos_modality(i) for i in (1, 499, 500, 600)] == ["CT", "CT", "MRI", "MRI"]


def test_amos_dataset_json_tasks_and_splits(tmp_path):
    _amos_json(tmp_path, [1, 2, 507], [3, 540], [5000])
    index = load_index(tmp_path)
    assert index.labels == AMOS_LABELS
    assert [c.case_id for c in index.split("training")] == ["amos_0001", "amos_0002", "amos_0507"]
    assert [c.modality for c in index.split("training")] == ["CT", "CT", "MRI"]
    assert [c.case_id for c in select_task_cases(index, "training", "amos-ct")] == ["amos_0001", "amos_0002"]
    assert [c.case_id for c in select_task_cases(index, "validation", "amos-ctmr")] == ["amos_0003", "amos_0540"]
    assert [c.case_id for c in select_task_cases(index, "validation", "amos-mr")] == ["amos_0540"]
    assert index.split("test")[0].label is None
    assert index.split("training")[0].images[0] == (tmp_path / "imagesTr" / "amos_0001.nii.gz").resolve()
    override = load_index(tmp_path, modality_override={"amos_0507": "CT"})
    assert override.split("training")[2].modality == "CT"


def test_msd_multichannel_dataset_json(tmp_path):
    meta = {
        "name": "Prostate",
        "modality": {"0": "T2", "1": "ADC"},
        "labels": {"0": "background", "1": "PZ", "2": "TZ"},
        "training": [{"image": "./imagesTr/prostate_00.nii.gz", "label": "./labelsTr/prostate_00.nii.gz"}],
        "test": ["./imagesTs/prostate_03.nii.gz"],
    }
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    index = load_index(tmp_path)
    assert index.num_channels == 2 and index.channel_names == ["T2", "ADC"]
    assert index.labels.num_classes == 3
    assert index.split("training")[0].modality == "MRI"
    assert "validation" not in index.splits


def test_nnunet_v2_layout(tmp_path):
    meta = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "spleen": 1},
        "numTraining": 2,
        "file_ending": ".nii.gz",
    }
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    for case in ("spl_001", "spl_002"):
        _touch(tmp_path / "imagesTr" / f"{case}_0000.nii.gz")
        _touch(tmp_path / "labelsTr" / f"{case}.nii.gz")
    index = load_index(tmp_path)
    assert index.layout == "nnunet"
    assert index.labels.names == {0: "background", 1: "spleen"}
    cases = index.split("training")
    assert [c.case_id for c in cases] == ["spl_001", "spl_002"]
    assert cases[0].images[0].name == "spl_001_0000.nii.gz" and cases[0].label.name == "spl_001.nii.gz"


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda m: m["training"].append(dict(m["training"][0])), "listed twice"),
        (lambda m: m["training"].append({"image": "../../etc/passwd"}), "escapes the dataset root"),
        (lambda m: m.pop("labels"), "no 'labels'"),
        (lambda m: m.__setitem__("training", {"a": 1}), "must be a list"),
    ],
)
def test_bad_dataset_json_errors_name_file_and_problem(tmp_path, mutate, message):
    _amos_json(tmp_path, [1], [2], [])
    meta = json.loads((tmp_path / "dataset.json").read_text())
    mutate(meta)
    (tmp_path / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match=message) as err:
        load_index(tmp_path)
    assert "dataset.json" in str(err.value)


def test_malformed_json_and_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_index(tmp_path)
    (tmp_path / "dataset.json").write_text("{ not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_index(tmp_path)
