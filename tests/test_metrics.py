"""The metric suite against the references: MONAI's compute_dice and DeepMind's surface-distance."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import surface_distance as sd_ref
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from monai.metrics import compute_dice
from scipy import ndimage

from amos_zoo.metrics.case import evaluate_case
from amos_zoo.metrics.evaluate import GeometryMismatchError, evaluate_folders
from amos_zoo.metrics.surface import surface_distances
from amos_zoo.metrics.tolerances import TOLERANCE_PRESETS, get_tolerances

ATOL = 1e-6


def _reference(gt, pred, spacing, tol):
    d = sd_ref.compute_surface_distances(gt, pred, spacing)
    return {
        "nsd": sd_ref.compute_surface_dice_at_tolerance(d, tol),
        "hd95": sd_ref.compute_robust_hausdorff(d, 95),
        "assd": float(np.mean(sd_ref.compute_average_surface_distance(d))),
    }


def _monai_dice(gt, pred, num_classes):
    def onehot(a):
        t = torch.as_tensor(a.astype(np.int64))[None, None]
        return torch.nn.functional.one_hot(t[:, 0], num_classes).movedim(-1, 1)

    return compute_dice(onehot(pred), onehot(gt), include_background=False, ignore_empty=False)[0].numpy()


@st.composite
def mask_pairs(draw):
    """Random and structured masks: noise, boxes, shifted blobs, single voxels, full volumes, touching organs."""
    shape = tuple(draw(st.integers(3, 18)) for _ in range(3))
    spacing = tuple(draw(st.floats(0.3, 5.0)) for _ in range(3))
    seed = draw(st.integers(0, 2**31 - 1))
    kind = draw(st.sampled_from(["noise", "blob", "single", "full", "touching", "box"]))
    rng = np.random.default_rng(seed)
    gt = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    if kind == "noise":
        gt = (rng.random(shape) < rng.uniform(0.05, 0.6)).astype(np.uint8) * rng.integers(1, 4, shape).astype(np.uint8)
        pred = (rng.random(shape) < rng.uniform(0.05, 0.6)).astype(np.uint8) * rng.integers(1, 4, shape).astype(
            np.uint8
        )
    elif kind == "blob":
        blob = ndimage.gaussian_filter(rng.random(shape), 1.5)
        gt[blob > np.quantile(blob, 0.6)] = 1
        pred = np.roll(gt, tuple(rng.integers(-2, 3, 3)), axis=(0, 1, 2))
        pred = ndimage.binary_dilation(pred, iterations=int(rng.integers(0, 2))).astype(np.uint8)
    elif kind == "single":
        gt[tuple(rng.integers(0, s) for s in shape)] = 1
        pred[tuple(rng.integers(0, s) for s in shape)] = 1
    elif kind == "full":
        gt[:] = 1
        pred[..., : max(1, shape[2] // 2)] = 1
    elif kind == "touching":
        cut = shape[0] // 2
        gt[:cut], gt[cut:] = 1, 2
        pred[: cut + 1], pred[cut + 1 :] = 1, 2
    else:
        lo = [int(rng.integers(0, s)) for s in shape]
        hi = [int(rng.integers(a + 1, s + 1)) for a, s in zip(lo, shape)]
        gt[tuple(slice(a, b) for a, b in zip(lo, hi))] = 1
        pred[tuple(slice(max(0, a - 1), b) for a, b in zip(lo, hi))] = 1
    return gt, pred, spacing


@st.composite
def pairs_with_tolerance(draw):
    """A mask pair and a tolerance; half of the tolerances equal a voxel-offset distance exactly (computed as the
    reference computes distances), so that distances equal to the tolerance, where surface.py takes care to compare
    as the reference does, are exercised on every run."""
    gt, pred, spacing = draw(mask_pairs())
    if draw(st.booleans()):
        k = [draw(st.integers(0, 3)) for _ in range(3)]
        scaled = [ki * si for ki, si in zip(k, spacing)]
        tol = float(np.sqrt(scaled[0] * scaled[0] + scaled[1] * scaled[1] + scaled[2] * scaled[2]))
    else:
        tol = draw(st.floats(0.0, 6.0))
    return (gt, pred, spacing), tol


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pairs_with_tolerance())
def test_parity_with_references(pair_and_tol):
    (gt, pred, spacing), tol = pair_and_tol
    ours = evaluate_case(gt, pred, spacing, [1, 2, 3], tolerance=tol)
    dice_ref = _monai_dice(gt, pred, 4)
    for lid in (1, 2, 3):
        g, p = gt == lid, pred == lid
        assert ours[lid]["dice"] == pytest.approx(float(dice_ref[lid - 1]), abs=ATOL)
        if g.any() and p.any():
            ref = _reference(g, p, spacing, tol)
            for m in ("nsd", "hd95", "assd"):
                assert ours[lid][m] == pytest.approx(ref[m], abs=ATOL), (lid, m)


def _pairs(distances, areas):
    """(distance, area) pairs in a canonical order: distances rounded to 1e-9 first, so that two distances equal up
    to the last bit (scipy's EDT and a k-d tree break ties between equally near points differently) sort alike."""
    d, a = np.round(np.asarray(distances), 9), np.asarray(areas)
    order = np.lexsort((a, d))
    return d[order], a[order]


def test_distance_equal_to_the_tolerance_up_to_the_last_bit():
    """Found by hypothesis: with a spacing of 1.9999999999999991 mm along x and 2.0 mm along z, a surface point's
    nearest neighbours one voxel away along x and along z are equally near in exact arithmetic but not in floating
    point; the reference (an exact distance transform) keeps the smaller, so NSD at a tolerance equal to it must."""
    rng = np.random.default_rng(0)
    shape = tuple(int(n) for n in rng.integers(3, 7, 3))
    gt = (rng.random(shape) < 0.35).astype(np.uint8)
    pred = (rng.random(shape) < 0.35).astype(np.uint8)
    spacing = (1.9999999999999991, 1.0, 2.0)
    ours = evaluate_case(gt, pred, spacing, [1], tolerance=spacing[0], metrics=("nsd",))[1]["nsd"]
    assert ours == pytest.approx(_reference(gt == 1, pred == 1, spacing, spacing[0])["nsd"], abs=ATOL)


@settings(max_examples=40, deadline=None)
@given(mask_pairs())
def test_sorted_surface_distances_equal_reference(pair):
    gt, pred, spacing = pair
    g, p = gt == 1, pred == 1
    if not (g.any() and p.any()):
        return
    ours = surface_distances(g, p, spacing)
    ref = sd_ref.compute_surface_distances(g, p, spacing)
    assert np.all(np.diff(ours.distances_gt_to_pred) >= 0) and np.all(np.diff(ours.distances_pred_to_gt) >= 0)
    for mine, theirs in (
        (
            _pairs(ours.distances_gt_to_pred, ours.surfel_areas_gt),
            _pairs(ref["distances_gt_to_pred"], ref["surfel_areas_gt"]),
        ),
        (
            _pairs(ours.distances_pred_to_gt, ours.surfel_areas_pred),
            _pairs(ref["distances_pred_to_gt"], ref["surfel_areas_pred"]),
        ),
    ):
        np.testing.assert_allclose(mine[0], theirs[0], atol=ATOL)
        np.testing.assert_allclose(mine[1], theirs[1], atol=ATOL)


def test_2d_masks_match_reference():
    rng = np.random.default_rng(3)
    gt = ndimage.gaussian_filter(rng.random((40, 30)), 2) > 0.5
    pred = np.roll(gt, 2, axis=0)
    ours = surface_distances(gt, pred, (0.8, 1.3))
    ref = sd_ref.compute_surface_distances(gt, pred, (0.8, 1.3))
    assert ours.surface_dice(1.0) == pytest.approx(sd_ref.compute_surface_dice_at_tolerance(ref, 1.0), abs=ATOL)
    assert ours.robust_hausdorff(95) == pytest.approx(sd_ref.compute_robust_hausdorff(ref, 95), abs=ATOL)


def test_empty_mask_conventions():
    gt = np.zeros((6, 6, 6), np.uint8)
    pred = np.zeros_like(gt)
    gt[1:3, 1:3, 1:3] = 1  # organ 1 in reference only
    pred[3:5, 3:5, 3:5] = 2  # organ 2 in prediction only; organ 3 absent from both
    spacing = (1.0, 1.0, 2.0)
    diagonal = float(np.sqrt(36 + 36 + 144))
    scored = evaluate_case(gt, pred, spacing, [1, 2, 3])
    assert scored[1] == {"dice": 0.0, "nsd": 0.0, "hd95": diagonal, "assd": diagonal, "gt_voxels": 8, "pred_voxels": 0}
    assert scored[2]["dice"] == 0.0 and scored[2]["hd95"] == diagonal
    assert scored[3]["dice"] == 1.0 and scored[3]["nsd"] == 1.0 and scored[3]["hd95"] == 0.0
    ignored = evaluate_case(gt, pred, spacing, [1, 2, 3], empty_policy="ignore")
    assert ignored[1]["dice"] == 0.0
    assert np.isnan(ignored[2]["dice"]) and np.isnan(ignored[3]["nsd"])
    # MONAI's ignore_empty=True gives NaN where the reference is empty, as the "ignore" policy does
    onehot = lambda a: torch.nn.functional.one_hot(torch.as_tensor(a.astype(np.int64))[None], 4).movedim(-1, 1)  # noqa: E731
    monai_ignore = compute_dice(onehot(pred), onehot(gt), include_background=False, ignore_empty=True)[0]
    assert monai_ignore[0] == 0.0 and torch.isnan(monai_ignore[1]) and torch.isnan(monai_ignore[2])


def test_flare22_preset_follows_the_flare22_script():
    """FLARE22_DSC_NSD_Eval.py's rules with DeepMind's surface distances: aorta, IVC and esophagus scored on the
    reference's slices z_lower:z_upper (the last excluded), NSD 0 below Dice 0.2, values rounded to 4 decimals."""
    rng = np.random.default_rng(5)
    gt = np.zeros((30, 28, 24), np.uint8)
    gt[10:16, 8:14, 4:18] = 8  # aorta on slices 4..17
    gt[18:26, 14:22, 6:14] = 6  # liver
    gt[2:6, 2:6, 2:5] = 1  # spleen
    pred = np.zeros_like(gt)
    pred[11:17, 8:14, 0:24] = 8  # beyond the reference's slices at both ends: not held against it
    pred[19:26, 14:21, 6:15] = 6
    pred[20:24, 20:24, 20:23] = 1  # Dice 0 (< 0.2): NSD 0
    pred[rng.random(gt.shape) < 0.001] = 0
    spacing = (0.8, 0.8, 2.5)
    ours = evaluate_case(gt, pred, spacing, [1, 6, 8], tolerance="flare22", metrics=("dice", "nsd"))

    def flare(lid, tolerance, restricted):
        g, p = gt == lid, pred == lid
        if restricted:
            z = np.where(g)[2]
            g, p = g[:, :, z.min() : z.max()], p[:, :, z.min() : z.max()]
        dice = float(2 * (g & p).sum() / (g.sum() + p.sum()))
        nsd = (
            0.0
            if dice < 0.2
            else sd_ref.compute_surface_dice_at_tolerance(sd_ref.compute_surface_distances(g, p, spacing), tolerance)
        )
        return round(dice, 4), round(nsd, 4)

    assert (ours[8]["dice"], ours[8]["nsd"]) == flare(8, 2, True)
    assert (ours[6]["dice"], ours[6]["nsd"]) == flare(6, 5, False)
    assert (ours[1]["dice"], ours[1]["nsd"]) == (0.0, 0.0) == flare(1, 3, False)
    unrestricted = evaluate_case(gt, pred, spacing, [8], tolerance=2.0, metrics=("dice",))
    assert unrestricted[8]["dice"] < ours[8]["dice"]  # the restriction changes the score
    assert TOLERANCE_PRESETS["flare22"].verified and "FLARE22_DSC_NSD_Eval.py" in TOLERANCE_PRESETS["flare22"].source


def test_tolerance_presets_have_sources_and_unverified_amos():
    assert get_tolerances("flare22").for_label(6) == 5.0  # liver
    assert get_tolerances("flare22").for_label(13) == 7.0  # duodenum, as the FLARE22 script states
    assert get_tolerances("flare22").for_label(8) == 2.0  # aorta
    assert not TOLERANCE_PRESETS["amos"].verified and "UNVERIFIED" in TOLERANCE_PRESETS["amos"].source
    assert get_tolerances(3).for_label(1) == 3.0
    with pytest.raises(ValueError, match="unknown tolerance preset"):
        get_tolerances("nope")


def test_real_ct_label_against_shifted_copy(shared_data):
    lbl = nib.load(str(shared_data / "ct_example" / "label.nii.gz"))
    gt = np.asanyarray(lbl.dataobj).astype(np.uint8)
    spacing = tuple(float(z) for z in lbl.header.get_zooms())
    pred = np.roll(gt, (1, -1, 1), axis=(0, 1, 2))
    present = [int(i) for i in np.unique(gt) if i]
    assert present == [1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13]
    per_organ = dict(TOLERANCE_PRESETS["flare22"].per_label)  # FLARE22's tolerances without its other rules
    ours = evaluate_case(gt, pred, spacing, range(1, 16), tolerance=per_organ)
    dice_ref = _monai_dice(gt, pred, 16)
    for lid in present:
        ref = _reference(gt == lid, pred == lid, spacing, get_tolerances(per_organ).for_label(lid))
        assert ours[lid]["dice"] == pytest.approx(float(dice_ref[lid - 1]), abs=ATOL)
        for m in ("nsd", "hd95", "assd"):
            assert ours[lid][m] == pytest.approx(ref[m], abs=ATOL)
    assert ours[5]["dice"] == 1.0  # esophagus absent from both


def _write(path, arr, affine):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, affine), str(path))


