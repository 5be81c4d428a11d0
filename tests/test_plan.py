"""The fingerprint and plan equal nnU-Net's own: target spacing, foreground intensity statistics, normalised
intensities of a case and the 5-fold split, computed by nnunetv2 2.8 (and nnunet 1.7.1, the AMOS fork's base) on the
synthetic dataset converted with `amos-zoo convert to-nnunet`. nnU-Net runs in a process of its own, forked before it
is imported (tests/forked.py: its paths are read from the environment at import)."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from forked import run_script

from amos_zoo.data.convert import to_nnunet
from amos_zoo.data.folds import crossval_split
from amos_zoo.data.plan import dataset_fingerprint, plan_3d_fullres, target_spacing
from amos_zoo.data.synth import write_synthetic_dataset
from amos_zoo.data.transforms import ModalityNormalized
from amos_zoo.models.nnunet import default_architecture

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
    done = run_script(script, [str(dataset), str(out), case_image], env=env)  # tests/forked.py
    assert done.returncode == 0, done.stdout[-3000:]
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
    done = run_script(script, [str(dataset), str(cropped), str(pre)], env=env)  # tests/forked.py
    assert done.returncode == 0, done.stdout[-3000:]
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


# ---- the whole 3d_fullres configuration against nnunetv2's ExperimentPlanner ------------------------------------
NNUNET_V2_PLANNER = textwrap.dedent(
    """
    import json, os, sys
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    import torch
    from nnunetv2.experiment_planning.experiment_planners import default_experiment_planner as planner_module

    def on_meta_device(*args, **kwargs):  # the VRAM estimate is arithmetic on shapes: no weights needed (faster)
        with torch.device("meta"):
            return build(*args, **kwargs)

    if __name__ == '__main__':
        ExperimentPlanner.determine_reader_writer = lambda self: SimpleITKIO  # no image files: synthetic fingerprints
        build, planner_module.get_network_from_plans = planner_module.get_network_from_plans, on_meta_device
        raw, pre = os.environ["nnUNet_raw"], os.environ["nnUNet_preprocessed"]
        tasks, out = json.load(open(sys.argv[1])), {}
        for i, task in enumerate(tasks):
            name = f"Dataset{900 + i:03d}_{task['name']}"
            os.makedirs(f"{pre}/{name}", exist_ok=True)
            if "fingerprint" in task:
                json.dump(task["dataset_json"], open(f"{raw}/{name}/dataset.json", "w"))
                json.dump(task["fingerprint"], open(f"{pre}/{name}/dataset_fingerprint.json", "w"))
            else:  # real images: nnU-Net's own fingerprint (fewer intensity samples, the same seed)
                extractor = DatasetFingerprintExtractor(900 + i, num_processes=1)
                extractor.num_foreground_voxels_for_intensitystats = task["samples"]
                extractor.run(overwrite_existing=True)
            plans = ExperimentPlanner(900 + i).plan_experiment()
            fingerprint = json.load(open(f"{pre}/{name}/dataset_fingerprint.json"))
            out[task["name"]] = {"plans": plans, "fingerprint": fingerprint}
        json.dump(out, open(sys.argv[2], "w"))
    """
)

AMOS_LABELS = {"background": 0, **{f"organ_{i}": i for i in range(1, 16)}}


def _synthetic_fingerprint(spacings_xyz, shapes_xyz, relative_size=0.9):
    """An nnU-Net v2 dataset_fingerprint.json (its (z, y, x) order) for per-case spacings and cropped shapes."""
    return {
        "spacings": [list(map(float, s[::-1])) for s in spacings_xyz],
        "shapes_after_crop": [list(map(int, s[::-1])) for s in shapes_xyz],
        "median_relative_size_after_cropping": relative_size,
        "foreground_intensity_properties_per_channel": {
            "0": {
                "mean": 50.0,
                "median": 45.0,
                "std": 80.0,
                "min": -1000.0,
                "max": 2000.0,
                "percentile_00_5": -900.0,
                "percentile_99_5": 400.0,
            }
        },
    }


def _dataset_json(channel_names, n):
    return {
        "channel_names": {str(i): c for i, c in enumerate(channel_names)},
        "labels": AMOS_LABELS,
        "numTraining": n,
        "file_ending": ".nii.gz",
        "dataset": {"case": {"images": ["imagesTr/case_0000.nii.gz"], "label": "labelsTr/case.nii.gz"}},
    }


def _planner_tasks():
    """Synthetic fingerprints (isotropic, AMOS-like anisotropic CT, mixed CT + MRI with a small non-zero region)."""
    rng = np.random.RandomState(0)
    iso = [tuple(rng.uniform(0.9, 1.1, 3).round(3)) for _ in range(20)]
    iso_shapes = [tuple(rng.randint(150, 260, 3)) for _ in range(20)]
    amos = [(*(rng.uniform(0.6, 0.9),) * 2, float(rng.choice([5.0, 5.0, 5.0, 2.5, 1.25]))) for _ in range(40)]
    amos_shapes = [(512, 512, int(round(rng.uniform(300, 500) / s[2]))) for s in amos]
    mr = [(*(rng.uniform(1.1, 1.6),) * 2, float(rng.uniform(3.0, 8.0))) for _ in range(12)]
    mr_shapes = [(int(rng.randint(256, 400)), int(rng.randint(200, 320)), int(rng.randint(50, 90))) for _ in mr]
    return [
        {"name": "Iso", "spacings": iso, "shapes": iso_shapes, "channels": ["CT"], "relative": 0.9},
        {"name": "AmosCT", "spacings": amos, "shapes": amos_shapes, "channels": ["CT"], "relative": 0.95},
        {
            "name": "AmosCTMR",
            "spacings": amos[:30] + mr,
            "shapes": amos_shapes[:30] + mr_shapes,
            "channels": ["either_CT_or_MR"],
            "relative": 0.6,
        },
    ]


@pytest.fixture(scope="module")
def nnunet_plans(tmp_path_factory):
    """nnunetv2's plans for the synthetic fingerprints and for the real CT (its fingerprint extracted by nnU-Net)."""
    tmp = tmp_path_factory.mktemp("planner")
    raw, pre = tmp / "raw", tmp / "pre"
    tasks = []
    for t in _planner_tasks():
        (raw / f"Dataset{900 + len(tasks):03d}_{t['name']}").mkdir(parents=True)
        fp = _synthetic_fingerprint(t["spacings"], t["shapes"], t["relative"])
        tasks.append(
            {"name": t["name"], "fingerprint": fp, "dataset_json": _dataset_json(t["channels"], len(t["shapes"]))}
        )
    if REAL_CT.is_dir():
        folder = raw / f"Dataset{900 + len(tasks):03d}_RealCT"
        (folder / "imagesTr").mkdir(parents=True)
        (folder / "labelsTr").mkdir()
        (folder / "imagesTr" / "ct_0000.nii.gz").symlink_to((REAL_CT / "image.nii.gz").resolve())
        (folder / "labelsTr" / "ct.nii.gz").symlink_to((REAL_CT / "label.nii.gz").resolve())
        meta = _dataset_json(["CT"], 1)
        del meta["dataset"]
        meta["overwrite_image_reader_writer"] = "NibabelIOWithReorient"  # as nnU-Net's AMOS conversion sets
        (folder / "dataset.json").write_text(json.dumps(meta))
        tasks.append({"name": "RealCT", "samples": REAL_CT_SAMPLES})
    (tmp / "tasks.json").write_text(json.dumps(tasks))
    script = tmp / "planner.py"
    script.write_text(NNUNET_V2_PLANNER)
    env = {**os.environ, "nnUNet_raw": str(raw), "nnUNet_preprocessed": str(pre), "nnUNet_results": str(tmp / "r")}
    done = run_script(script, [str(tmp / "tasks.json"), str(tmp / "plans.json")], env=env)  # tests/forked.py
    assert done.returncode == 0, done.stdout[-3000:]
    return json.loads((tmp / "plans.json").read_text())


