"""The Decathlon rows: `amos-zoo reproduce --task TaskXX_...` end to end on synthetic MSD-layout data (a covering set:
every task once, every model at least once), each task scored as the Decathlon defines it (checked with nnU-Net's
own region and label code), nnU-Net's per-channel normalisation on the task's plan, and the Decathlon table."""

from __future__ import annotations

import json
import re

import nibabel as nib
import numpy as np
import pytest

from amos_zoo.cli.main import main
from amos_zoo.data.msd import MSD_TASKS, check_task_dataset, task_fit_args, write_msd_dataset
from amos_zoo.experiments.table import build_table, decathlon_markdown, load_published
from amos_zoo.metrics.evaluate import evaluate_folders
from amos_zoo.metrics.regions import task_regions


@pytest.fixture(scope="module")
def one_case_per_task(tmp_path_factory) -> dict:
    """task -> a one-case synthetic dataset of that task."""
    base = tmp_path_factory.mktemp("msd")
    return {task: write_msd_dataset(base / task, task, n_train=1, n_test=0) for task in MSD_TASKS}


def _perturbed(label: np.ndarray) -> np.ndarray:
    """A prediction that overlaps the reference partly: shifted 2 voxels, and in half the volume the labels above 1
    moved one up (a non-enhancing voxel called enhancing: it stays in the tumour core and whole tumour)."""
    pred = np.roll(label, 2, axis=0)
    half = np.zeros(pred.shape, dtype=bool)
    half[:, : pred.shape[1] // 2] = True
    top = int(label.max())
    moved = half & (pred >= 2) & (pred < top)
    pred[moved] += 1
    return pred


def test_each_task_is_scored_as_the_decathlon_defines_it(one_case_per_task, tmp_path):
    """BrainTumour on BraTS' regions (nnunet 1.7.1's get_brats_regions), every other task label by label (nnunetv2's
    labels_to_list_of_regions); the values equal nnunetv2's compute_metrics on the same files."""
    from nnunet.evaluation.region_based_evaluation import get_brats_regions
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics, labels_to_list_of_regions
    from nnunetv2.imageio.nibabel_reader_writer import NibabelIO

    for task, root in one_case_per_task.items():
        index = check_task_dataset(root, task)
        regions = task_regions(task, index.labels)
        if task == "Task01_BrainTumour":
            expected = list(get_brats_regions().values())  # whole tumour, tumour core, enhancing tumour
            assert [r.name for r in regions] == ["whole tumour", "tumour core", "enhancing tumour"]
        else:
            expected = labels_to_list_of_regions(index.labels.foreground_ids)
        assert [r.labels for r in regions] == expected, task

        case = index.split("training")[0]
        ref = nib.load(case.label)
        pred_dir, ref_dir = tmp_path / task / "pred", tmp_path / task / "ref"
        for folder in (pred_dir, ref_dir):
            folder.mkdir(parents=True)
        nib.save(ref, ref_dir / f"{case.case_id}.nii.gz")
        pred = _perturbed(np.asarray(ref.dataobj).astype(np.uint8))
        nib.save(nib.Nifti1Image(pred, ref.affine), pred_dir / f"{case.case_id}.nii.gz")
        ours = evaluate_folders(
            pred_dir, ref_dir, labels=index.labels, metrics=("dice",), workers=1, progress=False, regions=regions
        )
        files = str(ref_dir / f"{case.case_id}.nii.gz"), str(pred_dir / f"{case.case_id}.nii.gz")
        theirs = compute_metrics(*files, NibabelIO(), expected)["metrics"]
        for region in regions:
            dice = ours["all"]["per_organ"][region.name]["dice"]
            assert 0 < dice < 1 and dice == pytest.approx(theirs[region.labels]["Dice"], abs=1e-9), (task, region)
        if task == "Task01_BrainTumour":  # regions, not labels: the label-wise scores differ
            by_label = compute_metrics(*files, NibabelIO(), [1, 2, 3])["metrics"]
            region_dice = [ours["all"]["per_organ"][r.name]["dice"] for r in regions]
            assert not np.allclose(region_dice, [by_label[k]["Dice"] for k in (1, 2, 3)], atol=1e-3)


def test_brats_regions_in_the_msd_convention_are_the_challenges(tmp_path):
    """BraTS labels 1 necrotic / non-enhancing core, 2 edema, 4 enhancing; its regions: whole tumour {1, 2, 4}, tumour
    core {1, 4}, enhancing {4} (BraTS 2019/2020 task pages). nnunetv2's own BraTS conversion maps the labels to the
    MSD's convention (1 edema, 2 non-enhancing, 3 enhancing) and declares the regions of its dataset.json; our
    regions on its converted labels are the challenge's regions on the original ones."""
    import ast
    import inspect

    import nnunetv2.dataset_conversion.Dataset137_BraTS21 as brats21

    from amos_zoo.data.labels import LabelMap
    from amos_zoo.metrics.regions import BRATS_REGIONS

    call = next(
        node
        for node in ast.walk(ast.parse(inspect.getsource(brats21)))
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "generate_dataset_json"
    )
    declared = ast.literal_eval(next(k.value for k in call.keywords if k.arg == "labels"))
    assert [tuple(v) for k, v in declared.items() if k != "background"] == [r.labels for r in BRATS_REGIONS]
    assert MSD_TASKS["Task01_BrainTumour"].labels == {
        "0": "background",
        "1": "edema",
        "2": "non-enhancing tumor",
        "3": "enhancing tumour",
    }

    rng = np.random.default_rng(0)
    original = rng.choice(np.array([0, 1, 2, 4], dtype=np.uint8), size=(12, 10, 8))
    nib.save(nib.Nifti1Image(original, np.eye(4)), tmp_path / "brats.nii.gz")
    brats21.copy_BraTS_segmentation_and_convert_labels_to_nnUNet(
        str(tmp_path / "brats.nii.gz"), str(tmp_path / "msd.nii.gz")
    )
    converted = np.asarray(nib.load(tmp_path / "msd.nii.gz").dataobj)
    challenge = {"whole tumour": (1, 2, 4), "tumour core": (1, 4), "enhancing tumour": (4,)}
    regions = task_regions("Task01_BrainTumour", LabelMap.from_json(MSD_TASKS["Task01_BrainTumour"].labels))
    for region in regions:
        np.testing.assert_array_equal(region.mask(converted), np.isin(original, challenge[region.name]))


def test_a_dataset_of_another_task_is_refused_by_name(one_case_per_task):
    spleen = one_case_per_task["Task09_Spleen"]
    with pytest.raises(ValueError, match=r"dataset\.json: 1 channel.*Task01_BrainTumour has 4 channel"):
        check_task_dataset(spleen, "Task01_BrainTumour")


@pytest.mark.parametrize("task", ["Task01_BrainTumour", "Task05_Prostate", "Task03_Liver"])
def test_the_plan_normalises_each_channel_as_nnunet_does(task, tmp_path, monkeypatch):
    """Under nnunet-v2 a task is planned from its own fingerprint and each channel normalised with the scheme nnU-Net
    gives its channel name (multi-channel MRI: per-channel z-score; CT: CTNormalization with the task's foreground
    statistics): our transform's output equals nnunetv2's normalisation classes on the same case."""
    from monai.transforms import LoadImaged
    from nnunetv2.preprocessing.cropping.cropping import create_nonzero_mask
    from nnunetv2.preprocessing.normalization.default_normalization_schemes import (
        CTNormalization,
        ZScoreNormalization,
    )
    from nnunetv2.preprocessing.normalization.map_channel_name_to_normalization import get_normalization_scheme

    from amos_zoo.data.datamodule import SegmentationDataModule
    from amos_zoo.data.plan import load_plan
    from amos_zoo.data.transforms import ModalityNormalized

    monkeypatch.setattr("amos_zoo.data.plan.V2_FOREGROUND_SAMPLES", 1e5)  # nnU-Net's 1e8 samples: statistics alike
    root = write_msd_dataset(tmp_path / task, task, n_train=3, n_test=0)
    dm = SegmentationDataModule(str(root), task=task, recipe="nnunet-v2", num_workers=0, cache_dir=str(tmp_path / "c"))
    dm.ensure_plan(progress=False)
    plan, recipe, spec = load_plan(dm.plan_path), dm.recipe, MSD_TASKS[task]
    assert plan.cases == [c.case_id for c in dm.index.split("training")]  # every training case of the task
    assert recipe.spacing == pytest.approx(plan.spacing) and len(recipe.intensity_stats) == spec.num_channels

    case = dm.index.split("training")[0].as_dict()
    image = LoadImaged(["image"], reader="NibabelReader", ensure_channel_first=True, image_only=True)(case)["image"]
    ours = ModalityNormalized(
        ["image"],
        ct_normalization=recipe.ct_normalization,
        mri_normalization=recipe.mri_normalization,
        intensity_stats=recipe.intensity_stats,
        zscore_nonzero_mask=recipe.zscore_nonzero_mask,
    )({"image": image.clone(), "modality": case["modality"]})["image"].numpy()
    raw = image.numpy().astype(np.float32)
    seg = np.where(create_nonzero_mask(raw), 0, -1)[None]  # nnU-Net marks the outside of the non-zero region -1
    for c, channel in enumerate(spec.modality.values()):
        scheme = get_normalization_scheme(channel)
        assert scheme is (CTNormalization if spec.is_ct else ZScoreNormalization), (task, channel)
        stats = plan.fingerprint["intensity_per_channel"][c]
        use_mask = plan.zscore_nonzero_mask if scheme is ZScoreNormalization else False
        theirs = scheme(use_mask_for_norm=use_mask, intensityproperties=stats).run(raw[c].copy(), seg[0])
        np.testing.assert_allclose(ours[c], theirs, rtol=1e-4, atol=1e-4, err_msg=f"{task} channel {channel}")


def test_task_options_plan_or_fix_the_spacing_as_the_protocol_does():
    import yaml

    from amos_zoo.experiments.run import config_file

    for task in MSD_TASKS:
        config = yaml.safe_load(config_file(f"msd/{task}.yaml").read_text())["data"]
        planned = task_fit_args(task, "nnunet-v2")
        assert planned == ["--data.task", task, "--data.patch_size", json.dumps(config["patch_size"])]
        fixed = task_fit_args(task, "btcv")
        assert fixed == [*planned, "--data.spacing", json.dumps(config["spacing"])]


#: (task, protocol, model): every Decathlon task once, every 3D model at least once; BrainTumour runs the default
#: two smoke folds (their union is the row), the others fold 0 only (the same path, half the time)
COVERING = [
    ("Task01_BrainTumour", "nnunet-v2", "unetr"),
    ("Task02_Heart", "btcv", "swin_unetr"),
    ("Task03_Liver", "nnunet-v2", "nnunet"),
    ("Task04_Hippocampus", "btcv", "vnet"),
    ("Task05_Prostate", "nnunet-v2", "unet"),
    ("Task06_Lung", "btcv", "unet"),
    ("Task07_Pancreas", "amos-paper", "dynunet"),
    ("Task08_HepaticVessel", "nnunet-v2", "unet"),
    ("Task09_Spleen", "btcv", "unet"),
    ("Task10_Colon", "nnunet-v2", "unet"),
]


def test_the_covering_set_covers():
    from amos_zoo.experiments.reproduce import SMOKE_SETTINGS

    assert [t for t, _, _ in COVERING] == list(MSD_TASKS)
    assert {m for _, _, m in COVERING} == set(SMOKE_SETTINGS)


@pytest.mark.slow
@pytest.mark.parametrize("task, protocol, model", COVERING)
def test_reproduce_smoke_on_every_decathlon_task(task, protocol, model, tmp_path, monkeypatch):
    monkeypatch.setattr("amos_zoo.data.plan.V2_FOREGROUND_SAMPLES", 1e5)  # the plan's sampling: tests/test_plan.py
    runs = tmp_path / "runs"
    one_fold = [] if task == "Task01_BrainTumour" else ["--folds", "[0]"]
    args = ["reproduce", "--task", task, "--protocol", protocol, "--model", model, "--smoke", "--out", str(runs)]
    assert main([*args, *one_fold]) == 0
    run_dir = runs / task / protocol / model
    row = json.loads((run_dir / "row.json").read_text())
    spec = MSD_TASKS[task]
    assert (row["task"], row["protocol"], row["model"]) == (task, protocol, model)
    assert row["split_kind"] == "cross-validation"
    assert row["benchmark"] == "decathlon" and row["smoke"]
    scored = list(row["scored_on"])
    assert list(row["metrics"]["per_organ_dice"]) == scored
    if task == "Task01_BrainTumour":
        assert row["scored_on"] == {"whole tumour": [1, 2, 3], "tumour core": [2, 3], "enhancing tumour": [3]}
        folds = [json.loads((run_dir / f"fold_{k}" / "row.json").read_text()) for k in (0, 1)]
        assert row["folds"] == [0, 1] and row["metrics"]["cases"] == 4  # 2 folds' validation cases: all 4
        card = folds[0]["card"]
    else:
        assert scored == [spec.labels[str(i)] for i in range(1, len(spec.labels))]
        assert row["metrics"]["cases"] == 2  # fold 0 of 2 over the 4 synthetic cases
        card = row["card"]
    assert card["in_channels"] == spec.num_channels and card["labels"] == spec.labels
    recipe = card["recipe"]
    if protocol == "nnunet-v2":  # the task's plan: per-channel statistics, CT- or MRI-normalised by its modality
        assert len(recipe["intensity_stats"]) == spec.num_channels
        assert (recipe["ct_normalization"], recipe["mri_normalization"]) == ("nnunet", "zscore")
    predictions = sorted((run_dir / "fold_0" / "predictions").glob("*.nii.gz"))
    reference = nib.load(runs / "smoke_data" / task / "labelsTr" / predictions[0].name)
    first = nib.load(predictions[0])
    assert first.shape == reference.shape and np.allclose(first.affine, reference.affine)  # original geometry


def test_published_decathlon_numbers_name_their_source_split_and_classes():
    """Every published Decathlon number: a Dice in [0, 1] with its table and split; its per-class values (the task's
    labels as the MSD dataset.json names them, or BraTS' regions) in [0, 1] and averaging to it; BrainTumour numbers
    say whether labels or regions were scored; and nnU-Net's challenge submission is there for all ten tasks."""
    from amos_zoo.metrics.regions import BRATS_REGIONS
    from amos_zoo.models import MODEL_REGISTRY

    decathlon = [p for p in load_published() if p["task"] in MSD_TASKS]
    assert {p["split_kind"] for p in decathlon} == {"official", "cross-validation", "hold-out"}
    for p in decathlon:
        name = f"{p['published_name']} / {p['task']}"
        assert p["metric"] == "dice" and 0 < p["value"] <= 1, name
        assert p["model"] is None or p["model"] in MODEL_REGISTRY, name
        assert p["split"] and p["protocol_description"], name
        assert re.search(r"\btable\b|README|issues/", p["citation"], re.IGNORECASE), name  # where it was read
        what = {"official": "test", "cross-validation": "cross-validation", "hold-out": "split"}[p["split_kind"]]
        assert what in p["split"], name  # the split text says which cases were scored
        if p["task"] == "Task01_BrainTumour" and "per_class" in p:
            assert p["scored_on"] in ("labels", "regions"), name
        if "per_class" not in p:
            continue
        classes = p["per_class"]
        if p.get("scored_on") == "regions":
            assert list(classes) == [r.name for r in BRATS_REGIONS], name
        else:
            assert list(classes) == list(MSD_TASKS[p["task"]].labels.values())[1:], name
        assert all(0 < v <= 1 for v in classes.values()), name
        # the mean of the printed per-class values; a paper's own mean column may round its unrounded values
        assert sum(classes.values()) / len(classes) == pytest.approx(p["value"], abs=1e-3), name
    challenge = {p["task"] for p in decathlon if p["model"] == "nnunet" and p["split_kind"] == "official"}
    assert challenge == set(MSD_TASKS)
    unetr = {p["task"]: p for p in decathlon if p["model"] == "unetr"}
    assert set(unetr) == {"Task01_BrainTumour", "Task09_Spleen"} and unetr["Task09_Spleen"]["value"] == 0.964


def test_a_published_entry_out_of_range_or_of_unknown_scoring_is_refused(tmp_path):
    entry = {
        "model": "unetr",
        "published_name": "x",
        "task": "Task09_Spleen",
        "metric": "dice",
        "value": 0.9,
        "protocol": None,
        "protocol_description": "d",
        "split_kind": "hold-out",
        "split": "s",
        "citation": "c, Table 1",
    }
    bad = tmp_path / "published.yaml"
    for change, message in [
        ({"value": 96.4}, r"entry 0: a Dice \(value, per_class\) outside \[0, 1\]: \[96.4\]"),
        ({"per_class": {"spleen": 1.2}}, r"outside \[0, 1\]: \[0.9, 1.2\]"),
        ({"scored_on": "voxels"}, "scored_on is 'voxels', not 'labels' or 'regions'"),
    ]:
        bad.write_text(json.dumps({"entries": [{**entry, **change}]}))
        with pytest.raises(ValueError, match=message):
            load_published(bad)
    bad.write_text(json.dumps({"entries": [{**entry, "per_class": {"spleen": 0.9}, "scored_on": "labels"}]}))
    assert load_published(bad)[0]["per_class"] == {"spleen": 0.9}


def test_the_decathlon_table(tmp_path):
    """Tasks as columns, runs as rows, the published number beside ours, labelled when protocol, split or (BrainTumour)
    scoring differ; written as markdown, CSV and PNG."""
    from amos_zoo.experiments.table import comparison_label, write_table

    def row(task, protocol, model, dice):
        return {
            "task": task,
            "model": model,
            "protocol": protocol,
            "split_kind": "cross-validation",
            "metrics": {"overall": {"dice": dice, "nsd": 0.5}, "per_modality": {}, "per_organ_dice": {"x": dice}},
        }

    brats = {"whole tumour": [1, 2, 3], "tumour core": [2, 3], "enhancing tumour": [3]}  # as reproduce records it
    rows = [
        row("Task09_Spleen", "btcv", "unet", 0.9),
        {**row("Task01_BrainTumour", "nnunet-v2", "nnunet", 0.7), "scored_on": brats},
        {**row("Task01_BrainTumour", "btcv", "unetr", 0.72), "scored_on": brats},
        row("Task03_Liver", "nnunet-v2", "nnunet", 0.75),
    ]
    published = load_published()
    spleen = [p for p in published if p["task"] == "Task09_Spleen"]
    assert spleen and spleen[0]["value"] == 0.96 and spleen[0]["split_kind"] == "hold-out"
    lines = build_table(rows, published, "decathlon")
    assert not [ln for ln in lines if ln["task"].startswith("amos")]  # AMOS numbers stay in the AMOS table
    assert not [ln for ln in build_table(rows, published) if ln["task"].startswith("Task")]
    markdown = decathlon_markdown(lines)
    header = markdown.splitlines()[2]
    assert header.startswith("| protocol / model | BrainTumour | Heart |") and header.endswith("| Spleen | Colon |")

    def cells(name):
        line = next(ln for ln in markdown.splitlines() if ln.startswith(f"| {name} |"))
        return [c.strip() for c in line.split("|")[2:-1]]

    # UNETR's own hold-out, scored on the regions as ours: another protocol and split; nnU-Net's 2018 challenge
    # test-set and 5-fold cross-validation BrainTumour numbers are per label: scoring differs too
    assert cells("btcv / unetr")[0] == "0.7200 vs 0.7110 [1] (different protocol and split)"
    assert cells("nnunet-v2 / nnunet")[0] == (
        "0.7000 vs 0.6120 [2] (different protocol, split and scoring) vs 0.7400 [3] (different protocol and scoring)"
    )
    # nnU-Net's own LiTS cross-validation under nnunet-v2: like for like, no label; its 2018 test-set score: another
    # protocol and split; its 2018 and v1 cross-validations: another protocol; the spleen bundle's hold-out: another
    # protocol and split
    assert cells("nnunet-v2 / nnunet")[1:3] == [
        "",
        "0.7500 vs 0.8009 [4] vs 0.8448 [5] (different protocol and split) vs 0.7792 [6] (different protocol) "
        "vs 0.7915 [7] (different protocol)",
    ]
    assert cells("btcv / unet")[8] == "0.9000 vs 0.9600 [8] (different protocol and split)"
    assert cells("published: SwinUNETR (nnU-Net Revisited)")[2] == "0.7650 [9]"  # no swin_unetr run: its own row
    challenge = cells("published: nnU-Net (MSD 2018 challenge submission, test set)")  # the tasks without a run
    assert challenge[:4] == ["", "0.9277 [10]", "", "0.8966 [11]"] and challenge[9] == "0.5600 [17]"
    crossval = cells("published: nnU-Net 3D U-Net (2018 paper, 5-fold cross-validation)")
    assert crossval[1] == "0.9245 [18]" and crossval[7:] == ["", "", ""]  # phase 1 only: no HepaticVessel..Colon
    assert cells("published: UNETR (WACV 2022, Table 2; own hold-out split)")[8] == "0.9640 [23]"
    assert "- [8] MONAI model zoo spleen_ct_segmentation (UNet), Task09_Spleen: 0.9600" in markdown
    assert "- [2] nnU-Net (MSD 2018 challenge submission, test set), Task01_BrainTumour: 0.6120" in markdown
    unetr = next(p for p in published if p["model"] == "unetr" and p["task"] == "Task01_BrainTumour")
    per_label = {"edema": [1], "non-enhancing tumor": [2], "enhancing tumour": [3]}  # a run scored label by label
    by_label = {**row("Task01_BrainTumour", "btcv", "unetr", 0.7), "scored_on": per_label}
    assert comparison_label(by_label, unetr) == "(different protocol, split and scoring)"
    assert comparison_label(row("Task01_BrainTumour", "btcv", "unetr", 0.7), unetr) == "(different protocol and split)"

    for r in rows:
        folder = tmp_path / r["task"] / r["protocol"] / r["model"]
        folder.mkdir(parents=True)
        (folder / "row.json").write_text(json.dumps(r))
    written = write_table(tmp_path)
    assert written == (tmp_path / "table.md").read_text() and "| nnunet-v2 / nnunet | 0.7000 vs 0.6120 [2]" in written
    assert (tmp_path / "decathlon.png").stat().st_size > 0 and not (tmp_path / "table.csv").exists()
    csv_lines = (tmp_path / "decathlon.csv").read_text().splitlines()
    assert csv_lines[0].startswith("task,model,dice") and len(csv_lines) == 1 + len(lines)

    amos = tmp_path / "amos-ct" / "btcv" / "unet"  # an AMOS row too: both tables, each with its files
    amos.mkdir(parents=True)
    (amos / "row.json").write_text(json.dumps({**row("amos-ct", "btcv", "unet", 0.8), "split_kind": "official"}))
    both = write_table(tmp_path)
    assert both.index("| task | protocol | model | split | mDSC |") < both.index("| protocol / model | BrainTumour |")
    assert "| amos-ct | btcv | unet | official | 0.8000 |" in both and (tmp_path / "table.png").stat().st_size > 0
    assert "Task09_Spleen" not in (tmp_path / "table.csv").read_text()
