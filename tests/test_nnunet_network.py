"""nnU-Net v2's network in amos-zoo equals the one nnunetv2 builds from the same plan (``get_network_from_plans``:
dynamic_network_architectures' PlainConvUNet): parameter count, stages, kernels, strides, features, InstanceNorm
(affine), convolution bias, deep-supervision heads and logits. An nnU-Net v2 ``checkpoint_final.pth`` (written here in
``nnUNetTrainer.save_checkpoint``'s layout) loads weights-only and predicts nnU-Net's logits; a results folder with
several folds predicts nnUNetPredictor's fold ensemble, and ``amos-zoo predict`` takes the folder."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from amos_zoo.data.plan import plan_3d_fullres
from amos_zoo.models.registry import count_parameters, create_model

pytest.importorskip("nnunetv2")
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans  # noqa: E402

LABELS = {"background": 0, "spleen": 1, "liver": 2, "aorta": 3}


def _plans(spacings, shapes):
    """amos-zoo's plan (shown equal to nnunetv2's ExperimentPlanner in tests/test_plan.py) of a fingerprint."""
    return plan_3d_fullres(spacings, shapes, 1, len(LABELS), channel_names=["CT"])


@pytest.fixture(scope="module")
def amos_like():
    """AMOS-like CT (0.7 x 0.7 x 5 mm): nnU-Net's axes are amos-zoo's reversed (transpose_forward identity)."""
    return _plans([(0.7, 0.7, 5.0)] * 8 + [(0.8, 0.8, 2.5)] * 2, [(512, 512, 90)] * 10)


@pytest.fixture(scope="module")
def coarse_x():
    """The coarse axis is x: nnU-Net transposes it first (transpose_forward [2, 0, 1])."""
    return _plans([(4.0, 0.8, 0.8)] * 6, [(50, 300, 260)] * 6)


@pytest.fixture(scope="module")
def tiny():
    """A small plan (small images) so that checkpoint and ensemble tests run whole patches quickly."""
    return _plans([(1.0, 1.0, 1.0)] * 4, [(40, 40, 24)] * 4)


def _theirs(plan, deep_supervision=False):
    arch = plan["nnunet"]["architecture"]
    return get_network_from_plans(
        arch["network_class_name"],
        arch["arch_kwargs"],
        arch["_kw_requires_import"],
        1,
        len(LABELS),
        allow_init=True,
        deep_supervision=deep_supervision,
    )


def _to_nnunet(x: torch.Tensor, transpose) -> torch.Tensor:
    """An amos-zoo (x, y, z) tensor on nnU-Net's network axes (nnU-Net's axis i is (z, y, x) axis transpose[i])."""
    return x.permute(0, 1, *[2 + (2 - t) for t in transpose])


def _from_nnunet(y: torch.Tensor, transpose) -> torch.Tensor:
    axes = [2 - t for t in transpose]  # nnU-Net dim i holds amos-zoo axis axes[i]
    return y.permute(0, 1, *[2 + axes.index(a) for a in range(3)])


def _convs(net):
    return [m for m in net.modules() if isinstance(m, torch.nn.Conv3d | torch.nn.ConvTranspose3d)]


@pytest.mark.parametrize("plan_name", ["amos_like", "coarse_x"])
def test_network_equals_nnunet_v2(plan_name, request):
    plan = request.getfixturevalue(plan_name)
    transpose = plan["nnunet"]["transpose_forward"]
    theirs = _theirs(plan, deep_supervision=True)
    with torch.device("meta"):  # its weights come from nnU-Net's network below: no initialisation needed
        ours = create_model("nnunet", 1, len(LABELS), **plan["architecture"], deep_supervision=True)
    assert count_parameters(ours) == count_parameters(theirs)
    stages = plan["architecture"]["n_stages"]
    assert len(ours.encoder.stages) == len(theirs.encoder.stages) == stages
    assert len(ours.decoder.seg_layers) == len(theirs.decoder.seg_layers) == stages - 1  # deep-supervision heads
    axes = [2 - t for t in transpose]
    for a, b in zip(_convs(ours), _convs(theirs), strict=True):
        assert type(a) is type(b) and a.in_channels == b.in_channels and a.out_channels == b.out_channels
        assert list(a.kernel_size) == [b.kernel_size[axes.index(i)] for i in range(3)]
        assert list(a.stride) == [b.stride[axes.index(i)] for i in range(3)]
        assert a.bias is not None and b.bias is not None  # nnU-Net plans conv_bias=True
    norms = [m for m in ours.modules() if isinstance(m, torch.nn.InstanceNorm3d)]
    assert norms and all(m.affine and m.eps == 1e-5 for m in norms)
    assert len(norms) == sum(isinstance(m, torch.nn.InstanceNorm3d) and m.affine for m in theirs.modules())
    features = [s[-1].convs[-1].conv.out_channels for s in ours.encoder.stages]
    assert features == plan["architecture"]["features_per_stage"] == [min(320, 32 * 2**i) for i in range(stages)]
    if plan_name == "amos_like":
        assert ours.encoder.stages[0][0].convs[0].conv.kernel_size == (3, 3, 1)  # in-plane first stage

    # the same weights give the same logits (every deep-supervision output in training, the full one otherwise)
    from amos_zoo.models.nnunet import weights_to_xyz

    ours = ours.to_empty(device="cpu")
    ours.load_state_dict(weights_to_xyz(theirs.state_dict(), transpose))
    divisible = [int(np.prod([s[a] for s in plan["architecture"]["strides"]])) for a in range(3)]
    x = torch.randn(2, 1, *[2 * d for d in divisible])
    with torch.no_grad():
        ours.train(), theirs.train()  # InstanceNorm has no running statistics: train mode only switches outputs on
        outs, refs = ours(x), theirs(_to_nnunet(x, transpose))
        assert len(outs) == len(refs) == stages - 1
        for o, r in zip(outs, refs):
            torch.testing.assert_close(o, _from_nnunet(r, transpose), atol=1e-4, rtol=1e-4)
        ours.eval(), theirs.eval()
        theirs.decoder.deep_supervision = False  # as nnU-Net predicts
        torch.testing.assert_close(
            ours(x), _from_nnunet(theirs(_to_nnunet(x, transpose)), transpose), atol=1e-4, rtol=1e-4
        )


def _results_folder(root, plan, folds=(0, 1)):
    """An nnU-Net v2 results folder as nnUNetTrainer writes it: plans.json, dataset.json and per fold a
    checkpoint_final.pth in save_checkpoint's layout (its own networks, randomly initialised per fold)."""
    config = {k: v for k, v in plan["nnunet"].items() if k != "transpose_forward"}
    config.update(
        {
            "data_identifier": "nnUNetPlans_3d_fullres",
            "preprocessor_name": "DefaultPreprocessor",
            "resampling_fn_data": "resample_data_or_seg_to_shape",
        }
    )
    transpose = plan["nnunet"]["transpose_forward"]
    plans = {
        "dataset_name": "Dataset999_Tiny",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": config["spacing"],
        "original_median_shape_after_transp": [int(v) for v in config["median_image_size_in_voxels"]],
        "image_reader_writer": "NibabelIOWithReorient",
        "transpose_forward": transpose,
        "transpose_backward": [transpose.index(i) for i in range(3)],
        "configurations": {"3d_fullres": config},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {
                "max": 1500.0,
                "mean": 80.0,
                "median": 70.0,
                "min": -1000.0,
                "percentile_00_5": -200.0,
                "percentile_99_5": 600.0,
                "std": 120.0,
            }
        },
    }
    dataset = {"channel_names": {"0": "CT"}, "labels": LABELS, "numTraining": 4, "file_ending": ".nii.gz"}
    root.mkdir(parents=True)
    (root / "plans.json").write_text(json.dumps(plans))
    (root / "dataset.json").write_text(json.dumps(dataset))
    networks = []
    for fold in folds:
        torch.manual_seed(fold)
        net = _theirs(plan, deep_supervision=True)  # trained with deep supervision, as nnUNetTrainer
        optimizer = torch.optim.SGD(net.parameters(), 1e-2, momentum=0.99, nesterov=True)
        checkpoint = {
            "network_weights": net.state_dict(),
            "optimizer_state": optimizer.state_dict(),
            "grad_scaler_state": None,
            "logging": {
                "mean_fg_dice": [0.1, 0.2],
                "ema_fg_dice": [0.1, 0.11],
                "train_losses": [1.0, 0.9],
                "val_losses": [1.1, 1.0],
                "lrs": [0.01, 0.0099],
                "epoch_start_timestamps": [1.0, 2.0],
                "epoch_end_timestamps": [1.5, 2.5],
                "dice_per_class_or_region": [[0.1] * 3, [0.2] * 3],
            },
            "_best_ema": np.float64(0.11),
            "current_epoch": 1000,
            "init_args": {
                "plans": plans,
                "configuration": "3d_fullres",
                "fold": fold,
                "dataset_json": dataset,
                "device": torch.device("cpu"),
            },
            "trainer_name": "nnUNetTrainer",
            "inference_allowed_mirroring_axes": (0, 1, 2),
        }
        (root / f"fold_{fold}").mkdir()
        torch.save(checkpoint, root / f"fold_{fold}" / "checkpoint_final.pth")
        net.decoder.deep_supervision = False
        networks.append(net.eval())
    return networks


