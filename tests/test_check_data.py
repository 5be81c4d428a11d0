"""amos-zoo check-data: every kind of bad input is reported with the file, the problem and the fix."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np

from amos_zoo.cli.main import main
from amos_zoo.data.check import check_dataset


def test_clean_synthetic_dataset_has_no_problems(synth_root, capsys):
    assert check_dataset(synth_root, workers=2, progress=False) == []
    assert main(["check-data", "--data", str(synth_root), "--workers", "1"]) == 0
    assert "no problems found" in capsys.readouterr().out


def test_every_problem_is_reported(synth_root, tmp_path, capsys):
    root = tmp_path / "bad"
    shutil.copytree(synth_root, root, ignore=shutil.ignore_patterns(".amos_zoo_cache"))
    tr = root / "imagesTr"
    lb = root / "labelsTr"
    # truncated image
    (tr / "amos_0001.nii.gz").write_bytes((tr / "amos_0001.nii.gz").read_bytes()[:300])
    # label with a value outside the label map and NaN intensities in the image
    img = nib.load(str(tr / "amos_0002.nii.gz"))
    data = np.asanyarray(img.dataobj).astype(np.float32)
    data[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine), str(tr / "amos_0002.nii.gz"))
    lab = nib.load(str(lb / "amos_0002.nii.gz"))
    ldata = np.asanyarray(lab.dataobj).copy()
    ldata[1, 1, 1] = 42
    nib.save(nib.Nifti1Image(ldata, lab.affine), str(lb / "amos_0002.nii.gz"))
    # label on another grid (affine) and a 4D image where 3D is expected
    lab3 = nib.load(str(lb / "amos_0003.nii.gz"))
    nib.save(
        nib.Nifti1Image(np.asanyarray(lab3.dataobj), lab3.affine @ np.diag([2, 1, 1, 1])), str(lb / "amos_0003.nii.gz")
    )
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 2), np.int16), np.eye(4)), str(tr / "amos_0500.nii.gz"))
    # a label on a different voxel grid (shape)
    va = nib.load(str(root / "labelsVa" / "amos_0004.nii.gz"))
    nib.save(nib.Nifti1Image(np.asanyarray(va.dataobj)[:-2], va.affine), str(root / "labelsVa" / "amos_0004.nii.gz"))
    # a listed file that does not exist
    meta = json.loads((root / "dataset.json").read_text())
    meta["validation"].append({"image": "./imagesVa/amos_0999.nii.gz", "label": "./labelsVa/amos_0999.nii.gz"})
    (root / "dataset.json").write_text(json.dumps(meta))

    problems = check_dataset(root, workers=2, progress=False)
    text = "\n".join(str(p) for p in problems)
    assert "amos_0001.nii.gz: cannot be read" in text
    assert "amos_0002.nii.gz: contains 1 NaN or infinite values" in text
    assert "label values [42] are not in the label map" in text
    assert "amos_0003.nii.gz: affine differs from its image" in text
    assert "amos_0500.nii.gz: is 4D" in text
    assert "amos_0004.nii.gz: shape (78, 64, 40) differs from its image amos_0004.nii.gz (80, 64, 40)" in text
    assert "amos_0999.nii.gz: file listed in dataset.json does not exist" in text
    assert all(p.fix for p in problems)
    assert main(["check-data", "--data", str(root), "--workers", "1"]) == 1
    out = capsys.readouterr().out
    assert "problem(s)" in out and "fix:" in out


def test_index_problems_and_empty_split(synth_root, tmp_path):
    root = tmp_path / "dup"
    shutil.copytree(synth_root, root, ignore=shutil.ignore_patterns(".amos_zoo_cache"))
    meta = json.loads((root / "dataset.json").read_text())
    meta["test"] = []
    (root / "dataset.json").write_text(json.dumps(meta))
    assert [p.problem for p in check_dataset(root, workers=1, progress=False)] == ["split 'test' is empty"]
    meta["training"].append(meta["training"][0])
    (root / "dataset.json").write_text(json.dumps(meta))
    problems = check_dataset(root, workers=1, progress=False)
    assert len(problems) == 1 and "listed twice" in problems[0].problem


def test_msd_channels_checked(tmp_path):
    import nibabel as nib
    import numpy as np

    root = tmp_path / "msd"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    affine = np.diag([0.6, 0.6, 3.6, 1.0])
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4, 2), np.float32), affine), str(root / "imagesTr" / "p_00.nii.gz"))
    nib.save(nib.Nifti1Image(np.ones((8, 8, 4), np.float32), affine), str(root / "imagesTr" / "p_01.nii.gz"))
    for case in ("p_00", "p_01"):
        nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.uint8), affine), str(root / "labelsTr" / f"{case}.nii.gz"))
    meta = {
        "modality": {"0": "T2", "1": "ADC"},
        "labels": {"0": "background", "1": "PZ", "2": "TZ"},
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in ("p_00", "p_01")],
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    problems = check_dataset(root, workers=1, progress=False)
    assert len(problems) == 1
    assert (
        problems[0].file.endswith("p_01.nii.gz") and "is 3D but the dataset declares 2 channels" in problems[0].problem
    )
