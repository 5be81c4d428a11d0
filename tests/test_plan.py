"""The fingerprint and plan equal nnU-Net's own: target spacing, foreground intensity statistics, normalised
intensities of a case and the 5-fold split, computed by nnunetv2 2.8 (and nnunet 1.7.1, the AMOS fork's base) on the
synthetic dataset converted with `amos-zoo convert to-nnunet`. nnU-Net runs in a subprocess (its paths are read from
the environment at import)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import nibabel as nib
import numpy as np
import pytest
import torch

from amos_zoo.data.convert import to_nnunet
from amos_zoo.data.folds import crossval_split
from amos_zoo.data.plan import dataset_fingerprint, target_spacing
from amos_zoo.data.synth import write_synthetic_dataset
from amos_zoo.data.transforms import ModalityNormalized

pytest.importorskip("nnunetv2")


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """Synthetic AMOS CT + MRI cases, anisotropic and half of them LPS-stored, as nnU-Net v2 raw data."""
    tmp = tmp_path_factory.mktemp("plan")
    root = write_synthetic_dataset(tmp / "amos", n_train_ct=5, n_train_mr=2, n_val_ct=0, n_val_mr=0, n_test=0, seed=3)
    dataset = to_nnunet(root, tmp / "nnUNet_raw", dataset_id=777, name="Plan")
    return root, dataset, tmp


def _cases(root):
    from amos_zoo.data.index import load_index

    return [(c.case_id, [str(p) for p in c.images], str(c.label)) for c in load_index(root).split("training")]


NNUNET_V2 = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
    from nnunetv2.preprocessing.normalization.default_normalization_schemes import CTNormalization, ZScoreNormalization
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    if __name__ == '__main__':

        raw, out, case_image = sys.argv[1], sys.argv[2], sys.argv[3]
        fp = DatasetFingerprintExtractor(777, num_processes=1).run(overwrite_existing=True)
        planner = ExperimentPlanner(777)
        spacing = planner.determine_fullres_target_spacing()
        schemes, masks = planner.determine_normalization_scheme_and_whether_mask_is_used_for_norm()
        rw = determine_reader_writer_from_dataset_json(json.load(open(raw + "/dataset.json")), case_image)()
        image, _ = rw.read_images([case_image])
        props = fp["foreground_intensity_properties_per_channel"][0]
        ct = CTNormalization(use_mask_for_norm=False, intensityproperties=props)
        zscore = ZScoreNormalization(use_mask_for_norm=False, intensityproperties=props)
        np.save(out + "/ct.npy", ct.run(image[0].copy()))
        np.save(out + "/zscore.npy", zscore.run(image[0].copy()))
        json.dump({"fingerprint": fp, "spacing": [float(s) for s in spacing], "schemes": schemes, "masks": masks,
                   "split": generate_crossval_split([f"amos_{i:04d}" for i in range(1, 31)], seed=12345, n_splits=5)},
                  open(out + "/nnunet.json", "w"))
    """
)