REAL_CT = Path("../shared/data/ct_example")
REAL_CT_SAMPLES = 100_000


def _assert_fullres_equal(ours: dict, theirs: dict, transpose_forward) -> None:
    config = theirs["configurations"]["3d_fullres"]
    nn = ours["nnunet"]
    assert nn["transpose_forward"] == transpose_forward
    np.testing.assert_allclose(nn["spacing"], config["spacing"], atol=1e-9)
    assert nn["patch_size"] == config["patch_size"]
    assert nn["batch_size"] == config["batch_size"]
    assert nn["batch_dice"] == config["batch_dice"]
    assert nn["normalization_schemes"] == config["normalization_schemes"]
    assert nn["use_mask_for_norm"] == config["use_mask_for_norm"]
    assert nn["architecture"] == config["architecture"]  # class, arguments (classes named), imports
    arch = config["architecture"]["arch_kwargs"]
    # amos-zoo's (x, y, z) view: nnU-Net's axes put back in image order
    order = [transpose_forward.index(2 - a) for a in range(3)]
    assert ours["patch_size"] == [config["patch_size"][i] for i in order]
    assert ours["architecture"]["strides"] == [[s[i] for i in order] for s in arch["strides"]]
    assert ours["architecture"]["kernel_sizes"] == [[k[i] for i in order] for k in arch["kernel_sizes"]]


