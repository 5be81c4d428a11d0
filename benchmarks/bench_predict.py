"""Benchmark: seconds per case for a 512 x 512 x 120 CT at 0.7 x 0.7 x 2.0 mm with UNet on CPU.

Compares, in one run on the same scan and the same network weights:

* the plain MONAI pipeline: Orientation, Spacing to 1.5 x 1.5 x 2.0, intensity window,
  ``sliding_window_inference`` 96^3 overlap 0.25, argmax, Spacing back (whose output shape is checked
  against the input: it can come back a voxel short);
* amos-zoo's Predictor (same recipe, same window and overlap), whose output is always on the input grid.

``voxel_agreement`` is the fraction of voxels with the same label as the MONAI pipeline resampled onto
the input grid. With untrained weights (the default) the network's labels in the air outside the body
are arbitrary, so amos-zoo's foreground crop (which labels air as background) is switched off for the
agreement run (``--crop`` times the crop too, with agreement inside the body only). Pass ``--ckpt`` for
a trained amos-zoo checkpoint of the same recipe.

    python benchmarks/bench_predict.py [--shape 512 512 120] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def plain_monai(net, image_path: str, roi=(96, 96, 96), overlap=0.25, spacing=(1.5, 1.5, 2.0), window=(-175, 250)):
    from monai import transforms as mt
    from monai.inferers import sliding_window_inference

    pre = mt.Compose(
        [
            mt.LoadImaged("image", reader="NibabelReader", ensure_channel_first=True, image_only=True),
            mt.Orientationd("image", axcodes="RAS"),
            mt.Spacingd("image", pixdim=(1.5, 1.5, 2.0), mode="bilinear"),
            mt.ScaleIntensityRanged("image", -175, 250, 0.0, 1.0, clip=True),
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


def main() -> None:
    from amos_zoo.data.recipes import get_recipe
    from amos_zoo.data.synth import make_phantom
    from amos_zoo.engine.inference import Predictor
    from amos_zoo.io import save_nifti
    from amos_zoo.models.registry import create_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 120))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--crop", action="store_true", help="also time amos-zoo with its foreground crop")
    parser.add_argument("--out", default="/tmp/amos_zoo_bench_predict.nii.gz")
    parser.add_argument("--ckpt", default=None, help="a trained amos-zoo checkpoint (its recipe and window size)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    case = make_phantom(3, shape=tuple(args.shape), spacing=(0.7, 0.7, 2.0), anatomy_scale=1.3)
    save_nifti(case.image, case.affine, args.out)
    if args.ckpt:
        from amos_zoo.engine.predict import load_predictor

        loaded = load_predictor(args.ckpt)
        net, base_recipe, roi = loaded.model, loaded.recipe, loaded.roi_size
    else:
        net, base_recipe, roi = create_model("unet").eval(), get_recipe("btcv"), (96, 96, 96)

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

    recipe = get_recipe(base_recipe, crop_foreground=False)
    predictor = Predictor(net, recipe, roi, sw_batch_size=4, overlap=0.25)
    start = time.perf_counter()
    ours, affine, _ = predictor.predict_case(args.out, "CT")
    t_ours = time.perf_counter() - start
    assert ours.shape == tuple(args.shape) and np.allclose(affine, case.affine)
    agreement = float(np.mean(ours == ref))
    print(f"amos-zoo (no crop): {t_ours:.1f} s; output on the input grid {ours.shape}")
    if args.crop:
        cropped = Predictor(net, get_recipe(base_recipe, crop_foreground=True), roi, sw_batch_size=4, overlap=0.25)
        start = time.perf_counter()
        ours_crop, _, _ = cropped.predict_case(args.out, "CT")
        t_crop = time.perf_counter() - start
        body = case.image > -500
        print(
            f"amos-zoo (foreground crop): {t_crop:.1f} s, ratio {t_monai / t_crop:.2f}, agreement inside the body "
            f"{float(np.mean(ours_crop[body] == ref[body])):.4f}"
        )
    print(f"ratio_vs_monai: {t_monai / t_ours:.2f}")
    print(f"voxel_agreement: {agreement:.5f}")


if __name__ == "__main__":
    main()
