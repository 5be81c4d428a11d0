"""amos-zoo predict: NIfTI files, folders, dataset.json and DICOM series back in the input's exact geometry;
bad inputs reported per case; finished cases skipped on rerun."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import pytorch_lightning as pl

from amos_zoo.cli.main import main
from amos_zoo.data.datamodule import SegmentationDataModule
from amos_zoo.infer.pipeline import load_predictor
from amos_zoo.infer.predictor import InputError, check_dicom_series
from amos_zoo.train.module import SegmentationModule


@pytest.fixture(scope="module")
def checkpoint(synth_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ckpt")
    pl.seed_everything(0)
    dm = SegmentationDataModule(
        str(synth_root), task="amos-ctmr", recipe="tiny", num_workers=0, cache_dir=str(tmp / "cache")
    )
    model = SegmentationModule(
        arch="unet",
        arch_kwargs={"channels": (8, 16, 32), "strides": (2, 2), "num_res_units": 1},
        num_classes=16,
        roi_size=dm.patch_size,
        label_names=dm.label_names,
        lr=3e-3,
        sw_batch_size=2,
    )
    trainer = pl.Trainer(
        max_steps=30,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(model, dm)
    path = tmp / "model.ckpt"
    trainer.save_checkpoint(path)
    return path


def _same_geometry(pred_path, input_path):
    pred, ref = nib.load(str(pred_path)), nib.load(str(input_path))
    assert pred.shape == ref.shape
    np.testing.assert_allclose(pred.affine, ref.affine, atol=1e-6)
    assert nib.aff2axcodes(pred.affine) == nib.aff2axcodes(ref.affine)
    data = np.asanyarray(pred.dataobj)
    assert data.dtype == np.uint8 and data.max() <= 15
    return data


def test_checkpoint_is_self_contained(checkpoint):
    predictor = load_predictor(checkpoint)  # weights-only load
    assert predictor.recipe.name == "tiny" and predictor.roi_size == (32, 32, 16)
    assert predictor.label_names[8] == "aorta" and predictor.in_channels == 1


def test_predict_folder_rerun_and_bad_inputs(checkpoint, synth_root, tmp_path, capsys):
    inputs = tmp_path / "in"
    shutil.copytree(synth_root / "imagesVa", inputs)
    out = tmp_path / "out"
    assert main(["predict", "--weights", str(checkpoint), "--input", str(inputs), "--out", str(out)]) == 0
    for src in sorted(inputs.glob("*.nii.gz")):
        _same_geometry(out / src.name, src)  # LPS- and RAS-stored inputs both come back as they were
        meta = json.loads((out / src.name.replace(".nii.gz", ".json")).read_text())
        assert meta["labels"]["9"] == "inferior vena cava" and meta["modality"] in ("CT", "MRI")
    assert "predicted 3 case(s)" in capsys.readouterr().out

    # rerun: nothing to do; a corrupt file and a 4D file are reported, the good new case is predicted
    (inputs / "amos_0900.nii.gz").write_bytes((inputs / "amos_0004.nii.gz").read_bytes()[:200])
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 2), np.int16), np.eye(4)), str(inputs / "amos_0901.nii.gz"))
    shutil.copy(synth_root / "imagesTs" / "amos_0006.nii.gz", inputs / "amos_0006.nii.gz")
    assert main(["predict", "--weights", str(checkpoint), "--input", str(inputs), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "skipped 3 already finished" in captured.out and "predicted 1 case(s)" in captured.out
    assert "amos_0900" in captured.err and "cannot read" in captured.err
    assert "amos_0901" in captured.err and "channel" in captured.err
    assert (out / "amos_0006.nii.gz").is_file() and not (out / "amos_0900.nii.gz").exists()
    assert not list(out.glob(".*")), "no temporary files left behind"


def test_predict_dataset_json_split_with_tta(checkpoint, synth_root, tmp_path):
    out = tmp_path / "out"
    assert (
        main(
            [
                "predict",
                "--weights",
                str(checkpoint),
                "--input",
                str(synth_root / "dataset.json"),
                "--split",
                "test",
                "--out",
                str(out),
                "--tta",
                "--save_probabilities",
            ]
        )
        == 0
    )
    _same_geometry(out / "amos_0006.nii.gz", synth_root / "imagesTs" / "amos_0006.nii.gz")
    probs = np.load(out / "amos_0006_probabilities.npz")["probabilities"]
    assert probs.shape[0] == 16 and np.allclose(probs.astype(np.float32).sum(0), 1.0, atol=1e-2)


def test_predict_real_ct(checkpoint, shared_data, tmp_path):
    image = shared_data / "ct_example" / "image.nii.gz"
    assert main(["predict", "--weights", str(checkpoint), "--input", str(image), "--out", str(tmp_path)]) == 0
    _same_geometry(tmp_path / "image.nii.gz", image)


def _write_dicom_series(nifti_path, folder, series_uid=None):
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    img = nib.load(str(nifti_path))
    data = np.asanyarray(img.dataobj).astype(np.int16)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine
    sx, sy = np.linalg.norm(lps[:3, 0]), np.linalg.norm(lps[:3, 1])
    row_dir, col_dir = lps[:3, 0] / sx, lps[:3, 1] / sy
    series_uid = series_uid or generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(data.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"slice_{k:03d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID = "CT", series_uid, "1.2.3"
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [float(v) for v in (lps @ np.array([0, 0, k, 1.0]))[:3]]
        ds.ImageOrientationPatient = [float(v) for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [float(sy), float(sx)]
        ds.SliceThickness = float(np.linalg.norm(lps[:3, 2]))
        ds.Rows, ds.Columns = data.shape[1], data.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = np.ascontiguousarray(data[:, :, k].T).tobytes()
        pydicom.dcmwrite(str(folder / f"slice_{k:03d}.dcm"), ds, enforce_file_format=True)


def test_dicom_series_predicts_like_its_nifti(checkpoint, synth_root, tmp_path):
    nifti = synth_root / "imagesVa" / "amos_0005.nii.gz"
    series = tmp_path / "dicom" / "amos_0005"
    _write_dicom_series(nifti, series)
    assert main(["predict", "--weights", str(checkpoint), "--input", str(series), "--out", str(tmp_path / "d")]) == 0
    assert main(["predict", "--weights", str(checkpoint), "--input", str(nifti), "--out", str(tmp_path / "n")]) == 0
    from_dicom = nib.as_closest_canonical(nib.load(str(tmp_path / "d" / "amos_0005.nii.gz")))
    from_nifti = nib.as_closest_canonical(nib.load(str(tmp_path / "n" / "amos_0005.nii.gz")))
    assert from_dicom.shape == from_nifti.shape
    np.testing.assert_allclose(from_dicom.affine, from_nifti.affine, atol=1e-3)
    agreement = np.mean(np.asanyarray(from_dicom.dataobj) == np.asanyarray(from_nifti.dataobj))
    assert agreement >= 0.999

    mixed = tmp_path / "mixed"
    _write_dicom_series(nifti, mixed / "a")
    _write_dicom_series(nifti, mixed / "b")
    for f in (mixed / "b").iterdir():
        f.rename(mixed / "a" / f"b_{f.name}")
    with pytest.raises(InputError, match="2 DICOM series"):
        check_dicom_series(mixed / "a")
