"""Benchmark: seconds per case for a 512 x 512 x 120 CT at 0.7 x 0.7 x 2.0 mm with UNet on CPU.

Compares, in one run on the same scan and the same network weights:

* the plain MONAI pipeline: Orientation, Spacing to 1.5 x 1.5 x 2.0, intensity window -175..250,
  ``sliding_window_inference`` 96^3 overlap 0.25 (gaussian, 4 windows per pass), argmax, Spacing back with
  ``Invertd(nearest_interp=True)`` (whose output shape is checked against the input: it can come back a
  voxel short);
* amos-zoo's Predictor with the same recipe, window, overlap and batch, in inference mode, its labels put
  back on the exact input grid, one lever at a time: fp32 or bf16 autocast (``precision``), the recipe's
  foreground crop of the air around the body or the same windows as MONAI, and ``nearest`` (the
  reference's choice; only the argmax is resampled) or ``linear`` labels (probabilities interpolated, only
  at label boundaries, see ``labels_on_input_grid``).

The last two lines (``ratio_vs_monai``, ``voxel_agreement``) are for bf16 autocast with MONAI's windows and
nearest labels: the fastest variant that keeps the agreement target (the foreground crop moves the windows,
and a network's output depends on where its windows fall).

The network is the registry's UNet (19.2 M parameters) trained for ``--train-steps`` on synthetic phantoms
at the recipe's grid (cached in ``--model-cache``), so that labels, and so the agreement, are meaningful;
``--ckpt`` uses a trained amos-zoo checkpoint instead. ``voxel_agreement`` is the fraction of voxels with the
same label as the MONAI pipeline's output on the input grid (nearest mode: the same definition of labels).

    python benchmarks/bench_predict.py [--shape 512 512 120] [--threads 2] [--train-steps 120]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch


def plain_monai(net, image_path: str, roi=(96, 96, 96), overlap=0.25, spacing=(1.5, 1.5, 2.0), window=(-175, 250)):
    from monai import transforms as mt
    from monai.inferers import sliding_window_inference

    pre = mt.Compose(
        [
            mt.LoadImaged("image", reader="NibabelReader", ensure_channel_first=True, image_only=True),
            mt.Orientationd("image", axcodes="RAS"),
            mt.Spacingd("image", pixdim=spacing, mode="bilinear"),
            mt.ScaleIntensityRanged("image", window[0], window[1], 0.0, 1.0, clip=True),
        ]
    )
    t0 = time.perf_counter()
    data = pre({"image": image_path})
    t1 = time.perf_counter()
    with torch.no_grad():
        logits = sliding_window_inference(data["image"][None], roi, 4, net, overlap=overlap, mode="gaussian")
    t2 = time.perf_counter()
    labels = logits.argmax(1)  # MetaTensor with the preprocessed affine and applied operations
    inverse = mt.Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=True)
    out = inverse({"pred": labels[0].float()[None] if labels.ndim == 4 else labels, "image": data["image"]})["pred"]
    t3 = time.perf_counter()
    return out[0].numpy().astype(np.uint8), {"preprocess": t1 - t0, "sliding_window": t2 - t1, "resample": t3 - t2}


def train_unet(steps: int, cache: Path) -> torch.nn.Module:
    """The registry UNet trained briefly on phantoms generated directly on the btcv grid (1.5 x 1.5 x 2 mm)."""
    from monai.losses import DiceCELoss

    from amos_zoo.data.synth import make_phantom
    from amos_zoo.models.registry import create_model

    net = create_model("unet")
    if cache.is_file():
        net.load_state_dict(torch.load(cache, weights_only=True))
        print(f"trained UNet loaded from {cache}")
        return net.eval()
    cases = [make_phantom(100 + i, shape=(240, 240, 120), spacing=(1.5, 1.5, 2.0), anatomy_scale=1.3) for i in range(4)]
    images = [torch.from_numpy(np.clip((c.image + 175) / 425, 0, 1)).float() for c in cases]
    labels = [torch.from_numpy(c.label.astype(np.int64)) for c in cases]
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-5)
    rng = np.random.default_rng(0)
    net.train()
    start = time.perf_counter()
    for step in range(steps):
        xs, ys = [], []
        for _ in range(2):
            k = rng.integers(len(cases))
            fg = np.argwhere(labels[k].numpy() > 0)
            centre = fg[rng.integers(len(fg))]
            lo = [int(np.clip(c - 48, 0, s - 96)) for c, s in zip(centre, labels[k].shape)]
            sl = tuple(slice(a, a + 96) for a in lo)
            xs.append(images[k][sl][None])
            ys.append(labels[k][sl][None])
        x, y = torch.stack(xs), torch.stack(ys)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = loss_fn(net(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 20 == 0 or step == steps - 1:
            print(f"  train step {step + 1}/{steps}: loss {loss.item():.3f} ({time.perf_counter() - start:.0f} s)")
    torch.save(net.state_dict(), cache)
    return net.eval()


def main() -> None:
    from amos_zoo.data.recipes import get_recipe
    from amos_zoo.data.synth import make_phantom
    from amos_zoo.infer.predictor import Predictor
    from amos_zoo.io import save_nifti

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 120))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="/tmp/amos_zoo_bench_predict.nii.gz")
    parser.add_argument("--ckpt", default=None, help="a trained amos-zoo checkpoint (its recipe and window size)")
    parser.add_argument("--train-steps", type=int, default=120, help="training steps of the benchmark's UNet")
    parser.add_argument("--model-cache", type=Path, default=Path("/tmp/amos_zoo_bench_unet.pt"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    case = make_phantom(3, shape=tuple(args.shape), spacing=(0.7, 0.7, 2.0), anatomy_scale=1.3)
    save_nifti(case.image, case.affine, args.out)
    if args.ckpt:
        from amos_zoo.infer.pipeline import load_predictor

        loaded = load_predictor(args.ckpt)
        net, base_recipe, roi = loaded.model, loaded.recipe, loaded.roi_size
    else:
        net, base_recipe, roi = train_unet(args.train_steps, args.model_cache), get_recipe("btcv"), (96, 96, 96)
    print(f"threads: {torch.get_num_threads()}; input {tuple(args.shape)} at 0.7 x 0.7 x 2.0 mm")

    start = time.perf_counter()
    ref, parts = plain_monai(net, args.out, roi, 0.25, base_recipe.spacing, base_recipe.ct_window)
    t_monai = time.perf_counter() - start
    print(
        f"plain MONAI: {t_monai:.1f} s ({', '.join(f'{k} {v:.1f} s' for k, v in parts.items())}); "
        f"output shape {ref.shape} for input {tuple(args.shape)}"
    )
    if ref.shape != tuple(args.shape):
        print("  the plain pipeline's output is not on the input grid; it is resampled onto it for the comparison")
        from monai.transforms import ResizeWithPadOrCrop

        ref = ResizeWithPadOrCrop(tuple(args.shape))(ref[None])[0].numpy()

    body = case.image > -500
    variants = [  # (name, precision, foreground crop, interpolation): one lever at a time
        ("fp32, same windows, nearest", "fp32", False, "nearest"),
        ("fp32, foreground crop, nearest", "fp32", True, "nearest"),
        ("fp32, same windows, linear", "fp32", False, "linear"),
        ("bf16 autocast, same windows, nearest", "bf16", False, "nearest"),
        ("bf16 autocast, foreground crop, linear", "bf16", True, "linear"),
    ]
    results = {}
    for name, precision, crop, interpolation in variants:
        predictor = Predictor(
            net,
            get_recipe(base_recipe, crop_foreground=crop),
            roi,
            sw_batch_size=4,
            overlap=0.25,
            precision=precision,
            interpolation=interpolation,
        )
        start = time.perf_counter()
        ours, affine, _ = predictor.predict_case(args.out, "CT")
        seconds = time.perf_counter() - start
        assert ours.shape == tuple(args.shape) and np.allclose(affine, case.affine)  # always the input grid
        agreement = float(np.mean(ours == ref))
        results[name] = (seconds, agreement)
        print(
            f"amos-zoo [{name}]: {seconds:.1f} s, ratio {t_monai / seconds:.2f}, agreement {agreement:.5f} "
            f"(inside the body {float(np.mean(ours[body] == ref[body])):.5f}; with the phantom's truth "
            f"{float(np.mean(ours == case.label)):.4f} vs MONAI's {float(np.mean(ref == case.label)):.4f})"
        )
    seconds, agreement = results["bf16 autocast, same windows, nearest"]
    print(f"ratio_vs_monai: {t_monai / seconds:.2f}")
    print(f"voxel_agreement: {agreement:.5f}")


if __name__ == "__main__":
    main()
