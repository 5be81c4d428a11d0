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

For the nnU-Net protocols (``--sides nnunet``; :func:`nnunet_sides`): the nnunet-v2 card's data path (nnU-Net
sampling, nnunetv2's augmentation chain) against nnunetv2 2.8.1's own ``nnUNetDataLoader`` with the transforms of
``nnUNetTrainer.get_training_transforms``, on the same case and the planned patch, ``ratio_vs_nnunet_data``.

One worker = one process with one thread, measured in this process, warmed up, ``--repeats`` interleaved
repeats of ``--batches`` (``--nnunet-batches``) batches each (median and spread).

    python benchmarks/bench_data.py --sides btcv --batches 100 --repeats 5
    python benchmarks/bench_data.py --sides nnunet --nnunet-batches 12 --repeats 3
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
    parser.add_argument("--nnunet-batch-size", type=int, default=2, help="the nnunet-v2 card's data.batch_size")
    parser.add_argument("--nnunet-batches", type=int, default=10, help="batches per repeat of the nnU-Net sides")
    parser.add_argument(
        "--sides",
        choices=("all", "btcv", "nnunet"),
        default="all",
        help="the btcv comparison, the nnU-Net one, or both",
    )
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
    if args.sides == "nnunet":
        sides = {}
    nnunet = None
    if args.sides != "btcv":
        nnunet = nnunet_sides(root, args.nnunet_batch_size)
        sides.update(nnunet["sides"])
    for name, fn in sides.items():  # warm-up, and the shapes agree
        images, labels = fn()
        expected = (nnunet or {}).get("shapes", {}).get(name, (recipe.num_samples, 1, *recipe.patch_size))
        assert tuple(images.shape) == tuple(expected) and images.shape[2:] == labels.shape[2:], (name, images.shape)
    rates: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for r in range(args.repeats):  # interleaved, each side first in turn
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn = sides[name]
            batches = args.nnunet_batches if name in (nnunet or {}).get("sides", {}) else args.batches
            start = time.perf_counter()
            for _ in range(batches):
                fn()
            rates[name].append(batches / (time.perf_counter() - start))
    for name, values in rates.items():
        what = (
            nnunet["what"]
            if name in (nnunet or {}).get("sides", {})
            else f"{recipe.num_samples} crops of {'x'.join(map(str, recipe.patch_size))}"
        )
        print(
            f"{name:>32}: {statistics.median(values):6.2f} batches/s per worker "
            f"(min {min(values):.2f}, max {max(values):.2f}, n={len(values)}); {what} from a {tuple(args.shape)} case"
        )
    if "amos-zoo" in rates:
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
    if nnunet is not None:
        theirs_nn = statistics.median(rates["nnunetv2 nnUNetDataLoader"])
        # within a repeat both sides draw the same augmentations: the per-repeat ratios are paired
        paired = [a / b for a, b in zip(rates["amos-zoo nnunet-v2"], rates["nnunetv2 nnUNetDataLoader"])]
        print("ratio_vs_nnunet_data per repeat (same draws): " + ", ".join(f"{r:.2f}" for r in paired))
        print(f"ratio_vs_nnunet_data: {statistics.median(rates['amos-zoo nnunet-v2']) / theirs_nn:.2f}")
        memory = statistics.median(rates["amos-zoo nnunet-v2, in memory"])
        print(f"ratio_vs_nnunet_data_entry_in_memory: {memory / theirs_nn:.2f}")


