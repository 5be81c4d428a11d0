"""Labels back on the input grid without resampling every class: the same labels as full probability
resampling (linear) and as MONAI's nearest-neighbour resampling of the argmax (nearest), for flipped,
permuted and oblique grids; bf16 and the CPU-stitching fallback of the Predictor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import SpatialResample
from scipy import ndimage

from amos_zoo.data.recipes import get_recipe
from amos_zoo.infer import predictor as inference
from amos_zoo.infer.predictor import Predictor, labels_on_input_grid, resample_to_input_grid


def _smooth_probabilities(shape=(40, 36, 20), classes=5, seed=0) -> torch.Tensor:
    """Class probabilities with organ-like blobs (smooth, a clear argmax away from boundaries)."""
    rng = np.random.default_rng(seed)
    logits = np.stack([ndimage.gaussian_filter(rng.normal(size=shape), 3) * 40 for _ in range(classes)])
    logits[0] += 1.0
    return torch.softmax(torch.from_numpy(logits).float(), 0)


def _grids():
    src = np.diag([1.5, 1.5, 2.0, 1.0])
    src[:3, 3] = [-30.0, -27.0, -20.0]
    lps = np.diag([-0.7, -0.7, 2.0, 1.0])  # an input stored LPS at finer spacing (flips)
    lps[:3, 3] = [30.0, 25.0, -20.5]
    permuted = np.array([[0, 0.8, 0, -28], [0.9, 0, 0, -26], [0, 0, 2.5, -19.3], [0, 0, 0, 1]], dtype=float)
    theta = np.deg2rad(10)
    oblique = np.array(
        [[np.cos(theta), -np.sin(theta), 0, -25], [np.sin(theta), np.cos(theta), 0, -25], [0, 0, 2, -18], [0, 0, 0, 1]]
    )
    return src, {"lps": (lps, (86, 77, 20)), "permuted": (permuted, (60, 66, 16)), "oblique": (oblique, (50, 50, 18))}


@pytest.mark.parametrize("grid", ["lps", "permuted", "oblique"])
def test_labels_equal_full_resampling(grid):
    src, grids = _grids()
    dst, shape = grids[grid]
    scores = MetaTensor(_smooth_probabilities(), affine=torch.as_tensor(src))
    full = resample_to_input_grid(scores, dst, shape).argmax(0).numpy()
    fast = labels_on_input_grid(scores, dst, shape, "linear")
    assert fast.shape == shape
    assert np.mean(fast == full) >= 0.99999  # equal up to float rounding at exact ties

    reference = SpatialResample(mode="nearest", padding_mode="border", dtype=torch.float64)(
        MetaTensor(scores.argmax(0, keepdim=True).float(), affine=torch.as_tensor(src)),
        dst_affine=torch.as_tensor(dst),
        spatial_size=shape,
    )[0].numpy()
    nearest = labels_on_input_grid(scores, dst, shape, "nearest")
    if grid != "oblique":  # oblique grids use the full (linear) path
        assert np.mean(nearest == reference) >= 0.9999
    assert len(np.unique(fast)) == len(np.unique(full)) > 2

    # independent of MONAI: trilinear interpolation of each class score at the input voxels' positions on the
    # network grid (scipy, float64, border continued), then argmax
    from scipy.ndimage import map_coordinates

    to_src = np.linalg.inv(src) @ dst
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), 0).reshape(3, -1)
    coords = to_src[:3, :3] @ idx + to_src[:3, 3:4]
    probs = scores.as_tensor().double().numpy()
    scipy_scores = np.stack([map_coordinates(p, coords, order=1, mode="nearest") for p in probs])
    scipy_labels = scipy_scores.argmax(0).reshape(shape)
    assert np.mean(fast == scipy_labels) >= 0.9999, grid


def test_cropped_faces_are_background_and_volume_edges_continue():
    """As MONAI's inverse of the recipe: where the foreground crop cut air away the labels are background; beyond the
    volume's own edge the border label continues. Fast and full paths agree."""
    src, grids = _grids()
    src = src.copy()
    src[0, 3] = -20.0  # the cropped grid starts inside the input's field of view, which reaches x = -29.5 mm
    dst, shape = grids["lps"]
    probs = torch.zeros(3, 40, 36, 20)
    probs[1] = 1.0  # organ 1 everywhere on the cropped grid
    scores = MetaTensor(probs, affine=torch.as_tensor(src))
    scores.meta["cropped"] = [5, 0, 0, 0, 0, 0]  # 5 voxels of air cut before axis 0; nothing else cropped
    full = resample_to_input_grid(scores, dst, shape).argmax(0).numpy()
    fast = labels_on_input_grid(scores, dst, shape, "linear")
    assert np.array_equal(fast, full)
    world_x = dst[0, 0] * np.arange(shape[0]) + dst[0, 3]  # input voxels' x in mm (LPS: x decreases)
    inside = world_x > src[0, 3] + 1.5 * 0.5  # beyond half a voxel into the cropped grid: organ
    cut = world_x < src[0, 3] - 1.5 * 0.5  # on the air the crop removed: background
    assert (full[inside] == 1).all() and (full[cut] == 0).all() and cut.any()
    # axes 1 and 2 were not cropped: the input grid reaches past the volume there, and the border label continues
    assert (full[inside][:, -1, :] == 1).all() and (full[inside][:, :, -1] == 1).all()


