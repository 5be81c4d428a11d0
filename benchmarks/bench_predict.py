"""Benchmark: predicting CT scans on a CPU, amos-zoo against the plain MONAI pipeline, like for like.

Both sides run the same network on the same scan with the same preprocessing and the same windows:
Orientation RAS, Spacing to the model card's grid, the BTCV intensity window, a crop to the voxels above the
window's minimum (research-contributions' BTCV validation transforms), ``sliding_window_inference`` with the
card's window, overlap, window batch and blending, and the labels back on the scan's own grid, with the same
label interpolation on both sides:

* ``nearest``: argmax on the network's grid, labels resampled nearest (MONAI: ``Invertd(nearest_interp=True)`` of
  the labels; amos-zoo: ``interpolation="nearest"``);
* ``linear``: class probabilities resampled linearly to the scan's grid, then argmax (MONAI: softmax, ``Invertd``
  of the probabilities with linear interpolation, argmax; amos-zoo: ``interpolation="linear"``, what nnU-Net
  exports and the quickstart card's default).

The headline ``ratio_vs_monai_card_default`` is the line of the benchmark card's own default interpolation.

* The network segments the scan: the quickstart's UNet, trained here once with ``amos-zoo quickstart``'s own
  code (cached in the user cache directory under a hash of the quickstart protocol), whose mean organ Dice
  against the benchmark phantom's truth is printed and must be >= 0.85.
* A network-bound case (``ratio_vs_monai_network_bound``): btcv's Swin-UNETR (feature 48, 96^3 windows, overlap
  0.5, at the btcv card's 1.5 x 1.5 x 2 mm grid; seeded random weights: only the time is compared, and the
  agreement of both sides' labels) on a smaller scan, where the network, not reading and resampling, dominates.
* Each side runs in its own process (so peak resident memory is its own), is warmed up once, and is timed over
  ``--repeats`` interleaved repeats; the median and spread (min-max) are printed.
* Agreement is measured where the outputs can differ: over the voxels that either side labels as foreground,
  plus the mean per-organ Dice of amos-zoo's labels against MONAI's.
* Then one lever at a time, a folder of 8 cases (amos-zoo ``predict``'s pipeline against a MONAI loop with a
  DataLoader worker reading ahead and ``SaveImaged`` writing uint8 labels) and a 512 x 512 x 600 scan, each
  repeated ``--repeats`` times (median, spread).

    python benchmarks/bench_predict.py [--threads 2] [--repeats 3] [--skip-large] [--skip-levers]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# the phantoms' anatomy fills the field of view: 512 x 410 x 100 at 0.55 x 0.55 x 2.0 mm covers the quickstart
# phantoms' 280 x 224 x 200 mm, the distribution the network was trained on
CASE = {"seed": 3, "shape": (512, 410, 100), "spacing": (0.55, 0.55, 2.0), "anatomy_scale": 1.0}
LARGE = {"seed": 5, "shape": (512, 512, 600), "spacing": (0.7, 0.7, 1.0), "anatomy_scale": 1.0}
FOLDER = {"cases": 8, "shape": (512, 410, 80), "spacing": (0.55, 0.55, 2.5), "anatomy_scale": 1.0}
CACHE_VERSION = 1


# ----------------------------------------------------------------------------------------------- both sides
#: the network-bound case: btcv's Swin-UNETR on a smaller scan (the phantom covers it at the btcv grid)
# (160 x 160 x 64 at 1.2 x 1.2 x 2.5 mm: 128 x 128 x 80 voxels at btcv's 1.5 x 1.5 x 2 mm, four 96^3 windows, one pass
# of the card's window batch; small enough that both sides' warm-up and 3 repeats fit one 8-minute run on 2 cores)
NETWORK_BOUND = {"seed": 4, "shape": (160, 160, 64), "spacing": (1.2, 1.2, 2.5), "anatomy_scale": 1.0}
SWIN_BTCV = "swin_unetr_btcv_random"


def load_network(ckpt: str, interpolation: str | None = None):
    """The trained network and its model card (weights-only load, as ``amos-zoo predict``); ``SWIN_BTCV``: btcv's
    Swin-UNETR with seeded random weights and the btcv card's inference settings (the network-bound case)."""
    if ckpt == SWIN_BTCV:
        import torch

        from amos_zoo.card import ModelCard
        from amos_zoo.data.labels import AMOS_LABELS
        from amos_zoo.data.recipes import get_recipe
        from amos_zoo.models.registry import build_network
        from amos_zoo.protocols import get_protocol

        protocol = get_protocol("btcv")
        model = protocol.values("model")
        card = ModelCard(
            arch="swin_unetr",
            arch_kwargs=protocol.network("swin_unetr"),
            labels=dict(AMOS_LABELS.names),
            recipe=get_recipe("btcv"),
            roi_size=tuple(get_recipe("btcv").patch_size),
            sw_batch_size=int(model.get("sw_batch_size", 4)),
            sw_overlap=float(model.get("sw_overlap", 0.5)),
            sw_mode=str(model.get("sw_mode", "constant")),
            protocol="btcv",
            interpolation=interpolation or str(model.get("interpolation", "nearest")),
        )
        torch.manual_seed(0)
        return build_network(card).eval(), card
    from amos_zoo.weights.loading import load_model

    net, card, _ = load_model(ckpt, progress=False)
    return net.eval(), card