@pytest.mark.parametrize("name", ["Iso", "AmosCT", "AmosCTMR"])
def test_fullres_plan_equals_nnunet_v2_planner(nnunet_plans, name):
    """Spacing, patch, batch, stages, kernels, strides, features, batch Dice and normalisation of the 3d_fullres
    plan equal nnunetv2's ExperimentPlanner on the same fingerprint."""
    task = next(t for t in _planner_tasks() if t["name"] == name)
    theirs = nnunet_plans[name]["plans"]
    ours = plan_3d_fullres(
        task["spacings"],
        task["shapes"],
        1,
        len(AMOS_LABELS),
        channel_names=task["channels"],
        median_relative_size_after_crop=task["relative"],
    )
    _assert_fullres_equal(ours, theirs, theirs["transpose_forward"])
    if name == "AmosCT":  # 0.7 x 0.7 x 5 mm: the anisotropy rule, in-plane-only first convolutions and pooling
        assert ours["spacing"][2] == pytest.approx(np.percentile([s[2] for s in task["spacings"]], 10))
        assert ours["architecture"]["kernel_sizes"][0] == [3, 3, 1]
        assert ours["architecture"]["strides"][1] == [2, 2, 1]
        assert ours["architecture"] == default_architecture()  # the registry's default is this plan
    if name == "AmosCTMR":  # z-score per case inside the non-zero mask: the masked branch
        assert ours["normalization_schemes"] == ["ZScoreNormalization"]
        assert ours["use_mask_for_norm"] == [True]
    if name == "Iso":
        assert ours["architecture"]["kernel_sizes"] == [[3, 3, 3]] * ours["architecture"]["n_stages"]


def test_plan_of_real_ct_equals_nnunet_v2(nnunet_plans, monkeypatch):
    """The real CT: nnU-Net's fingerprint (real Hounsfield intensities) and 3d_fullres plan, and amos-zoo's."""
    if not REAL_CT.is_dir():
        pytest.skip("../shared/data/ct_example is absent (a fresh clone has no shared fixtures)")
    import amos_zoo.data.plan as plan_module

    monkeypatch.setattr(plan_module, "V2_FOREGROUND_SAMPLES", REAL_CT_SAMPLES)
    fp = dataset_fingerprint(
        [("ct", [str(REAL_CT / "image.nii.gz")], str(REAL_CT / "label.nii.gz"))], "nnunet-v2", workers=1, progress=False
    )
    theirs = nnunet_plans["RealCT"]
    stats = theirs["fingerprint"]["foreground_intensity_properties_per_channel"]["0"]
    for key, value in fp.intensity[0].items():
        assert value == pytest.approx(stats[key], abs=1e-4), key
    assert stats["min"] < -500 and stats["max"] > 500  # real Hounsfield units inside the organs
    ours = plan_3d_fullres(
        fp.spacings,
        fp.shapes_after_crop,
        1,
        len(AMOS_LABELS),
        channel_names=["CT"],
        median_relative_size_after_crop=fp.median_relative_size_after_crop,
    )
    _assert_fullres_equal(ours, theirs["plans"], theirs["plans"]["transpose_forward"])


def test_masked_zscore_equals_nnunet_v2():
    """The masked z-score branch (use_mask_for_norm): amos-zoo's ModalityNormalized with zscore_nonzero_mask equals
    nnU-Net's crop_to_nonzero + ZScoreNormalization(use_mask_for_norm=True) on an MRI-like image with a zero
    background and a zero-valued hole inside the body."""
    from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero
    from nnunetv2.preprocessing.normalization.default_normalization_schemes import ZScoreNormalization

    rng = np.random.RandomState(1)
    grid = np.mgrid[:40, :36, :20]
    body = ((grid[0] - 20) / 15) ** 2 + ((grid[1] - 18) / 12) ** 2 + ((grid[2] - 10) / 7) ** 2 < 1  # an ellipsoid
    image = np.where(body, rng.gamma(2.0, 200.0, body.shape) + 1, 0).astype(np.float32)[None]
    image[0, 18:21, 16:19, 8:11] = 0  # a hole inside the body: normalised (holes are filled)
    seg = np.zeros((1, *image.shape[1:]), np.int8)
    data, seg_c, box = crop_to_nonzero(image[:, ::-1].copy(), seg)  # nnU-Net's crop ((z, y, x) order is irrelevant)
    theirs = ZScoreNormalization(use_mask_for_norm=True, intensityproperties={}).run(data[0].copy(), seg_c[0])
    ours = ModalityNormalized(["image"], mri_normalization="zscore", zscore_nonzero_mask=True)(
        {"image": torch.from_numpy(image[:, ::-1].copy()), "modality": "MRI"}
    )["image"][0].numpy()
    crop = tuple(slice(a, b) for a, b in box)
    np.testing.assert_allclose(ours[crop], theirs, atol=1e-5)
    assert (ours[crop][seg_c[0] < 0] == 0).all() and (seg_c[0] < 0).any()  # outside the mask: left at zero
    assert abs(float(ours[crop][seg_c[0] >= 0].mean())) < 1e-5  # inside: mean 0


