"""Benchmark: Dice + NSD (2 mm) + HD95 for all 15 AMOS organs on a 512 x 512 x 120 case.

Times, on the same data in one run, amos-zoo's metric suite, DeepMind's surface-distance (one organ at
a time, as users call it) and MONAI (compute_dice, compute_surface_dice with subvoxels,
compute_hausdorff_distance at percentile 95, given boolean one-hots: the smallest dtype it accepts). Each
measurement runs in a fresh process, pinned to its cores (``os.sched_setaffinity`` and the BLAS/OpenMP thread
variables), so its peak memory (peak RSS above the RSS after loading the data) is its own. The headline
(``ratio_vs_surface_distance_1thread``) pins both sides to one core; amos-zoo on all cores (its k-d tree queries
use every core) is its own line. Methods are interleaved over ``--repeats`` rounds: median (min-max). Asserts
that amos-zoo equals surface-distance within 1e-6.

    python benchmarks/bench_metrics.py [--shape 512 512 120] [--repeats 3] [--skip-monai]
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
        # boolean one-hots (one byte per voxel and class), built without an int64 copy of the whole volume
        return torch.as_tensor(a)[None, None] == torch.arange(16, dtype=torch.uint8).view(1, 16, 1, 1, 1)

    y, yp = onehot(gt), onehot(pred)
    dice = compute_dice(yp, y, include_background=False)[0]
    nsd = compute_surface_dice(yp, y, [TOL] * 15, include_background=False, spacing=SPACING, use_subvoxels=True)[0]
    hd = compute_hausdorff_distance(yp, y, include_background=False, percentile=95, spacing=SPACING)[0]
    return {lid: (float(dice[lid - 1]), float(nsd[lid - 1]), float(hd[lid - 1])) for lid in LABELS}


METHODS = {"amos-zoo": run_amos_zoo, "surface-distance": run_surface_distance, "monai": run_monai}


def _child(name: str, data_path: str, cores: list[int], queue) -> None:
    import os

    os.sched_setaffinity(0, cores)
    import torch

    torch.set_num_threads(len(cores))
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


def measure(name: str, data_path: str, cores: list[int]):
    """Run one method in a fresh process on ``cores``; returns (seconds, peak MB above baseline, values)."""
    import os

    threads = str(len(cores))
    saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    os.environ.update(dict.fromkeys(saved, threads))  # inherited by the spawned process before numpy loads
    try:
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        proc = ctx.Process(target=_child, args=(name, data_path, cores, queue))
        proc.start()
        while True:  # a child that dies (an exception in the method) must not leave us waiting forever
            try:
                result = queue.get(timeout=5)
                break
            except Exception:  # noqa: BLE001 - queue.Empty
                if not proc.is_alive():
                    raise RuntimeError(f"{name} failed (exit code {proc.exitcode}); see its traceback above") from None
        proc.join()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return result


def _stats(times: list[float]) -> str:
    return f"median {float(np.median(times)):7.2f} s (min {min(times):.2f}, max {max(times):.2f}, n={len(times)})"


def main() -> None:
    import os

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 120))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-monai", action="store_true", help="MONAI needs ~6 GB and ~30 s at full size")
    args = parser.parse_args()
    all_cores = sorted(os.sched_getaffinity(0))
    one = all_cores[:1]
    print(f"building a {tuple(args.shape)} case at {SPACING} mm with 15 organs ...", flush=True)
    gt, pred = make_case(tuple(args.shape))
    counts = np.bincount(gt.ravel(), minlength=16)[1:]
    print("organ voxels:", dict(zip(LABELS, counts.tolist())))
    #: (line, method, cores)
    runs = [
        ("amos-zoo, 1 core", "amos-zoo", one),
        ("surface-distance, 1 core", "surface-distance", one),
        (f"amos-zoo, {len(all_cores)} cores", "amos-zoo", all_cores),
    ]
    if not args.skip_monai:
        runs.append(("monai (bool one-hots), 1 core", "monai", one))
    times: dict[str, list[float]] = {line: [] for line, _, _ in runs}
    peaks: dict[str, float] = {}
    values: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "case.npz")
        np.savez(path, gt=gt, pred=pred)
        for repeat in range(args.repeats):  # interleaved: each round runs every line once
            for line, method, cores in runs:
                if method == "monai" and repeat > 0:
                    continue  # minutes and ~12 GB each: one run is enough to show the order of magnitude
                elapsed, peak, vals = measure(method, path, cores)
                times[line].append(elapsed)
                peaks[line] = max(peaks.get(line, 0.0), peak)
                values[method] = vals
                print(f"  round {repeat + 1}: {line}: {elapsed:.2f} s, peak {peak:.0f} MB", flush=True)

    ours, ref = values["amos-zoo"], values["surface-distance"]
    worst = max(abs(a - b) for lid in LABELS for a, b in zip(ours[lid], ref[lid]))
    assert worst <= 1e-6, f"amos-zoo differs from surface-distance by {worst}"
    for line, _, _ in runs:
        print(f"{line:>32}: {_stats(times[line])}, peak {peaks[line]:7.0f} MB")
    print(f"max |amos-zoo - surface-distance| over Dice/NSD/HD95: {worst:.2e}")
    if "monai" in values:
        mon = values["monai"]
        print(
            f"max |MONAI - surface-distance| Dice {max(abs(mon[i][0] - ref[i][0]) for i in LABELS):.2e}, "
            f"NSD {max(abs(mon[i][1] - ref[i][1]) for i in LABELS):.2e}, "
            f"HD95 {max(abs(mon[i][2] - ref[i][2]) for i in LABELS):.3f} mm (another HD95 definition)"
        )
    med = {line: float(np.median(t)) for line, t in times.items()}
    print(f"ratio_vs_surface_distance_1thread: {med['surface-distance, 1 core'] / med['amos-zoo, 1 core']:.2f}")
    print(
        f"ratio_vs_surface_distance_amos_zoo_{len(all_cores)}cores: "
        f"{med['surface-distance, 1 core'] / med[f'amos-zoo, {len(all_cores)} cores']:.2f}"
    )
    if "monai" in values:
        print(f"ratio_vs_monai_1thread: {med['monai (bool one-hots), 1 core'] / med['amos-zoo, 1 core']:.2f}")
    print("peak_memory: " + ", ".join(f"{k} {v:.0f} MB" for k, v in peaks.items()))


if __name__ == "__main__":
    main()
