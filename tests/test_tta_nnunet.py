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


def test_amos_paper_mirroring_averages_probabilities_as_nnunet_v1():
    pytest.importorskip("nnunet")
    from nnunet.network_architecture.neural_network import SegmentationNetwork

    class V1Network(SegmentationNetwork):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner, self.conv_op, self.num_classes = inner, nn.Conv3d, 3
            self.inference_apply_nonlin = lambda out: torch.softmax(out, 1)

        def forward(self, x):
            return self.inner(x)

    net = _network().eval()
    x = torch.randn(1, 1, *ROI)
    with torch.no_grad():
        expected = V1Network(net)._internal_maybe_mirror_and_pred_3D(x.clone(), (0, 1, 2), True)
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
