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


def _smooth_probabilities(shape=(40, 36, 20), classes=5, seed=0, sigma=5.0) -> torch.Tensor:
    """Class probabilities with organ-like blobs (smooth, a clear argmax away from boundaries; with the default
    ``sigma`` about a quarter of the cells lie on a label boundary, so the fast path does not fall back)."""
    rng = np.random.default_rng(seed)
    logits = np.stack([ndimage.gaussian_filter(rng.normal(size=shape), sigma) * 40 * sigma / 3 for _ in range(classes)])
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


def _fast_path_only(monkeypatch) -> None:
    """Fail if labels_on_input_grid falls back to resampling every class (the test's own reference calls are not
    affected: they use the imported name)."""

    def refuse(*args, **kwargs):
        raise AssertionError("labels_on_input_grid fell back to the full resampling")

    monkeypatch.setattr(inference, "resample_to_input_grid", refuse)


@pytest.mark.parametrize("grid", ["lps", "permuted", "oblique"])
def test_labels_equal_full_resampling(grid, monkeypatch):
    src, grids = _grids()
    dst, shape = grids[grid]
    scores = MetaTensor(_smooth_probabilities(), affine=torch.as_tensor(src))
    full = resample_to_input_grid(scores, dst, shape).argmax(0).numpy()
    with monkeypatch.context() as patch:
        if grid != "oblique":  # axis-aligned: the boundary-only path, never the fallback
            _fast_path_only(patch)
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


def _scipy_linear_labels(probs: torch.Tensor, src: np.ndarray, dst: np.ndarray, shape) -> np.ndarray:
    """Independent reference: each class trilinearly interpolated at the input voxels (scipy, float64, border
    continued), then argmax (first maximum)."""
    from scipy.ndimage import map_coordinates

    to_src = np.linalg.inv(src) @ dst
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), 0).reshape(3, -1)
    coords = to_src[:3, :3] @ idx + to_src[:3, 3:4]
    values = np.stack([map_coordinates(p, coords, order=1, mode="nearest") for p in probs.double().numpy()])
    return values.argmax(0).reshape(shape)


def test_only_classes_that_can_win_are_interpolated_exactly(monkeypatch):
    """At a boundary between organs 1 and 2 a third class that is argmax at no corner wins between them (0.45 against
    0.53 (1 - t) and 0.53 t): the fast path must keep it as a candidate. Random probabilities elsewhere give cells
    with 2, 3 and more candidate classes; the labels equal scipy's and MONAI's full resampling."""
    src, grids = _grids()
    dst, shape = grids["lps"]
    probs = _smooth_probabilities(classes=6, seed=1)
    slab = probs[:, :, 24:, :]  # a plane boundary between organ 1 (x < 20) and organ 2, class 3 at 0.45 everywhere
    slab.zero_()
    slab[0], slab[3] = 0.02, 0.45
    slab[1, :20], slab[2, 20:] = 0.53, 0.53
    rng = np.random.default_rng(2)
    noisy = torch.from_numpy(rng.dirichlet(np.full(6, 0.3), size=(12, 3, 8)).transpose(3, 0, 1, 2)).float()
    probs[:, 4:16, 18:21, 6:14] = noisy  # a block of unstructured probabilities: many classes compete there
    scores = MetaTensor(probs, affine=torch.as_tensor(src))
    reference = _scipy_linear_labels(probs, src, dst, shape)
    full = resample_to_input_grid(scores, dst, shape).argmax(0).numpy()
    _fast_path_only(monkeypatch)
    fast = labels_on_input_grid(scores, dst, shape, "linear")
    assert (reference == 3).sum() > 100  # the third class wins between the organs: the case is exercised
    assert np.mean(fast == reference) >= 0.99999
    assert np.mean(fast == full) >= 0.99999
    assert np.mean(full == reference) >= 0.99999


def test_exact_ties_go_to_the_lower_class_as_argmax(monkeypatch):
    """Where two classes have equal probabilities at every corner their interpolated values are equal: argmax (and
    MONAI's full resampling followed by argmax) take the lower class, and so does the fast path."""
    src, grids = _grids()
    dst, shape = grids["lps"]
    probs = torch.tensor([0.9, 0.025, 0.025, 0.025, 0.025])[:, None, None, None].repeat(1, 40, 36, 20)  # background
    probs[:, 4:16, 8:28, 5:15] = torch.tensor([0.0, 0.0, 0.5, 0.5, 0.0])[:, None, None, None]  # 2 and 3 tie
    probs[:, 22:36, 8:28, 5:15] = torch.tensor([0.0, 0.5, 0.0, 0.0, 0.5])[:, None, None, None]  # 1 and 4 tie
    scores = MetaTensor(probs, affine=torch.as_tensor(src))
    full = resample_to_input_grid(scores, dst, shape).argmax(0).numpy()
    _fast_path_only(monkeypatch)
    fast = labels_on_input_grid(scores, dst, shape, "linear")
    assert set(np.unique(fast)) == {0, 1, 2}  # classes 3 and 4 never win a tie
    assert np.array_equal(fast, full)
    assert np.array_equal(fast, _scipy_linear_labels(probs, src, dst, shape))


def test_exact_tie_between_two_candidates_goes_to_the_lower_class(monkeypatch):
    """Two classes only (the interpolated difference decides): halfway between corners (0.625, 0.375) and
    (0.375, 0.625) both values are exactly 0.5 (an input grid of half the spacing puts voxels there); argmax of the
    exact interpolation (scipy, float64) takes the lower class, and so does the fast path. MONAI's full resampling
    agrees away from the tie plane (on it, its float32 grid coordinates round some weights off 0.5)."""
    src = np.diag([2.0, 2.0, 2.0, 1.0])
    dst = np.diag([1.0, 1.0, 1.0, 1.0])
    shape = (16, 16, 16)
    probs = torch.zeros(3, 8, 8, 8)
    probs[1, :4], probs[2, :4] = 0.625, 0.375
    probs[1, 4:], probs[2, 4:] = 0.375, 0.625
    scores = MetaTensor(probs, affine=torch.as_tensor(src))
    full = resample_to_input_grid(scores, dst, shape).argmax(0).numpy()
    _fast_path_only(monkeypatch)
    fast = labels_on_input_grid(scores, dst, shape, "linear")
    assert (fast[7] == 1).all() and (fast[8] == 2).all()  # x = 7 mm: halfway between source voxels 3 and 4
    assert np.array_equal(fast, _scipy_linear_labels(probs, src, dst, shape))
    assert np.array_equal(np.delete(fast, 7, 0), np.delete(full, 7, 0)) and (full[7] == 1).mean() > 0.5