def monai_transforms(card):
    """research-contributions' BTCV validation transforms with the card's grid and window."""
    from monai import transforms as mt

    recipe = card.recipe
    return mt.Compose(
        [
            mt.LoadImaged("image", reader="NibabelReader", ensure_channel_first=True, image_only=True),
            mt.Orientationd("image", axcodes="RAS"),
            mt.Spacingd("image", pixdim=recipe.spacing, mode="bilinear"),
            mt.ScaleIntensityRanged("image", recipe.ct_window[0], recipe.ct_window[1], 0.0, 1.0, clip=True),
            mt.CropForegroundd("image", source_key="image", allow_smaller=True),
        ]
    )


def monai_labels(net, card, pre, data: dict, interpolation: str, bf16: bool):
    """Sliding window on a preprocessed case, then the labels on the scan's grid (a (1, *scan) MetaTensor with the
    scan's metadata) with ``interpolation``: nearest = argmax, then ``Invertd(nearest_interp=True)``; linear =
    softmax, ``Invertd`` of the probabilities (linear), argmax."""
    import torch
    from monai import transforms as mt
    from monai.inferers import sliding_window_inference

    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = sliding_window_inference(
            data["image"][None],
            card.roi_size,
            card.sw_batch_size,
            lambda x: net(x).float(),
            overlap=card.sw_overlap,
            mode=card.sw_mode,
        )
    nearest = interpolation == "nearest"
    pred = logits.argmax(1, keepdim=True)[0].float() if nearest else torch.softmax(logits, 1)[0]
    inverse = mt.Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=nearest)
    inverted = inverse({"pred": pred, "image": data["image"]})["pred"]
    return inverted if nearest else inverted.argmax(0, keepdim=True)


def monai_pipeline(net, card, path: str, out_path: str | None, bf16: bool, interpolation: str) -> np.ndarray:
    """One case through the plain MONAI pipeline."""
    import nibabel as nib

    pre = monai_transforms(card)
    out = np.asarray(monai_labels(net, card, pre, pre({"image": path}), interpolation, bf16)[0]).astype(np.uint8)
    if out_path:
        ref = nib.load(path)
        nib.save(nib.Nifti1Image(out, ref.affine, ref.header), out_path)
    return out


def monai_folder(net, card, folder: str, out_dir: str, bf16: bool, interpolation: str) -> None:
    """A folder as a careful MONAI user predicts it: a DataLoader worker reads and preprocesses the next case while
    the network runs, and ``SaveImaged`` writes each label map (uint8) on the scan's grid."""
    from monai import transforms as mt
    from monai.data import DataLoader, Dataset, decollate_batch

    pre = monai_transforms(card)
    files = [{"image": str(p)} for p in sorted(Path(folder).glob("*.nii.gz"))]
    loader = DataLoader(Dataset(files, pre), batch_size=1, num_workers=1)
    save = mt.SaveImaged(
        "pred",
        output_dir=out_dir,
        output_postfix="",
        separate_folder=False,
        resample=False,
        output_dtype=np.uint8,
        print_log=False,
    )
    for batch in loader:
        for item in decollate_batch(batch):
            save({"pred": monai_labels(net, card, pre, item, interpolation, bf16)})


