"""Export: for every registered 3D architecture, the MONAI bundle run by ``monai.bundle`` agrees with
``amos-zoo predict`` on a CT and an MRI case (the bundle's inference.json is generated from the same recipe
specification as the predictor's transforms); every registered architecture exports to TorchScript and ONNX with
outputs equal to PyTorch's and its model card beside them."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from amos_zoo.card import ModelCard
from amos_zoo.cli.main import main
from amos_zoo.data.labels import AMOS_LABELS
from amos_zoo.data.recipes import get_recipe
from amos_zoo.experiments.reproduce import SMOKE_SETTINGS
from amos_zoo.infer.export import export_model
from amos_zoo.infer.pipeline import load_predictor
from amos_zoo.models.registry import MODEL_REGISTRY, build_network
from amos_zoo.weights import load_weights
from amos_zoo.weights.loading import save_checkpoint

#: a small configuration of every registered architecture (3D: the smoke settings; timm_unet: 2D)
SMALL = {
    **SMOKE_SETTINGS,
    # one block per stage: the same operators to export, a quarter of the ONNX export time
    "swin_unetr": {"arch_kwargs": {"feature_size": 12, "depths": [1, 1, 1, 1]}, "patch": [64, 64, 32]},
    "timm_unet": {"arch_kwargs": {"encoder": "resnet18", "spatial_dims": 2}, "patch": [64, 64]},
}
ARCH_3D = [a for a in MODEL_REGISTRY if a != "timm_unet"]


def test_every_registered_architecture_has_a_small_setting():
    assert set(SMALL) == set(MODEL_REGISTRY)


def _checkpoint(arch: str, tmp_path) -> tuple:
    setting = SMALL[arch]
    card = ModelCard(
        arch,
        setting["arch_kwargs"],
        1,
        AMOS_LABELS.display_names,
        get_recipe("tiny", patch_size=setting["patch"]),
        tuple(setting["patch"]),
        sw_batch_size=2,
    )
    torch.manual_seed(0)
    return save_checkpoint(build_network(card), card, tmp_path / f"{arch}.ckpt"), card


def _run_bundle(bundle, scan, modality, out):
    from monai.bundle import run

    data = out / "in"
    data.mkdir(parents=True)
    (data / scan.name).symlink_to(scan)
    run(
        run_id="run",
        init_id="initialize",
        config_file=str(bundle / "configs" / "inference.json"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        bundle_root=str(bundle),
        dataset_dir=str(data),
        output_dir=str(out / "seg"),
        modality=modality,
    )
    return nib.load(out / "seg" / scan.name.replace(".nii.gz", "_seg.nii.gz"))


@pytest.mark.parametrize("arch", ARCH_3D)
def test_bundle_agrees_with_predict_on_ct_and_mri(arch, synth_root, tmp_path):
    ckpt, card = _checkpoint(arch, tmp_path)
    result = export_model(ckpt, "bundle", tmp_path / "bundle")
    assert result.max_abs_diff == 0.0
    meta = json.loads((tmp_path / "bundle" / "configs" / "metadata.json").read_text())
    assert meta["amos_zoo_card"] == card.to_dict()
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"]["1"] == "spleen"
    predictor = load_predictor(ckpt)
    for case, modality in (("amos_0005", "CT"), ("amos_0500", "MRI")):
        scan = next(synth_root.rglob(f"images*/{case}.nii.gz"))
        written = _run_bundle(tmp_path / "bundle", scan, modality, tmp_path / modality)
        original = nib.load(scan)
        assert written.shape == original.shape
        np.testing.assert_allclose(written.affine, original.affine, atol=1e-5)
        labels, _, _ = predictor.predict_case(scan, modality)
        agreement = float((np.asarray(written.dataobj) == labels).mean())
        assert agreement >= 0.9999, (arch, modality, agreement)
    # the bundle is also a weights source: load_weights reads it back, tensor for tensor
    net = load_weights(tmp_path / "bundle")
    ckpt_state = torch.load(ckpt, weights_only=True)["state_dict"]
    state = net.state_dict()
    assert state.keys() == {k[len("net.") :] for k in ckpt_state}
    assert all(torch.equal(state[k], ckpt_state[f"net.{k}"]) for k in state)


@pytest.mark.parametrize("case, modality", [("amos_0005", "CT"), ("amos_0500", "MRI")])
def test_bundle_preprocessing_equals_training_preprocessing(case, modality, synth_root, tmp_path):
    """The bundle's parsed preprocessing gives the very tensor training gives (an MRI too: percentiles of its
    non-zero voxels, not of every voxel as MONAI's ScaleIntensityRangePercentilesd would take them)."""
    from monai.bundle import ConfigParser
    from monai.transforms import Compose

    from amos_zoo.data.transforms import deterministic_transforms

    ckpt, card = _checkpoint("unet", tmp_path)
    export_model(ckpt, "bundle", tmp_path / "bundle")
    parser = ConfigParser()
    parser.read_config(tmp_path / "bundle" / "configs" / "inference.json")
    parser["bundle_root"] = str(tmp_path / "bundle")
    scan = str(next(synth_root.rglob(f"images*/{case}.nii.gz")))
    from_bundle = parser.get_parsed_content("preprocessing")({"image": scan, "modality": modality})["image"]
    from_training = Compose(deterministic_transforms(card.recipe, keys=("image",)))(
        {"image": scan, "modality": modality}
    )
    assert from_bundle.shape == from_training["image"].shape
    assert torch.equal(from_bundle.as_tensor(), from_training["image"].as_tensor())
    assert torch.equal(from_bundle.affine, from_training["image"].affine)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("arch", list(MODEL_REGISTRY))
def test_every_registered_architecture_exports(arch, fmt, tmp_path):
    ckpt, card = _checkpoint(arch, tmp_path)
    assert main(["export", "--ckpt", str(ckpt), "--format", fmt, "--out", str(tmp_path / fmt)]) == 0
    sidecar = json.loads((tmp_path / fmt / "model.json").read_text())
    assert ModelCard.from_dict(sidecar["card"]) == card and sidecar["max_abs_diff_vs_pytorch"] < 1e-3
    net = load_weights(ckpt).eval()
    x = torch.randn(3, 1, *card.roi_size)  # another batch size than the export's example
    with torch.no_grad():
        expected = net(x).numpy()
    if fmt == "torchscript":
        got = torch.jit.load(str(tmp_path / fmt / "model.ts"))(x).detach().numpy()
        np.testing.assert_allclose(got, expected, atol=1e-5)
    else:
        import onnxruntime as ort

        session = ort.InferenceSession(str(tmp_path / fmt / "model.onnx"), providers=["CPUExecutionProvider"])
        (got,) = session.run(None, {"image": x.numpy()})
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_export_refuses_a_non_empty_folder_and_a_2d_bundle(tmp_path, capsys):
    ckpt, _ = _checkpoint("unet", tmp_path)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("keep me")
    assert main(["export", "--ckpt", str(ckpt), "--format", "bundle", "--out", str(tmp_path / "taken")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "taken" / "notes.txt").read_text() == "keep me"
    ckpt_2d, _ = _checkpoint("timm_unet", tmp_path)
    assert main(["export", "--ckpt", str(ckpt_2d), "--format", "bundle", "--out", str(tmp_path / "b2d")]) == 2
    assert "cannot be a NIfTI bundle" in capsys.readouterr().err
