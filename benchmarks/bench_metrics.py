"""Benchmark: Dice + NSD (2 mm) + HD95 for all 15 AMOS organs on a 512 x 512 x 120 case.

Times, on the same data in one run, amos-zoo's metric suite, DeepMind's surface-distance (one organ at
a time, as users call it) and MONAI (compute_dice, compute_surface_dice with subvoxels,
compute_hausdorff_distance at percentile 95). Each method runs in a fresh process so its peak memory
(peak RSS above the RSS after loading the data) is its own. Asserts that amos-zoo equals
surface-distance within 1e-6 and prints, as its last lines, the speed ratios and peak memory.

    python benchmarks/bench_metrics.py [--shape 512 512 120] [--skip-monai]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

SPACING = (0.7, 0.7, 2.0)
TOL = 2.0
LABELS = list(range(1, 16))


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _peak_mb() -> float:
    """Peak RSS of this process (VmHWM), reset by :func:`_reset_peak`."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # Linux: reset the peak RSS to the current RSS
    except OSError:
        pass


def make_case(shape: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A phantom with all 15 organs at 0.7 x 0.7 x 2.0 mm and a perturbed prediction."""
    from scipy import ndimage

    from amos_zoo.data.synth import make_phantom

    gt = make_phantom(3, seed=seed, shape=shape, spacing=SPACING, anatomy_scale=1.3).label
    rng = np.random.default_rng(seed)
    pred = np.roll(gt, (2, -1, 1), axis=(0, 1, 2))
    boxes = ndimage.find_objects(pred, max_label=15)
    for organ, box in enumerate(boxes, start=1):
        if box is None:
            continue
        pad = tuple(slice(max(0, s.start - 3), s.stop + 3) for s in box)
        mask = pred[pad] == organ
        if rng.random() < 0.5:
            grown = ndimage.binary_dilation(mask, iterations=2) & (pred[pad] == 0)
            pred[pad][grown] = organ
        else:
            shrunk = mask & ~ndimage.binary_erosion(mask, iterations=1)
            pred[pad][shrunk] = 0
    return gt, pred


def run_amos_zoo(gt, pred):
    from amos_zoo.metrics.case import evaluate_case

    res = evaluate_case(gt, pred, SPACING, LABELS, tolerance=TOL, metrics=("dice", "nsd", "hd95"))
    return {lid: (res[lid]["dice"], res[lid]["nsd"], res[lid]["hd95"]) for lid in LABELS}


def run_surface_distance(gt, pred):
    import surface_distance as sd

    out = {}
    for lid in LABELS:
        g, p = gt == lid, pred == lid
        dice = sd.compute_dice_coefficient(g, p)
        d = sd.compute_surface_distances(g, p, SPACING)
        out[lid] = (float(dice), sd.compute_surface_dice_at_tolerance(d, TOL), sd.compute_robust_hausdorff(d, 95))
    return out


def run_monai(gt, pred):
    import torch
    from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice

    def onehot(a):
        return torch.nn.functional.one_hot(torch.as_tensor(a.astype(np.int64))[None], 16).movedim(-1, 1)

    y, yp = onehot(gt), onehot(pred)
    dice = compute_dice(yp, y, include_background=False)[0]
    nsd = compute_surface_dice(yp, y, [TOL] * 15, include_background=False, spacing=SPACING, use_subvoxels=True)[0]
    hd = compute_hausdorff_distance(yp, y, include_background=False, percentile=95, spacing=SPACING)[0]
    return {lid: (float(dice[lid - 1]), float(nsd[lid - 1]), float(hd[lid - 1])) for lid in LABELS}


METHODS = {"amos-zoo": run_amos_zoo, "surface-distance": run_surface_distance, "monai": run_monai}


def _child(name: str, data_path: str, queue) -> None:
    import monai  # noqa: F401 - imports are not part of the timing
    import surface_distance  # noqa: F401

    from amos_zoo.metrics.surface import surface_area_table

    surface_area_table(SPACING)
    data = np.load(data_path)
    gt, pred = data["gt"], data["pred"]
    _reset_peak()
    base = _rss_mb()
    start = time.perf_counter()
    values = METHODS[name](gt, pred)
    elapsed = time.perf_counter() - start
    queue.put((elapsed, max(0.0, _peak_mb() - base), values))


def measure(name: str, data_path: str):
    """Run one method in a fresh process; returns (seconds, peak MB above baseline, values)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(name, data_path, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 120))
    parser.add_argument("--skip-monai", action="store_true", help="MONAI needs ~6 GB and ~30 s at full size")
    args = parser.parse_args()
    print(f"building a {tuple(args.shape)} case at {SPACING} mm with 15 organs ...", flush=True)
    gt, pred = make_case(tuple(args.shape))
    counts = np.bincount(gt.ravel(), minlength=16)[1:]
    print("organ voxels:", dict(zip(LABELS, counts.tolist())))
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "case.npz")
        np.savez(path, gt=gt, pred=pred)
        results = {}
        for name in METHODS:
            if name == "monai" and args.skip_monai:
                continue
            results[name] = measure(name, path)
            print(f"{name:>17}: {results[name][0]:7.2f} s, peak {results[name][1]:7.0f} MB", flush=True)

    ours, ref = results["amos-zoo"][2], results["surface-distance"][2]
    worst = max(abs(a - b) for lid in LABELS for a, b in zip(ours[lid], ref[lid]))
    assert worst <= 1e-6, f"amos-zoo differs from surface-distance by {worst}"
    print(f"max |amos-zoo - surface-distance| over Dice/NSD/HD95: {worst:.2e}")
    if "monai" in results:
        mon = results["monai"][2]
        print(
            f"max |MONAI - surface-distance| Dice {max(abs(mon[i][0] - ref[i][0]) for i in LABELS):.2e}, "
            f"NSD {max(abs(mon[i][1] - ref[i][1]) for i in LABELS):.2e}, "
            f"HD95 {max(abs(mon[i][2] - ref[i][2]) for i in LABELS):.3f} mm (another HD95 definition)"
        )
    print(f"ratio_vs_surface_distance: {results['surface-distance'][0] / results['amos-zoo'][0]:.2f}")
    if "monai" in results:
        print(f"ratio_vs_monai: {results['monai'][0] / results['amos-zoo'][0]:.2f}")
    peaks = ", ".join(f"{k} {v[1]:.0f} MB" for k, v in results.items())
    print(f"peak_memory: {peaks}")


if __name__ == "__main__":
    main()