def test_fingerprint_plan_and_normalisation_equal_nnunet_v2(raw):
    root, dataset, tmp = raw
    out = tmp / "v2"
    out.mkdir()
    env = {
        **os.environ,
        "nnUNet_raw": str(dataset.parent),
        "nnUNet_preprocessed": str(tmp / "pre"),
        "nnUNet_results": str(tmp / "res"),
    }
    case_image = str(dataset / "imagesTr" / "amos_0002_0000.nii.gz")  # LPS-stored: nnU-Net reorients it to RAS
    script = tmp / "nnunet_v2.py"
    script.write_text(NNUNET_V2)
    done = subprocess.run(
        [sys.executable, str(script), str(dataset), str(out), case_image], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = json.loads((out / "nnunet.json").read_text())

    ours = dataset_fingerprint(_cases(root), "nnunet-v2", workers=1, progress=False)
    # spacings and cropped shapes: nnU-Net's (z, y, x) against amos-zoo's (x, y, z)
    assert [list(s) for s in ours.spacings] == [list(s)[::-1] for s in theirs["fingerprint"]["spacings"]]
    assert [list(s) for s in ours.shapes_after_crop] == [
        list(s)[::-1] for s in theirs["fingerprint"]["shapes_after_crop"]
    ]
    stats = theirs["fingerprint"]["foreground_intensity_properties_per_channel"]["0"]
    for key, value in ours.intensity[0].items():
        assert value == pytest.approx(stats[key], abs=1e-6), key
    np.testing.assert_allclose(
        target_spacing(ours.spacings, ours.shapes_after_crop), theirs["spacing"][::-1], atol=1e-6
    )
    assert theirs["schemes"] == ["CTNormalization"]  # the converter names the channel CT, as nnU-Net's AMOS Task 1

    # the normalised intensities of a case: nnU-Net's CTNormalization / ZScoreNormalization on its (z, y, x) array
    image = nib.as_closest_canonical(nib.load(case_image))
    data = torch.from_numpy(np.asarray(image.dataobj, dtype=np.float32))[None]
    s = ours.intensity[0]
    ct = ModalityNormalized(
        ["image"],
        ct_normalization="nnunet",
        intensity_stats=[(s["percentile_00_5"], s["percentile_99_5"], s["mean"], s["std"])],
    )({"image": data, "modality": "CT"})["image"][0].numpy()
    np.testing.assert_allclose(ct.transpose(2, 1, 0), np.load(out / "ct.npy"), atol=1e-6)
    z = ModalityNormalized(["image"], ct_normalization="zscore")({"image": data, "modality": "CT"})["image"][0].numpy()
    np.testing.assert_allclose(z.transpose(2, 1, 0), np.load(out / "zscore.npy"), atol=1e-5)

    # nnU-Net's 5-fold split of the same identifiers
    ids = [f"amos_{i:04d}" for i in range(1, 31)]
    assert crossval_split(ids) == theirs["split"]


NNUNET_V1 = textwrap.dedent(
    """
    import json, pickle, shutil, sys
    from nnunet.preprocessing.cropping import ImageCropper
    from nnunet.experiment_planning.DatasetAnalyzer import DatasetAnalyzer
    from nnunet.experiment_planning.experiment_planner_baseline_3DUNet_v21 import ExperimentPlanner3D_v21

    if __name__ == '__main__':

        raw, cropped, pre = sys.argv[1], sys.argv[2], sys.argv[3]
        meta = json.load(open(raw + "/dataset.json"))
        cases = sorted({f.name[: -len("_0000.nii.gz")] for f in __import__("pathlib").Path(raw, "imagesTr").iterdir()})
        lists = [[f"{raw}/imagesTr/{c}_0000.nii.gz", f"{raw}/labelsTr/{c}.nii.gz"] for c in cases]
        ImageCropper(1, cropped).run_cropping(lists, overwrite_existing=True)
        v1_json = {"modality": {"0": "CT"}, "labels": {str(v): k for k, v in meta["labels"].items()},
                   "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in cases],
                   "numTraining": len(cases)}
        json.dump(v1_json, open(cropped + "/dataset.json", "w"))
        props = DatasetAnalyzer(cropped, overwrite=True, num_processes=1).analyze_dataset()
        planner = ExperimentPlanner3D_v21(cropped, pre)
        spacing = planner.get_target_spacing()
        ip = props["intensityproperties"][0]
        json.dump({"spacings": [list(map(float, s)) for s in props["all_spacings"]],
                   "sizes": [list(map(int, s)) for s in props["all_sizes"]],
                   "spacing": [float(s) for s in spacing],
                   "stats": {k: float(ip[k]) for k in ip if k != "local_props"}},
                  open(pre + "/v1.json", "w"))
    """
)


def test_fingerprint_and_plan_equal_nnunet_v1(raw):
    pytest.importorskip("nnunet")
    root, dataset, tmp = raw
    cropped, pre = tmp / "v1_cropped", tmp / "v1_pre"
    cropped.mkdir()
    pre.mkdir()
    env = {**os.environ, "nnUNet_raw_data_base": str(tmp / "v1_base"), "nnUNet_preprocessed": str(pre)}
    script = tmp / "nnunet_v1.py"
    script.write_text(NNUNET_V1)
    done = subprocess.run(
        [sys.executable, str(script), str(dataset), str(cropped), str(pre)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = json.loads((pre / "v1.json").read_text())

    ours = dataset_fingerprint(_cases(root), "nnunet-v1", workers=1, progress=False)
    assert [list(s) for s in ours.spacings] == [s[::-1] for s in theirs["spacings"]]
    assert [list(s) for s in ours.shapes_after_crop] == [s[::-1] for s in theirs["sizes"]]
    names = {"mean": "mean", "std": "sd", "median": "median", "min": "mn", "max": "mx"}
    for key, value in ours.intensity[0].items():
        assert value == pytest.approx(theirs["stats"][names.get(key, key)], abs=1e-6), key
    np.testing.assert_allclose(
        target_spacing(ours.spacings, ours.shapes_after_crop), theirs["spacing"][::-1], atol=1e-6
    )


def test_anisotropy_rule():
    """A coarse, short z axis takes the 10th percentile of its spacings (else the median)."""
    spacings = [(0.7, 0.7, z) for z in (2.5, 3.0, 5.0, 5.0, 5.0)]
    sizes = [(512, 512, 40)] * 5
    assert target_spacing(spacings, sizes) == pytest.approx((0.7, 0.7, np.percentile([2.5, 3.0, 5.0, 5.0, 5.0], 10)))
    assert target_spacing(spacings, [(512, 512, 400)] * 5) == pytest.approx((0.7, 0.7, 5.0))  # enough slices: median
