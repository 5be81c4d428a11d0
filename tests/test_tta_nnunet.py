"""Mirror test-time augmentation against nnU-Net's own code: v2 averages logits inside each window
(``nnUNetPredictor._internal_maybe_mirror_and_predict``), v1 averages softmax probabilities
(``SegmentationNetwork._internal_maybe_mirror_and_pred_3D``)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from amos_zoo.data.recipes import get_recipe
from amos_zoo.infer.predictor import Predictor

ROI = (16, 12, 8)


def _network() -> nn.Module:
    """A small network that is not mirror-symmetric, so each mirrored pass differs."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv3d(1, 4, 3, padding=1), nn.LeakyReLU(0.01), nn.Conv3d(4, 3, (3, 1, 3), padding=(1, 0, 1))
    )


def _predictor(net: nn.Module, protocol: str, blend: str) -> Predictor:
    recipe = replace(get_recipe(protocol), spacing=(1.0, 1.0, 1.0), intensity_stats=((-100.0, 200.0, 50.0, 40.0),))
    return Predictor(net, recipe, ROI, sw_batch_size=1, tta=True, blend=blend, amp=False, sw_mode="gaussian")


def test_nnunet_v2_mirroring_averages_logits_as_nnunetv2():
    pytest.importorskip("nnunetv2")
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    net = _network().eval()
    x = torch.randn(1, 1, *ROI)
    theirs = nnUNetPredictor(use_mirroring=True, device=torch.device("cpu"), verbose=False, allow_tqdm=False)
    theirs.network = net
    theirs.allowed_mirroring_axes = (0, 1, 2)
    with torch.no_grad():
        expected = theirs._internal_maybe_mirror_and_predict(x.clone())
        ours = _predictor(net, "nnunet-v2", "logits")
        window = ours._window_output(x)
        whole = ours._logits(x)  # one window: the blend returns it unchanged
    torch.testing.assert_close(window, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(whole, expected, rtol=1e-5, atol=1e-5)
    # the softmax of the mean logits is not the mean softmax: the two rules are different numbers
    mean_softmax = _predictor(net, "nnunet-v2", "probabilities")._window_output(x)
    assert (torch.softmax(window, 1) - mean_softmax).abs().max() > 1e-4


def _v1_network(inner: nn.Module):
    """``inner`` as nnU-Net v1's SegmentationNetwork (softmax as its inference non-linearity)."""
    from nnunet.network_architecture.neural_network import SegmentationNetwork

    class V1Network(SegmentationNetwork):
        def __init__(self) -> None:
            super().__init__()
            self.inner, self.conv_op, self.num_classes = inner, nn.Conv3d, 3
            self.inference_apply_nonlin = lambda out: torch.softmax(out, 1)

        def forward(self, x):
            return self.inner(x)

    return V1Network().eval()


def test_amos_paper_mirroring_averages_probabilities_as_nnunet_v1():
    pytest.importorskip("nnunet")
    net = _network().eval()
    x = torch.randn(1, 1, *ROI)
    with torch.no_grad():
        expected = _v1_network(net)._internal_maybe_mirror_and_pred_3D(x.clone(), (0, 1, 2), True)
        ours = _predictor(net, "amos-paper", "probabilities")
        window = ours._window_output(x)
        whole = ours._logits(x)
    torch.testing.assert_close(window, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(whole, expected, rtol=1e-5, atol=1e-5)


def test_protocols_name_their_blend():
    from amos_zoo.protocols import get_protocol

    assert get_protocol("nnunet-v2").values("model")["blend"] == "logits"
    assert get_protocol("amos-paper").values("model")["blend"] == "probabilities"
    assert get_protocol("btcv").values("model")["blend"] == "logits"


def _nnunetv2_predictor(net: nn.Module, tile: tuple[int, ...], num_classes: int):
    from types import SimpleNamespace

    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(
        tile_step_size=0.5,
        use_gaussian=True,
        use_mirroring=True,
        perform_everything_on_device=False,
        device=torch.device("cpu"),
        verbose=False,
        allow_tqdm=False,
    )
    predictor.network = net
    predictor.allowed_mirroring_axes = (0, 1, 2)
    predictor.configuration_manager = SimpleNamespace(patch_size=list(tile))
    predictor.label_manager = SimpleNamespace(num_segmentation_heads=num_classes)
    return predictor


@pytest.mark.parametrize("shape", [(23, 13, 7), (16, 12, 8)])
def test_nnunet_tiling_equals_nnunetv2_sliding_window(shape, monkeypatch):
    """nnU-Net's window positions, zero padding to one window, gaussian weights and per-window mirroring: the whole
    volume's logits equal nnunetv2's ``predict_sliding_window_return_logits``, run in float32 (nnU-Net stores its
    gaussian and sums in float16, where a 3D gaussian's corners underflow to 0; the test lifts both to float32)."""
    pytest.importorskip("nnunetv2")
    import nnunetv2.inference.predict_from_raw_data as v2_predict
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian, compute_steps_for_sliding_window

    from amos_zoo.infer.predictor import nnunet_gaussian, nnunet_steps

    def gaussian_fp32(*args, **kwargs):
        return compute_gaussian.__wrapped__(*args, **{**kwargs, "dtype": torch.float32})

    monkeypatch.setattr(v2_predict, "compute_gaussian", gaussian_fp32)
    monkeypatch.setattr(torch, "half", torch.float32)  # the accumulators' dtype=torch.half
    net = _network().eval()
    image = torch.randn(1, *shape)
    with torch.no_grad():
        expected = _nnunetv2_predictor(net, ROI, 3).predict_sliding_window_return_logits(image.clone())
    monkeypatch.undo()
    assert expected.dtype == torch.float32
    with torch.no_grad():
        ours = replace(_predictor(net, "nnunet-v2", "logits"), sw_tiling="nnunet")._logits(image[None])[0]
        monai = _predictor(net, "nnunet-v2", "logits")._logits(image[None])[0]
    padded = [max(s, t) for s, t in zip(shape, ROI)]
    assert nnunet_steps(tuple(padded), ROI, 0.5) == compute_steps_for_sliding_window(padded, ROI, 0.5)
    theirs_gaussian = compute_gaussian(ROI, 1.0 / 8, 10, dtype=torch.float32, device=torch.device("cpu"))
    torch.testing.assert_close(nnunet_gaussian(ROI), theirs_gaussian / theirs_gaussian.max(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    if shape == (23, 13, 7):  # MONAI places and weights the windows otherwise: a difference this test sees
        assert (monai - expected).abs().max() > 1e-2, float((monai - expected).abs().max())


@pytest.mark.parametrize("shape", [(23, 13, 7), (16, 12, 8)])
def test_nnunet_tiling_equals_nnunet_v1_tiled_prediction(shape):
    """The AMOS fork's prediction (nnU-Net v1 ``_internal_predict_3D_3Dconv_tiled`` on the CPU, float32): the same
    window positions, padding and gaussian, softmax probabilities blended; amos-paper's card predicts so."""
    pytest.importorskip("nnunet")
    net = _network().eval()
    image = torch.randn(1, *shape)
    with torch.no_grad():
        _, expected = _v1_network(net)._internal_predict_3D_3Dconv_tiled(
            image.numpy().copy(),
            0.5,
            True,
            (0, 1, 2),
            ROI,
            None,
            True,
            "constant",
            {"constant_values": 0},
            False,
            False,
        )
        ours = replace(_predictor(net, "amos-paper", "probabilities"), sw_tiling="nnunet")._logits(image[None])[0]
    torch.testing.assert_close(ours, torch.as_tensor(expected), rtol=1e-5, atol=1e-6)