def test_evaluate_folders_reports_missing_and_mismatch(tmp_path):
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    rng = np.random.default_rng(0)
    gts = {}
    for cid in ("amos_0001", "amos_0002", "amos_0600"):
        arr = np.zeros((20, 20, 10), np.uint8)
        arr[4:12, 4:12, 2:7] = 6
        arr[13:17, 5:9, 3:6] = 1
        gts[cid] = arr
        _write(tmp_path / "gt" / f"{cid}.nii.gz", arr, affine)
    _write(tmp_path / "pred" / "amos_0001.nii.gz", gts["amos_0001"], affine)
    noisy = gts["amos_0600"].copy()
    noisy[rng.random(noisy.shape) < 0.02] = 0
    _write(tmp_path / "pred" / "amos_0600.nii.gz", noisy, affine)
    summary = evaluate_folders(tmp_path / "pred", tmp_path / "gt", tmp_path / "out", workers=2, progress=False)
    assert summary["missing_predictions"] == ["amos_0002"]
    assert set(summary["per_modality"]) == {"CT", "MRI"}
    liver_ct = summary["per_modality"]["CT"]["per_organ"]["liver"]["dice"]
    assert liver_ct == pytest.approx(0.5)  # perfect case 1, missing case 2 scored 0
    assert summary["per_case"]["amos_0001"]["dice"] == pytest.approx(1.0)
    for name in ("per_case.csv", "summary.json", "summary.md", "boxplot.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["all"]["cases"] == 3
    _write(tmp_path / "pred" / "amos_0002.nii.gz", gts["amos_0002"], np.diag([0.8, 0.8, 3.0, 1.0]))
    with pytest.raises(GeometryMismatchError, match="amos_0002.nii.gz.*amos_0002.nii.gz"):
        evaluate_folders(tmp_path / "pred", tmp_path / "gt", None, workers=1, progress=False)


def test_tied_offsets_on_both_sides_of_the_tolerance_count_as_the_reference_counts_them():
    """Found in review: at 0.3 mm a gt corner has prediction corners at offsets (0, 0, 3) (0.8999999999999999 mm) and
    (2, -1, 2) (0.9 mm), equal in exact arithmetic; scipy's distance transform keeps the latter, so at a tolerance of
    0.8999999999999999 mm the reference does not count that corner. Where tied offsets fall on both sides of a
    tolerance, the corners at it take the reference's own distance transform; elsewhere the tie cannot matter."""
    from amos_zoo.metrics.surface import _tolerance_straddled

    spacing, tol = (0.3, 0.3, 0.3), float(np.sqrt((3 * 0.3) ** 2))
    gt = np.zeros((3, 5, 6), np.uint8)
    pred = np.zeros_like(gt)
    gt[0, 2, 1] = 1
    pred[0, 1, 5] = pred[2, 0, 4] = pred[2, 4, 0] = 1
    ours = evaluate_case(gt, pred, spacing, [1], tolerance=tol, metrics=("nsd",))[1]["nsd"]
    assert ours == pytest.approx(_reference(gt == 1, pred == 1, spacing, tol)["nsd"], abs=ATOL)
    assert _tolerance_straddled(spacing, tol) and _tolerance_straddled((1.9999999999999991, 1.0, 2.0), 2.0 - 4e-16)
    assert not _tolerance_straddled((0.7, 0.7, 2.0), 2.0) and not _tolerance_straddled((1.0, 1.0, 1.0), 2.0)


@pytest.mark.parametrize("spacing", [(0.1, 0.1, 0.1), (0.3, 0.3, 0.3), (0.3, 0.3, 0.6), (0.6, 0.8, 1.0), (0.3, 0.6)])
def test_nsd_at_tie_prone_spacings_equals_the_reference(spacing):
    """Spacings where many offsets tie (multiples of one step), tolerances drawn from the distances that occur: NSD
    equals surface-distance's on every drawn case."""
    rng = np.random.default_rng(11)
    for _ in range(25):
        shape = tuple(int(n) for n in rng.integers(3, 14, len(spacing)))
        gt = rng.random(shape) < rng.uniform(0.02, 0.3)
        pred = rng.random(shape) < rng.uniform(0.02, 0.3)
        if not (gt.any() and pred.any()):
            continue
        ref = sd_ref.compute_surface_distances(gt, pred, spacing)
        values = np.unique(np.concatenate([ref["distances_gt_to_pred"], ref["distances_pred_to_gt"]]))
        for tol in rng.choice(values, size=min(4, len(values)), replace=False):
            ours = evaluate_case(gt.astype(np.uint8), pred.astype(np.uint8), spacing, [1], tolerance=float(tol))
            want = sd_ref.compute_surface_dice_at_tolerance(ref, float(tol))
            assert ours[1]["nsd"] == pytest.approx(want, abs=ATOL), (shape, float(tol))


@pytest.mark.parametrize("count", [8, 256])
def test_ball_lookup_and_tree_give_the_reference_distances(count):
    """Surface corners are settled by looking up the other surface in a ball of voxel offsets, nearest first, and the
    ones with nothing inside the ball by a k-d tree; with a small ball (8 offsets) most corners take the tree, with
    the default (256) most take the ball. Both give surface-distance's distances, corner for corner."""
    from amos_zoo.metrics.surface import _ball_offsets, _distances_to, _neighbour_codes

    rng = np.random.default_rng(7)
    spacing = (0.7, 0.7, 2.0)
    gt = ndimage.gaussian_filter(rng.random((40, 36, 14)), 2.0) > 0.5
    pred = np.roll(gt, (3, -2, 1), axis=(0, 1, 2))
    pred[30:, 30:, 10:] = True  # a far island: corners beyond any small ball
    border = [((c != 0) & (c != 255)) for c in (_neighbour_codes(gt), _neighbour_codes(pred))]
    offsets = _ball_offsets(spacing, count)
    assert len(offsets.offsets) >= count // 2 and np.all(np.diff(offsets.distances) >= 0)
    pad = [(r, r) for r in offsets.reach]
    padded = [np.pad(b, pad) for b in border]
    by_ball = _distances_to(padded[1], padded[0], spacing, (), offsets)  # pred corners -> gt surface
    by_tree = _distances_to(border[1], border[0], spacing)
    ref = sd_ref.compute_surface_distances(gt, pred, spacing)
    np.testing.assert_allclose(np.sort(by_ball), np.sort(ref["distances_pred_to_gt"]), atol=ATOL)
    np.testing.assert_allclose(by_ball, by_tree, atol=ATOL)
    beyond = by_ball > offsets.radius
    assert beyond.any() and (~beyond & (by_ball > 0)).any()  # both ways of finding a distance were taken


def test_shipped_normals_table_is_monais_and_gives_deepminds_areas():
    """The surface-normal table shipped with amos-zoo (so that evaluating imports neither MONAI nor torch) is MONAI's,
    and the areas per neighbour code equal DeepMind's surface-distance table at several spacings."""
    import surface_distance.lookup_tables as lookup
    from monai.metrics.utils import _get_neighbour_code_to_normals_table

    from amos_zoo.metrics.surface import _NORMALS_X8, surface_area_table

    shipped = np.load(_NORMALS_X8, allow_pickle=False).astype(np.float64) / 8.0
    np.testing.assert_array_equal(shipped, _get_neighbour_code_to_normals_table().double().numpy())
    for spacing in [(1.0, 1.0, 1.0), (0.7, 0.7, 2.0), (0.3, 4.0, 1.7)]:
        reference = lookup.create_table_neighbour_code_to_surface_area(spacing)
        np.testing.assert_allclose(surface_area_table(spacing), reference, rtol=1e-12, atol=0)


@pytest.mark.parametrize("spacing", [(10.0, 0.1, 0.1), (0.15, 0.15, 5.0)])
def test_very_anisotropic_spacings_equal_the_reference(spacing):
    """The offset ball is capped (1024 offsets, a complete ball of a smaller radius) where the spacing is very
    anisotropic; distances still equal surface-distance's."""
    from amos_zoo.metrics.surface import _ball_offsets

    assert len(_ball_offsets(spacing).offsets) == 1024
    rng = np.random.default_rng(5)
    gt = ndimage.gaussian_filter(rng.random((12, 40, 40)), 2.0) > 0.5
    pred = np.roll(gt, (1, 4, -3), axis=(0, 1, 2))
    ours = surface_distances(gt, pred, spacing)
    ref = sd_ref.compute_surface_distances(gt, pred, spacing)
    np.testing.assert_allclose(ours.distances_gt_to_pred, np.sort(ref["distances_gt_to_pred"]), atol=ATOL)
    np.testing.assert_allclose(ours.distances_pred_to_gt, np.sort(ref["distances_pred_to_gt"]), atol=ATOL)
