"""Benchmark: training batches per second per loader worker, amos-zoo's data path against research-contributions'.

Both sides start from the same preprocessed (cached) case at the btcv recipe's grid (1.5 x 1.5 x 2.0 mm, a
phantom of an adult abdomen: 256 x 256 x 160 voxels) and produce the same batch: 4 positive/negative crops of
96^3 with the recipe's flips, rotations and intensity jitter.

* research-contributions (SwinUNETR/BTCV/utils/data_utils.py): the label cached as float32 (MONAI's default
  after ``Spacingd``), ``RandCropByPosNegLabeld`` searching the whole volume for foreground and background on
  every sample, then the random transforms.
* amos-zoo: the data module's own training transforms on its cache entry: uint8 labels and the foreground /
  background positions computed once per case and cached (as nnU-Net caches class locations), so a crop is an
  index lookup; training entries hold plain tensors (no per-operation metadata tracking, nothing to deep-copy
  into each sample but the crops).

* tuned MONAI: what a careful MONAI user writes with MONAI's own tools: the same transforms on a uint8 label,
  the foreground / background positions computed once per case (``FgBgToIndicesd``, passed to
  ``RandCropByPosNegLabeld`` as ``fg_indices_key`` / ``bg_indices_key``) and metadata tracking off in the random
  part (``set_track_meta(False)``).

Headline (like with like, ``ratio_vs_tuned_monai_data``): amos-zoo against the tuned MONAI pipeline, both from the
entry in memory, as a CacheDataset holds it; ``ratio_vs_monai_data`` is the ratio against research-contributions'.
A fourth line is the data module's real path on full AMOS, which does not fit in memory: the entry
read from the disk cache for every sample (memory-mapped, as nnU-Net reads its preprocessed arrays).

One worker = one process with one thread, measured in this process, warmed up, ``--repeats`` interleaved
repeats of ``--batches`` batches each (median and spread).

    python benchmarks/bench_data.py [--batches 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    from monai import transforms as mt

    from amos_zoo.console import quiet_third_party
    from amos_zoo.data.datamodule import SegmentationDataModule
    from amos_zoo.data.synth import make_phantom
    from amos_zoo.io import save_nifti, write_json

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shape", type=int, nargs=3, default=(256, 256, 160))
    args = parser.parse_args()
    quiet_third_party()
    torch.set_num_threads(1)  # one loader worker: one process, one thread

    root = Path(tempfile.mkdtemp(prefix="amos_zoo_bench_data_"))
    case = make_phantom(1, shape=tuple(args.shape), spacing=(1.5, 1.5, 2.0), anatomy_scale=1.3)
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir()
    save_nifti(case.image.astype(np.int16), case.affine, root / "imagesTr/amos_0001.nii.gz")
    save_nifti(case.label.astype(np.uint8), case.affine, root / "labelsTr/amos_0001.nii.gz")
    write_json(
        root / "dataset.json",
        {
            "name": "bench",
            "labels": {str(i): f"organ{i}" for i in range(16)},
            "modality": {"0": "CT"},
            "training": [{"image": "./imagesTr/amos_0001.nii.gz", "label": "./labelsTr/amos_0001.nii.gz"}],
            "validation": [{"image": "./imagesTr/amos_0001.nii.gz", "label": "./labelsTr/amos_0001.nii.gz"}],
        },
    )
    dm = SegmentationDataModule(str(root), task="all", recipe="btcv", num_workers=0, cache_dir=str(root / "cache"))
    dm.prepare_data(progress=False)
    dm.setup("fit")
    recipe = dm.recipe
    ours = dm.train_ds
    cached = ours._cachecheck(dm.case_dicts("train")[0])  # amos-zoo's training entry (plain tensors)
    preprocessed = dm.val_ds._cachecheck(dm.case_dicts("val")[0])  # the same volume as MetaTensors

    # research-contributions' random part, on the same preprocessed volume (MetaTensors) with a float32 label
    assert torch.equal(preprocessed["image"].as_tensor(), cached["image"])  # no padding needed at this size
    reference_item = {"image": preprocessed["image"], "label": preprocessed["label"].float()}
    keys = ["image", "label"]
    reference = mt.Compose(
        [
            mt.RandCropByPosNegLabeld(
                keys,
                label_key="label",
                spatial_size=recipe.patch_size,
                pos=recipe.pos,
                neg=recipe.neg,
                num_samples=recipe.num_samples,
                image_key="image",
                image_threshold=0,
            ),
            *[mt.RandFlipd(keys, prob=recipe.flip_prob, spatial_axis=a) for a in range(3)],
            mt.RandRotate90d(keys, prob=recipe.rot90_prob, max_k=3),
            mt.RandScaleIntensityd("image", factors=recipe.intensity_factor, prob=recipe.intensity_prob),
            mt.RandShiftIntensityd("image", offsets=recipe.intensity_factor, prob=recipe.intensity_prob),
        ]
    )
    reference.set_random_state(0)

    def batch_reference():
        crops = reference(dict(reference_item))
        return torch.stack([c["image"].as_tensor() for c in crops]), torch.stack(
            [c["label"].as_tensor() for c in crops]
        )

    # the tuned MONAI pipeline: uint8 label, positions computed once (cached with the entry), no metadata tracking
    from monai.data import set_track_meta

    tuned_item = {"image": preprocessed["image"], "label": preprocessed["label"].to(torch.uint8)}
    tuned_item = mt.FgBgToIndicesd("label", image_key="image", image_threshold=0)(tuned_item)
    tuned_item = {k: v.as_tensor() if hasattr(v, "as_tensor") else v for k, v in tuned_item.items()}
    tuned = mt.Compose(
        [
            mt.RandCropByPosNegLabeld(
                keys,
                label_key="label",
                spatial_size=recipe.patch_size,
                pos=recipe.pos,
                neg=recipe.neg,
                num_samples=recipe.num_samples,
                fg_indices_key="label_fg_indices",
                bg_indices_key="label_bg_indices",
            ),
            *[mt.RandFlipd(keys, prob=recipe.flip_prob, spatial_axis=a) for a in range(3)],
            mt.RandRotate90d(keys, prob=recipe.rot90_prob, max_k=3),
            mt.RandScaleIntensityd("image", factors=recipe.intensity_factor, prob=recipe.intensity_prob),
            mt.RandShiftIntensityd("image", offsets=recipe.intensity_factor, prob=recipe.intensity_prob),
        ]
    )
    tuned.set_random_state(0)

    def batch_tuned():
        set_track_meta(False)
        try:
            crops = tuned(dict(tuned_item))
        finally:
            set_track_meta(True)
        return torch.stack([c["image"] for c in crops]), torch.stack([c["label"] for c in crops])

    def batch_ours():  # the random part on the cached entry in memory, as research-contributions' CacheDataset
        crops = ours._post_transform(dict(cached))
        return torch.stack([c["image"] for c in crops]), torch.stack([c["label"] for c in crops])

    def batch_ours_from_disk():  # the same, reading the entry from the disk cache each time (the data module)
        crops = ours[0]
        return torch.stack([c["image"] for c in crops]), torch.stack([c["label"] for c in crops])

    sides = {
        "research-contributions": batch_reference,
        "tuned MONAI": batch_tuned,
        "amos-zoo": batch_ours,
        "amos-zoo, disk cache read": batch_ours_from_disk,
    }
    for fn in sides.values():  # warm-up, and the shapes agree
        images, labels = fn()
        assert images.shape == (recipe.num_samples, 1, *recipe.patch_size), images.shape
    rates: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for r in range(args.repeats):  # interleaved, each side first in turn
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn = sides[name]
            start = time.perf_counter()
            for _ in range(args.batches):
                fn()
            rates[name].append(args.batches / (time.perf_counter() - start))
    for name, values in rates.items():
        print(
            f"{name:>24}: {statistics.median(values):6.2f} batches/s per worker "
            f"(min {min(values):.2f}, max {max(values):.2f}, n={len(values)}); "
            f"{recipe.num_samples} crops of {'x'.join(map(str, recipe.patch_size))} from a {tuple(args.shape)} case"
        )
    label_mb = {
        "float32 label": reference_item["label"].numel() * 4 / 2**20,
        "uint8 label": cached["label"].numel() / 2**20,
    }
    print("cached label: " + ", ".join(f"{k} {v:.0f} MiB" for k, v in label_mb.items()))
    ratio = statistics.median(rates["amos-zoo"]) / statistics.median(rates["research-contributions"])
    disk = statistics.median(rates["amos-zoo, disk cache read"])
    print(f"batches_per_s_per_worker: {statistics.median(rates['amos-zoo']):.2f}")
    print(f"batches_per_s_per_worker_disk_cache: {disk:.2f}")
    tuned_ratio = statistics.median(rates["amos-zoo"]) / statistics.median(rates["tuned MONAI"])
    print(f"ratio_vs_monai_data: {ratio:.2f}")
    print(f"ratio_vs_tuned_monai_data: {tuned_ratio:.2f}")


if __name__ == "__main__":
    main()
