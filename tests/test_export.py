"""Export: a MONAI bundle that monai.bundle runs on a NIfTI (same geometry, same labels as amos-zoo predict),
and TorchScript / ONNX files whose outputs match PyTorch (checked with torch.jit and onnxruntime)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from amos_zoo.cli.main import main
from amos_zoo.engine.export import export_model
from amos_zoo.engine.predict import load_predictor
from amos_zoo.weights import load


def test_bundle_runs_with_monai_bundle_and_matches_predict(amos_checkpoint, synth_root, tmp_path):
    from monai.bundle import run

    result = export_model(amos_checkpoint, "bundle", tmp_path / "bundle")
    assert result.max_abs_diff == 0.0
    meta = json.loads((tmp_path / "bundle" / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"]["1"] == "spleen"

    scan = sorted((synth_root / "imagesTs").glob("*.nii.gz"))[0]
    run(
        run_id="run",
        init_id="initialize",
        config_file=str(tmp_path / "bundle" / "configs" / "inference.json"),
        meta_file=str(tmp_path / "bundle" / "configs" / "metadata.json"),
        bundle_root=str(tmp_path / "bundle"),
        dataset_dir=str(synth_root / "imagesTs"),
        output_dir=str(tmp_path / "out"),
    )
    written = nib.load(tmp_path / "out" / scan.name.replace(".nii.gz", "_seg.nii.gz"))
    original = nib.load(scan)
    assert written.shape == original.shape
    np.testing.assert_allclose(written.affine, original.affine, atol=1e-5)
    labels, _, _ = load_predictor(amos_checkpoint).predict_case(scan)
    agreement = float((np.asarray(written.dataobj) == labels).mean())
    assert agreement >= 0.999, agreement

    # the bundle is also a weights source: amos_zoo.weights.load reads it back
    net = load(tmp_path / "bundle")
    ckpt = torch.load(amos_checkpoint, weights_only=True)["state_dict"]
    assert all(torch.equal(v, ckpt[f"net.{k}"]) for k, v in net.state_dict().items())


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_torchscript_and_onnx_match_pytorch(amos_checkpoint, tmp_path, fmt):
    assert main(["export", "--ckpt", str(amos_checkpoint), "--format", fmt, "--out", str(tmp_path / fmt)]) == 0
    sidecar = json.loads((tmp_path / fmt / "model.json").read_text())
    assert sidecar["labels"]["6"] == "liver" and sidecar["recipe"]["name"] == "tiny"
    net = load(amos_checkpoint).eval()
    x = torch.randn(3, 1, *sidecar["roi_size"])  # another batch size than the export's example
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


def test_export_refuses_a_non_empty_folder(amos_checkpoint, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("keep me")
    assert main(["export", "--ckpt", str(amos_checkpoint), "--format", "bundle", "--out", str(tmp_path / "taken")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "taken" / "notes.txt").read_text() == "keep me"