def _predictor(**kw):
    net = torch.nn.Conv3d(1, 3, 3, padding=1)
    torch.nn.init.constant_(net.weight, 0.1)
    torch.nn.init.constant_(net.bias, -0.5)
    return Predictor(net, get_recipe("tiny", crop_foreground="none"), (16, 16, 16), sw_batch_size=2, **kw)


def test_bf16_precision_and_cpu_stitching_fallback(monkeypatch):
    x = torch.rand(1, 1, 20, 24, 18)
    with torch.no_grad():
        fp32 = _predictor(precision="fp32")._logits(x)
    bf16 = _predictor(precision="bf16")
    auto = _predictor()  # precision "auto": fp32 on a CPU, bit for bit
    assert bf16.autocast_bf16 and not auto.autocast_bf16
    with torch.no_grad():
        assert torch.equal(auto._logits(x), fp32)
    with torch.no_grad():
        diff = (bf16._logits(x) - fp32).abs().max()
    assert 0 < diff < 0.02  # bf16 was used (not bit-identical) and stays close

    calls = _whole_volume_passes_run_out_of_memory(monkeypatch)
    with pytest.warns(UserWarning, match="stitching windows on the CPU"):
        with torch.no_grad():
            out = _predictor(precision="fp32")._logits(x)
    assert calls == [None, "cpu"] and torch.allclose(out, fp32, atol=1e-6)


def test_cpu_stitching_fallback_with_mirroring_tta(monkeypatch):
    """Mirroring runs inside each window (one sliding-window pass for all 8 mirrorings, as nnU-Net does): after the
    whole-volume pass runs out of memory, the pass is redone stitching on the CPU, with one warning, and the averaged
    probabilities equal those of a run without the fallback."""
    import dataclasses

    recipe = dataclasses.replace(get_recipe("tiny", crop_foreground="none"), flip_prob=0.5)  # trained mirrored
    net = torch.nn.Conv3d(1, 3, 3, padding=1)

    def predictor():
        return Predictor(net, recipe, (16, 16, 16), sw_batch_size=2, tta=True, precision="fp32")

    image = MetaTensor(torch.rand(1, 20, 24, 18), affine=torch.eye(4))
    expected = predictor().probabilities_from_preprocessed({"image": image})
    calls = _whole_volume_passes_run_out_of_memory(monkeypatch)
    with pytest.warns(UserWarning, match="stitching windows on the CPU") as caught:
        got = predictor().probabilities_from_preprocessed({"image": image})
    assert calls == [None, "cpu"]
    assert sum("stitching windows" in str(w.message) for w in caught) == 1
    assert torch.allclose(got.as_tensor(), expected.as_tensor(), atol=1e-6)


def test_constant_windows_reuse_one_output_with_the_same_numbers():
    """Air around a body: windows of one constant value are not run through the network again; the stitched
    logits equal those of running every window (a window's output depends only on its content)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 3, 3, padding=1))
    x = torch.zeros(1, 1, 64, 48, 40)
    x[:, :, 20:40, 10:30, 8:30] = torch.rand(1, 1, 20, 20, 22)  # a 'body' in air (0 after the CT window)

    def logits(skip):
        p = Predictor(
            net, get_recipe("tiny"), (16, 16, 16), sw_batch_size=4, precision="fp32", skip_constant_windows=skip
        )
        with torch.no_grad():
            return p._logits(x), p.skipped_windows

    every, none_skipped = logits(False)
    reused, skipped = logits(True)
    assert none_skipped == 0 and skipped > 20
    assert torch.allclose(reused, every, atol=1e-6)


def _whole_volume_passes_run_out_of_memory(monkeypatch) -> list:
    """Make every sliding-window pass that stitches on the network's device raise CUDA's out-of-memory error
    (passes with ``device="cpu"`` run); returns the list that records each pass's stitching device."""
    calls = []
    real = inference.sliding_window_inference

    def fake(*args, **kwargs):
        calls.append(kwargs.get("device"))
        if kwargs.get("device") is None:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(inference, "sliding_window_inference", fake)
    return calls