def test_checkpoint_final_loads_weights_only_and_predicts_nnunet_logits(tiny, tmp_path):
    from amos_zoo.weights.formats import read_weights_file
    from amos_zoo.weights.loading import load_model

    folder = tmp_path / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    theirs = _results_folder(folder, tiny, folds=(0,))[0]
    file = folder / "fold_0" / "checkpoint_final.pth"
    raw = read_weights_file(file)  # weights-only: no trust needed
    assert raw.fmt == "nnunet-v2" and raw.meta["trainer_name"] == "nnUNetTrainer"
    net, card, report = load_model(file)
    assert not report.missing and not report.unexpected
    assert card.arch == "nnunet" and card.tta and card.labels == {v: k for k, v in LABELS.items()}
    assert list(card.roi_size) == tiny["patch_size"]
    assert card.recipe.spacing == pytest.approx(tuple(tiny["spacing"]))
    assert card.recipe.intensity_stats == ((-200.0, 600.0, 80.0, 120.0),)
    transpose = tiny["nnunet"]["transpose_forward"]
    x = torch.randn(1, 1, *tiny["patch_size"])
    with torch.no_grad():
        torch.testing.assert_close(
            net(x), _from_nnunet(theirs(_to_nnunet(x, transpose)), transpose), atol=1e-4, rtol=1e-4
        )