def test_fit_trains_on_the_planned_patch_with_the_network_built_from_the_plan(
    synth_root, tmp_path, monkeypatch, capsys
):
    """The data module plans nnU-Net's 3d_fullres configuration (as amos-zoo plan does) and takes its patch; the
    module builds nnU-Net's network from it (the same network nnunetv2 builds from that plan), stores it in its
    hyperparameters and card, and trains with nnU-Net's deep-supervision loss (label downsampled per output)."""
    from types import SimpleNamespace

    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    from amos_zoo.data.datamodule import SegmentationDataModule
    from amos_zoo.data.plan import load_plan
    from amos_zoo.models.registry import build_network, count_parameters
    from amos_zoo.train.module import SegmentationModule, downsample_label

    dm = SegmentationDataModule(
        str(synth_root), task="amos-ct", recipe="nnunet-v2", cache_dir=str(tmp_path), num_workers=1
    )
    assert dm.recipe.patch_rule == "planned"
    dm.ensure_plan(progress=False)
    config = dm.plan_configuration
    plan = load_plan(dm.plan_path)  # written beside the cache: the configuration travels with the plan
    assert plan.configuration == config and dm.recipe.patch_size == tuple(config["patch_size"])
    fp = plan.fingerprint
    assert config == plan_3d_fullres(
        fp["spacings"],
        fp["shapes_after_crop"],
        1,
        dm.num_classes,
        channel_names=["CT"],
        median_relative_size_after_crop=fp["median_relative_size_after_crop"],
    )

    from amos_zoo.cli.main import main

    args = ["plan", "--data", str(synth_root), "--protocol", "nnunet-v2", "--task", "amos-ct", "--cache_dir"]
    assert main([*args, str(tmp_path)]) == 0  # reads the same plan back and prints its configuration
    printed = capsys.readouterr().out
    assert f"3d_fullres patch (x, y, z): {tuple(config['patch_size'])}, batch size {config['batch_size']}" in printed
    assert f"strides: {config['architecture']['strides']}" in printed

    module = SegmentationModule(arch="nnunet", num_classes=dm.num_classes, arch_kwargs={"deep_supervision": True})
    module._trainer = SimpleNamespace(datamodule=dm, strategy=SimpleNamespace(root_device=torch.device("cpu")))
    module.setup("fit")
    arch = config["nnunet"]["architecture"]
    with torch.device("meta"):  # structure only: no memory, no initialisation
        theirs = get_network_from_plans(
            arch["network_class_name"],
            arch["arch_kwargs"],
            arch["_kw_requires_import"],
            1,
            dm.num_classes,
            allow_init=False,
            deep_supervision=True,
        )
        rebuilt = build_network(module.card)  # what a checkpoint's card rebuilds
    assert count_parameters(module.net) == count_parameters(theirs) == count_parameters(rebuilt)
    assert module.card.roi_size == tuple(config["patch_size"])
    assert module.hparams.arch_kwargs["strides"] == config["architecture"]["strides"]

    patch = config["patch_size"]
    label = torch.randint(0, dm.num_classes, (1, 1, *patch), dtype=torch.uint8)
    half = [p // s for p, s in zip(patch, config["architecture"]["strides"][1])]  # the second output's grid
    ref = torch.nn.functional.interpolate(label.float(), half, mode="nearest-exact")  # DownsampleSegForDSTransform
    assert torch.equal(downsample_label(label, half), ref.to(torch.uint8))
    module._trainer = None  # a training step without a trainer (logging only warns)
    seen = []
    module.loss.register_forward_hook(lambda mod, args, out: seen.append(tuple(args[0].shape[2:])))
    loss = module.training_step({"image": torch.randn(1, 1, *patch), "label": label}, 0)
    assert torch.isfinite(loss) and loss.requires_grad
    # deep supervision: every output but the lowest (weight 0) scored at its own resolution
    assert seen[0] == tuple(patch) and seen[1] == tuple(half)
    assert len(seen) == config["architecture"]["n_stages"] - 2