def nnunet_sides(root: Path, batch_size: int) -> dict:
    """The nnunet-v2 protocol's training data on the benchmark's case: amos-zoo's data module (nnU-Net sampling and
    nnunetv2's augmentation chain run by NnUNetAugmentationd) against nnunetv2's own nnUNetDataLoader with the
    transforms of nnUNetTrainer.get_training_transforms, both one thread, one batch of the plan's patch.

    nnU-Net reads the same preprocessed case (amos-zoo's, on nnU-Net's axes) in its unpacked format, memory-mapped
    ``.npy`` files with the class locations nnU-Net's preprocessor samples (``_sample_foreground_locations``), as
    amos-zoo's data module memory-maps its cache entry: ``ratio_vs_nnunet_data`` is amos-zoo's disk-cache read
    against it. Neither side downsamples the label for deep supervision (amos-zoo's training step does that).
    """
    import itertools
    import pickle

    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetNumpy
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    from amos_zoo.data.datamodule import SegmentationDataModule
    from amos_zoo.data.resumable import EpochSeededDataset, _nested, sample_seed
    from amos_zoo.data.transforms import NnUNetAugmentationd

    cache = str(root / "cache-nnunet")
    dm = SegmentationDataModule(
        str(root), task="all", recipe="nnunet-v2", batch_size=batch_size, num_workers=0, cache_dir=cache
    )
    dm.prepare_data(progress=False)
    dm.setup("fit")
    ours = dm.train_ds
    entry = ours._cachecheck(dm.case_dicts("train")[0])
    augmentation = next(t for t in _nested(ours.transform) if isinstance(t, NnUNetAugmentationd))
    seeded = EpochSeededDataset(ours, seed=0, batch_size=batch_size)

    def augmentation_seed(position: int) -> int:  # the seed NnUNetAugmentationd draws for a sample position
        ours.transform.set_random_state(seed=sample_seed(0, 0, position))
        return int(augmentation.R.randint(0, 2**31 - 1))

    counters = {"memory": itertools.count(), "disk": itertools.count()}

    def stack(samples: list[dict]):
        return torch.stack([s["image"] for s in samples]), torch.stack([s["label"] for s in samples])

    def batch_ours_in_memory():  # EpochSeededDataset's seeding and slot, on the entry in memory
        samples = []
        for slot in range(batch_size):
            ours.transform.set_random_state(seed=sample_seed(0, 0, next(counters["memory"])))
            for t in seeded._slotted:
                t.set_batch_slot(slot, batch_size)
            samples += ours._post_transform(dict(entry))
        return stack(samples)

    def batch_ours():  # the data module's path: the entry read from the disk cache for every sample
        samples = []
        for slot in range(batch_size):
            samples += seeded[(0, next(counters["disk"]), 0, slot)]
        return stack(samples)

    # nnU-Net: the same preprocessed volume (not padded: nnU-Net's loader pads) on nnU-Net's axes
    volume = dm.val_ds._cachecheck(dm.case_dicts("val")[0])
    to_nnunet = (0, *[1 + a for a in augmentation.axes])
    data = np.ascontiguousarray(volume["image"].as_tensor().permute(to_nnunet).numpy().astype(np.float32))
    seg = np.ascontiguousarray(volume["label"].as_tensor().permute(to_nnunet).numpy().astype(np.int8))
    folder = root / "nnUNet_preprocessed"
    folder.mkdir(exist_ok=True)
    np.save(folder / "amos_0001.npy", data)
    np.save(folder / "amos_0001_seg.npy", seg)
    classes = [int(c) for c in np.unique(seg) if c > 0]
    locations = DefaultPreprocessor._sample_foreground_locations(seg, classes, seed=1234)
    with open(folder / "amos_0001.pkl", "wb") as f:
        pickle.dump({"class_locations": locations}, f)

    class SeededLikeOurs:
        """nnU-Net's transforms, numpy and torch seeded before each sample with the seed amos-zoo's augmentation
        draws for the same sample position: both sides draw the same augmentations (which of them fire decides most
        of a batch's cost), and nnU-Net's sampling of the patch stays its own."""

        def __init__(self, transforms) -> None:
            self.transforms, self.positions = transforms, itertools.count()
            self.seeds = [augmentation_seed(p) for p in range(1024)]

        def __call__(self, **data):
            seed = self.seeds[next(self.positions) % len(self.seeds)]
            np.random.seed(seed)
            torch.manual_seed(seed)
            return self.transforms(**data)

    patch = list(augmentation.patch_size)
    trainer = object.__new__(nnUNetTrainer)  # configure_rotation... needs only the plan's patch size
    trainer.configuration_manager = type("C", (), {"patch_size": patch})()
    trainer.print_to_log_file = lambda *a, **k: None
    rotation, dummy_2d, initial, mirror_axes = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    assert [int(i) for i in initial] == augmentation.initial_patch_size, (initial, augmentation.initial_patch_size)
    transforms = nnUNetTrainer.get_training_transforms(
        patch, rotation, None, mirror_axes, dummy_2d, use_mask_for_norm=[augmentation.use_mask_for_norm]
    )
    labels = LabelManager({"background": 0, **{f"organ{i}": i for i in range(1, 16)}}, None)
    loader = nnUNetDataLoader(
        nnUNetDatasetNumpy(str(folder), identifiers=["amos_0001"]),
        batch_size,
        [int(i) for i in initial],
        patch,
        labels,
        oversample_foreground_percent=dm.recipe.oversample_foreground,
        transforms=SeededLikeOurs(transforms),
    )

    def batch_nnunet():
        batch = loader.generate_train_batch()
        return batch["data"], batch["target"]

    return {
        "sides": {
            "nnunetv2 nnUNetDataLoader": batch_nnunet,
            "amos-zoo nnunet-v2": batch_ours,
            "amos-zoo nnunet-v2, in memory": batch_ours_in_memory,
        },
        "shapes": {
            "nnunetv2 nnUNetDataLoader": (batch_size, 1, *patch),
            "amos-zoo nnunet-v2": (batch_size, 1, *dm.recipe.patch_size),
            "amos-zoo nnunet-v2, in memory": (batch_size, 1, *dm.recipe.patch_size),
        },
        "what": f"{batch_size} patches of {'x'.join(map(str, patch))} (nnU-Net axes)",
    }


if __name__ == "__main__":
    main()