def amos_predictor(net, card, bf16: bool, interpolation: str, **levers):
    """amos-zoo's predictor for the card, with the levers (``crop``: the recipe's foreground crop) applied."""
    from amos_zoo.data.recipes import get_recipe
    from amos_zoo.infer.predictor import Predictor

    recipe = get_recipe(card.recipe, crop_foreground=levers.pop("crop", None))
    return Predictor.from_card(
        net, card, recipe=recipe, precision="bf16" if bf16 else "fp32", interpolation=interpolation, **levers
    )


# ------------------------------------------------------------------------------------------------ worker
def worker(args) -> None:
    """One side in its own process: commands on stdin (``{"input", "output"}``), one JSON line per command."""
    import torch

    from amos_zoo.console import quiet_third_party

    quiet_third_party()
    torch.set_num_threads(args.threads)
    levers = json.loads(args.levers)
    interpolation = levers.pop("interpolation", None)
    net, card = load_network(args.net, interpolation)
    interpolation = interpolation or card.interpolation
    compile_seconds = None
    if levers.pop("compile", False):
        net = torch.compile(net, dynamic=False)
    bf16 = args.precision == "bf16"
    predictor = None
    if args.worker != "monai":
        predictor = amos_predictor(net, card, bf16, interpolation=interpolation, **levers)
    print(json.dumps({"ready": True, "interpolation": interpolation}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("quit"):
            break
        start = time.perf_counter()
        if cmd.get("folder"):
            if args.worker == "monai":
                monai_folder(net, card, cmd["folder"], cmd["output"], bf16, interpolation)
            else:
                from amos_zoo.infer.pipeline import collect_inputs, predict_many

                predict_many(predictor, collect_inputs(cmd["folder"]), cmd["output"], progress=False)
        elif args.worker == "monai":
            labels = monai_pipeline(net, card, cmd["input"], None, bf16, interpolation)
        else:
            labels, _, _ = predictor.predict_case(cmd["input"], "CT")
        seconds = time.perf_counter() - start
        if compile_seconds is None and "compile" in args.levers:
            compile_seconds = seconds
        if cmd.get("output") and not cmd.get("folder"):
            np.save(cmd["output"], labels)
        print(json.dumps({"seconds": seconds}), flush=True)
    peak = peak_rss_mb()
    print(json.dumps({"peak_rss_mb": peak, "first_run_s": compile_seconds}), flush=True)


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from the parent over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Side:
    """A worker process for one side (``monai`` or ``amos-zoo``), precision and set of levers."""

    def __init__(self, side: str, precision: str, net: Path, threads: int, levers: dict | None = None) -> None:
        cmd = [sys.executable, __file__, "--worker", side, "--precision", precision, "--net", str(net)]
        cmd += ["--threads", str(threads), "--levers", json.dumps(levers or {})]
        # OpenMP threads of an idle process must not spin on the cores the next timed process needs
        env = {**os.environ, "AMOS_ZOO_VERBOSE": "0", "PYTHONWARNINGS": "ignore", "OMP_WAIT_POLICY": "PASSIVE"}
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.interpolation = self._read().get("interpolation")

    def _read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError(f"benchmark worker exited with {self.proc.wait()}")

    def run(self, **cmd) -> float:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()["seconds"]

    def close(self) -> dict:
        self.proc.stdin.write(json.dumps({"quit": True}) + "\n")
        self.proc.stdin.flush()
        result = self._read()
        self.proc.wait()
        return result


# ------------------------------------------------------------------------------------------------ training
def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "amos-zoo" / "bench_predict"


def phantom(seed: int, shape, spacing, anatomy_scale):
    from amos_zoo.data.synth import make_phantom

    return make_phantom(seed, shape=tuple(shape), spacing=tuple(spacing), anatomy_scale=anatomy_scale)


def organ_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Dice over the organs present in either volume."""
    values = []
    for organ in range(1, 16):
        x, y = a == organ, b == organ
        total = int(x.sum()) + int(y.sum())
        if total:
            values.append(2.0 * int((x & y).sum()) / total)
    return float(np.mean(values))


def trained_network(threads: int) -> Path:
    """The quickstart's trained UNet (``amos-zoo quickstart``'s own code), cached under a hash of its protocol."""
    import torch

    import amos_zoo.protocols
    from amos_zoo.experiments.quickstart import QuickstartConfig, run_quickstart

    card_text = (Path(amos_zoo.protocols.__file__).parent / "quickstart.yaml").read_text()
    key = hashlib.sha256(f"{CACHE_VERSION}\n{card_text}".encode()).hexdigest()[:16]
    out = cache_dir() / f"quickstart_{key}"
    ckpt = out / "checkpoints" / "last.ckpt"
    if ckpt.is_file():
        print(f"benchmark network: the quickstart's UNet, cached in {out}")
        return ckpt
    print(f"benchmark network: training the quickstart's UNet once into {out} (about 3 minutes on 2 cores) ...")
    torch.set_num_threads(threads)
    tmp = out.with_name(out.name + ".partial")
    summary = run_quickstart(QuickstartConfig(out=tmp, progress=False))
    print(f"  quickstart validation mean Dice {summary['all']['overall']['dice']:.4f}")
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)
    return ckpt


# ------------------------------------------------------------------------------------------------ measuring
def timed(sides: dict[str, Side], repeats: int, **cmd) -> dict[str, list[float]]:
    """Warm up every side once, then ``repeats`` rounds, the sides interleaved within each round."""
    for side in sides.values():
        side.run(**cmd)
    times: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # each side goes first in turn
            times[name].append(sides[name].run(**cmd))
    return times


def describe(times: list[float]) -> str:
    return f"median {statistics.median(times):6.2f} s (min {min(times):.2f}, max {max(times):.2f}, n={len(times)})"


def agreement(ours: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """Label agreement over the voxels either side calls foreground, and mean per-organ Dice against MONAI's."""
    fg = (ours > 0) | (ref > 0)
    return float(np.mean(ours[fg] == ref[fg])), organ_dice(ours, ref)


def main() -> None:  # noqa: PLR0915 - one benchmark, printed in order
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-large", action="store_true", help="leave out the 512 x 512 x 600 scan")
    parser.add_argument("--skip-levers", action="store_true", help="leave out the lever table")
    parser.add_argument("--skip-folder", action="store_true", help="leave out the 8-case folder")
    parser.add_argument("--skip-network-bound", action="store_true", help="leave out the Swin-UNETR case")
    parser.add_argument("--skip-bf16", action="store_true", help="leave out the bf16 line")
    parser.add_argument("--skip-single", action="store_true", help="leave out the single-case lines (headline)")
    parser.add_argument("--only-network-bound", action="store_true", help="only the Swin-UNETR case (no training)")
    parser.add_argument("--folder-cases", type=int, default=FOLDER["cases"], help="cases in the folder comparison")
    parser.add_argument("--worker", choices=["monai", "amos-zoo"], help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--net", help=argparse.SUPPRESS)
    parser.add_argument("--levers", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    import torch

    from amos_zoo.console import quiet_third_party
    from amos_zoo.io import save_nifti

    quiet_third_party()

    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="amos_zoo_bench_predict_"))
    print(f"CPU threads {args.threads}; torch {torch.__version__}; {time.strftime('%Y-%m-%d')}")
    if not args.only_network_bound:
        case = phantom(**CASE)
        case_path = str(work / "case.nii.gz")
        save_nifti(case.image.astype(np.int16), case.affine, case_path)
        print(f"benchmark case: phantom {CASE['shape']} at {CASE['spacing']} mm")
    results: dict[str, str] = {}
    if not args.only_network_bound:  # the trained quickstart network: its training takes minutes the first time
        net = trained_network(args.threads)
        truth_dice = None
        default = load_network(str(net))[1].interpolation  # the benchmark card's own label interpolation
        print(f"benchmark card's label interpolation: {default}")
        lines = [("fp32", "nearest"), ("fp32", "linear"), *([] if args.skip_bf16 else [("bf16", default)])]
        lines = [] if args.skip_single else lines
        FOLDER["cases"] = args.folder_cases
        for precision, interpolation in lines:
            lever = {"interpolation": interpolation}
            sides = {
                "monai": Side("monai", precision, net, args.threads, lever),
                "amos-zoo": Side("amos-zoo", precision, net, args.threads, lever),
            }
            tag = f"[{precision}, {interpolation} labels{' = card default' if interpolation == default else ''}]"
            outs = {name: str(work / f"{name}_{precision}_{interpolation}.npy") for name in sides}
            times = timed(sides, args.repeats, input=case_path)
            for name, side in sides.items():
                side.run(input=case_path, output=outs[name])
            peaks = {name: side.close()["peak_rss_mb"] for name, side in sides.items()}
            ours, ref = np.load(outs["amos-zoo"]), np.load(outs["monai"])
            fg_agreement, dice_vs_monai = agreement(ours, ref)
            if precision == "fp32" and interpolation == default:
                truth_dice = organ_dice(ours, case.label), organ_dice(ref, case.label)
            ratio = statistics.median(times["monai"]) / statistics.median(times["amos-zoo"])
            print(f"{tag} plain MONAI: {describe(times['monai'])}, peak RSS {peaks['monai']:.0f} MB")
            print(f"{tag} amos-zoo:    {describe(times['amos-zoo'])}, peak RSS {peaks['amos-zoo']:.0f} MB")
            print(
                f"{tag} ratio {ratio:.2f}; foreground agreement {fg_agreement:.5f}; mean organ Dice vs MONAI "
                f"{dice_vs_monai:.5f}",
                flush=True,
            )
            results[f"ratio_vs_monai_{precision}_{interpolation}"] = f"{ratio:.2f}"
            if precision == "fp32" and interpolation == default:
                results["ratio_vs_monai_card_default"] = f"{ratio:.2f}"
                results["foreground_agreement_card_default"] = f"{fg_agreement:.5f}"
                results["dice_vs_monai"] = f"{dice_vs_monai:.5f}"
                results["peak_rss_mb_amos_zoo"] = f"{peaks['amos-zoo']:.0f}"
                results["peak_rss_mb_monai"] = f"{peaks['monai']:.0f}"
        if truth_dice is not None:
            ours_dice, monai_dice = truth_dice
            print(f"mean organ Dice against the phantom's truth: amos-zoo {ours_dice:.4f}, MONAI {monai_dice:.4f}")
        if truth_dice is not None and truth_dice[0] < 0.85:
            raise SystemExit(f"the benchmark network does not segment the case (Dice {truth_dice[0]:.3f} < 0.85)")

    if not args.skip_network_bound:
        bound = phantom(**NETWORK_BOUND)
        bound_path = str(work / "network_bound.nii.gz")
        save_nifti(bound.image.astype(np.int16), bound.affine, bound_path)
        sides = {name: Side(name, "fp32", SWIN_BTCV, args.threads) for name in ("monai", "amos-zoo")}
        times = timed(sides, args.repeats, input=bound_path)
        outs = {name: str(work / f"bound_{name}.npy") for name in sides}
        for name, side in sides.items():
            side.run(input=bound_path, output=outs[name])
        interpolation = sides["amos-zoo"].interpolation
        for side in sides.values():
            side.close()
        fg_agreement, _ = agreement(np.load(outs["amos-zoo"]), np.load(outs["monai"]))
        ratio = statistics.median(times["monai"]) / statistics.median(times["amos-zoo"])
        tag = f"[network-bound: btcv swin_unetr, {NETWORK_BOUND['shape']} at {NETWORK_BOUND['spacing']} mm, fp32, "
        tag += f"{interpolation} labels]"
        print(f"{tag} plain MONAI: {describe(times['monai'])}")
        print(f"{tag} amos-zoo:    {describe(times['amos-zoo'])}")
        print(f"{tag} ratio {ratio:.2f}; foreground agreement {fg_agreement:.5f}", flush=True)
        results["ratio_vs_monai_network_bound"] = f"{ratio:.2f}"

    if not args.skip_levers and not args.only_network_bound:
        levers = [  # one at a time, against amos-zoo's fp32 defaults
            (f"defaults (fp32, every window through the network, card's {default} labels)", {}),
            ("nearest labels", {"interpolation": "nearest"}),
            ("constant (air) windows reuse one output", {"skip_constant_windows": True}),
            ("8 windows per pass", {"sw_batch_size": 8}),
            ("no foreground crop (more windows; moves them)", {"crop": "none"}),
            ("torch.compile of the network (first run compiles)", {"compile": True}),
        ]
        sides = {}
        for name, lever in levers:
            try:
                sides[name] = Side("amos-zoo", "fp32", net, args.threads, lever)
            except RuntimeError as err:
                print(f"lever [{name}]: not available ({err})")
        first = {}
        for name, side in sides.items():  # the first run of each (torch.compile compiles in it)
            start = time.perf_counter()
            side.run(input=case_path)
            first[name] = time.perf_counter() - start
        times = {name: [] for name in sides}
        names = list(sides)
        for name in names:
            sides[name].run(input=case_path, output=str(work / f"lever_{names.index(name)}.npy"))
        base_labels = np.load(work / "lever_0.npy")
        agree = {n: agreement(np.load(work / f"lever_{i}.npy"), base_labels)[0] for i, n in enumerate(names)}
        for r in range(args.repeats):  # each lever goes first in turn
            for name in names[r % len(names) :] + names[: r % len(names)]:
                times[name].append(sides[name].run(input=case_path))
        base = statistics.median(times[names[0]])
        print("| lever (one at a time) | median s (min-max) | vs defaults | foreground agreement with defaults |")
        print("|---|---|---|---|")
        for name, _ in levers:
            if name not in sides:
                continue
            median = statistics.median(times[name])
            spread = f"{min(times[name]):.2f}-{max(times[name]):.2f}"
            print(f"| {name} | {median:.2f} ({spread}) | {base / median:.2f}x | {agree[name]:.5f} |")
            sides[name].close()
        if "torch.compile of the network (first run compiles)" in first:
            name = "torch.compile of the network (first run compiles)"
            compile_s = first[name] - statistics.median(times[name])
            gain = base - statistics.median(times[name])
            even = f"{compile_s / gain:.1f} cases" if gain > 0 else "never (no gain per case)"
            print(f"torch.compile: about {compile_s:.1f} s to compile; break-even after {even}")

    if not args.skip_folder and not args.only_network_bound:
        folder = work / "folder"
        folder.mkdir()
        for i in range(FOLDER["cases"]):
            c = phantom(20 + i, FOLDER["shape"], FOLDER["spacing"], FOLDER["anatomy_scale"])
            save_nifti(c.image.astype(np.int16), c.affine, folder / f"case_{i:02d}.nii.gz")
        sides = {name: Side(name, "fp32", net, args.threads) for name in ("monai", "amos-zoo")}
        for side in sides.values():
            side.run(input=str(folder / "case_00.nii.gz"))  # warm-up
        times = {name: [] for name in sides}
        names = list(sides)
        for r in range(args.repeats):
            for name in names[r % 2 :] + names[: r % 2]:
                times[name].append(sides[name].run(folder=str(folder), output=str(work / f"folder_{name}_{r}")))
        for side in sides.values():
            side.close()
        per_min = {name: 60 * FOLDER["cases"] / statistics.median(t) for name, t in times.items()}
        ours, theirs = per_min["amos-zoo"], per_min["monai"]
        spread = {
            n: f"{60 * FOLDER['cases'] / max(t):.1f}-{60 * FOLDER['cases'] / min(t):.1f}" for n, t in times.items()
        }
        print(
            f"folder of {FOLDER['cases']} cases {FOLDER['shape']}, {default} labels, {args.repeats} interleaved "
            f"repeats: amos-zoo predict {ours:.2f} cases/min ({spread['amos-zoo']}), MONAI loop with a DataLoader "
            f"worker and SaveImaged (uint8) {theirs:.2f} cases/min ({spread['monai']}) (ratio {ours / theirs:.2f})"
        )
        results["folder_cases_per_min"] = f"{ours:.2f}"
        results["folder_ratio_vs_monai"] = f"{ours / theirs:.2f}"

    if not args.skip_large and not args.only_network_bound:
        large = phantom(**LARGE)
        large_path = str(work / "large.nii.gz")
        save_nifti(large.image.astype(np.int16), large.affine, large_path)
        del large
        # nearest labels on both sides: 16 float32 probabilities of 157 M voxels would not fit this machine's memory;
        # one side at a time (MONAI's peak alone is about 9 GB), warmed up by one run that is not timed
        for name in ("amos-zoo", "monai"):
            side = Side(name, "fp32", net, args.threads, {"interpolation": "nearest"})
            side.run(input=large_path)
            seconds = [side.run(input=large_path) for _ in range(args.repeats)]
            peak = side.close()["peak_rss_mb"]
            print(
                f"large scan {LARGE['shape']} at {LARGE['spacing']} mm, nearest labels: {name} {describe(seconds)}, "
                f"peak RSS {peak:.0f} MB",
                flush=True,
            )
            results[f"large_scan_peak_rss_mb_{name}"] = f"{peak:.0f}"
            results[f"large_scan_median_s_{name}"] = f"{statistics.median(seconds):.1f}"

    print(f"benchmark wall time {time.perf_counter() - started:.0f} s")
    for key, value in results.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