def test_results_folder_ensemble_equals_nnunet_predictor(tiny, tmp_path):
    """nnUNetPredictor (initialize_from_trained_model_folder, two folds) and amos-zoo's fold ensemble of the same
    folder give the same logits on a preprocessed patch (no mirroring: the mirroring average is the predictor's)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from amos_zoo.infer.nnunet_results import load_results_folder

    folder = tmp_path / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    _results_folder(folder, tiny, folds=(0, 1))
    # one window (the image is one patch), so no blending; without the gaussian, whose float16 products vanish at
    # the patch corners in nnU-Net's CPU accumulation
    predictor = nnUNetPredictor(
        use_gaussian=False,
        use_mirroring=False,
        perform_everything_on_device=False,
        device=torch.device("cpu"),
        allow_tqdm=False,
    )
    predictor.initialize_from_trained_model_folder(str(folder), use_folds=(0, 1))
    transpose = tiny["nnunet"]["transpose_forward"]
    x = torch.randn(1, 1, *tiny["patch_size"])
    theirs = predictor.predict_logits_from_preprocessed_data(_to_nnunet(x, transpose)[0].clone())
    network, card = load_results_folder(folder)
    assert len(network.folds) == 2
    with torch.no_grad():
        ours = network(x)
        single = load_results_folder(folder, folds=[0])[0](x)
    # nnUNetPredictor accumulates the windows' logits in float16 on the CPU: equal up to float16's rounding
    assert theirs.dtype == torch.float16
    torch.testing.assert_close(ours[0], _from_nnunet(theirs[None].float(), transpose)[0], atol=2e-3, rtol=2e-3)
    assert not torch.allclose(ours, single, atol=1e-3)  # the second fold counts


def test_predict_command_takes_an_nnunet_results_folder(tiny, tmp_path):
    folder = tmp_path / "results"
    _results_folder(folder, tiny, folds=(0, 1))
    rng = np.random.RandomState(0)
    image = rng.normal(50, 100, (44, 40, 30)).astype(np.float32)
    image[:4] = 0  # a zero border: cropped to the non-zero region as nnU-Net does
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    nib.save(nib.Nifti1Image(image, affine), str(tmp_path / "case_0001.nii.gz"))
    out = tmp_path / "pred"
    from amos_zoo.cli.main import main

    args = ["--input", str(tmp_path / "case_0001.nii.gz"), "--device", "cpu", "--no_tta"]
    assert main(["predict", "--weights", str(folder), "--out", str(out), *args]) == 0
    one = tmp_path / "pred_fold1"  # one fold of the folder, as nnUNetv2_predict -f 1
    assert main(["predict", "--weights", str(folder), "--out", str(one), "--folds", "[1]", *args]) == 0
    assert nib.load(str(one / "case_0001.nii.gz")).shape == image.shape
    seg = nib.load(str(out / "case_0001.nii.gz"))
    assert seg.shape == image.shape and np.allclose(seg.affine, affine)
    values = set(np.unique(np.asarray(seg.dataobj)).tolist())
    assert values <= set(LABELS.values())
    labels = json.loads((out / "case_0001.json").read_text())
    assert "liver" in json.dumps(labels)
