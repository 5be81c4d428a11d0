"""The posneg recipes' one-pass random part (PosNegPatchesd) equals MONAI's transforms applied one after the other:
same seed, same tensors (values, dtypes, shapes, plain tensors), over many draws that reach every branch (flips
on each axis, each rotation, scaling, shifting, both and neither); and the data module's chain seeds it as it
seeded the MONAI chain it replaces, so every sample of a run is what it was."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from monai import transforms as mt
from monai.data import MetaTensor

from amos_zoo.data.recipes import get_recipe
from amos_zoo.data.transforms import ClassLocationsd, PosNegPatchesd, WithoutMetadata, train_transforms


def _entry(shape=(30, 26, 22), meta: bool = False) -> dict:
    """A cached training entry: float32 image, uint8 label with blocks of three organs, fg / bg positions."""
    rng = np.random.RandomState(0)
    image = rng.normal(0.5, 0.3, (1, *shape)).astype(np.float32)
    image[:, :3] = 0  # outside the body: no background centres there
    label = np.zeros((1, *shape), np.uint8)
    for organ in (1, 2, 5):
        lo = [rng.randint(3, s - 8) for s in shape]
        label[(0, *[slice(a, a + 6) for a in lo])] = organ
    entry = {"image": torch.from_numpy(image), "label": torch.from_numpy(label), "case_id": "amos_0001"}
    entry = ClassLocationsd(class_locations=False)(entry)
    if meta:  # as the disk cache returns an entry: MetaTensors
        entry = {k: MetaTensor(v) if isinstance(v, torch.Tensor) else v for k, v in entry.items()}
    return entry


def _assert_same(fast: list[dict], reference: list[dict]) -> None:
    assert len(fast) == len(reference)
    for a, b in zip(fast, reference):
        assert list(a) == list(b)
        for key in a:
            if isinstance(b[key], torch.Tensor):
                assert type(a[key]) is torch.Tensor and type(b[key]) is torch.Tensor
                assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
                assert torch.equal(a[key], b[key]), key
            else:
                assert a[key] == b[key]


@pytest.mark.parametrize("meta", [False, True])
def test_one_pass_equals_monai_transforms_seed_by_seed(meta):
    """Probabilities of 0.3 so that 150 draws of 4 crops reach every branch; crops smaller than the volume and, on
    one axis, equal to it."""
    entry = _entry(meta=meta)
    patches = PosNegPatchesd(
        ["image", "label"],
        (12, 12, 22),
        pos=1,
        neg=1,
        num_samples=4,
        flip_prob=0.3,
        rot90_prob=0.3,
        intensity_prob=0.3,
        intensity_factor=0.1,
    )
    seen = {"flip0": 0, "flip1": 0, "flip2": 0, "rotate": 0, "scale": 0, "shift": 0, "untouched": 0}
    for seed in range(150):
        patches.set_random_state(seed)
        fast = patches(dict(entry))
        patches.set_random_state(seed)
        reference = patches.reference(dict(entry))
        _assert_same(fast, reference)
        patches.set_random_state(seed)
        patches.crop.randomize(entry["label"], entry["fg_indices"], entry["bg_indices"], entry["image"])
        for _ in range(4):
            axes, k, factor, offset = patches._draws()
            for axis in axes:
                seen[f"flip{axis}"] += 1
            seen["rotate"] += k > 0
            seen["scale"] += factor is not None
            seen["shift"] += offset is not None
            seen["untouched"] += not axes and not k and factor is None and offset is None
    assert min(seen.values()) > 10, seen
    # the entry itself is never written to
    assert torch.equal(torch.as_tensor(entry["image"]), _entry()["image"])


def _monai_chain(recipe) -> list:
    """The random part as train_transforms built it before the one-pass transform: MONAI's transforms."""
    keys = ["image", "label"]
    chain = [
        mt.RandCropByPosNegLabeld(
            keys,
            label_key="label",
            spatial_size=recipe.patch_size,
            pos=recipe.pos,
            neg=recipe.neg,
            num_samples=recipe.num_samples,
            fg_indices_key="fg_indices",
            bg_indices_key="bg_indices",
        ),
        mt.DeleteItemsd(["class_locations", "fg_indices", "bg_indices"]),
        *[mt.RandFlipd(keys, prob=recipe.flip_prob, spatial_axis=axis) for axis in range(3)],
        mt.RandRotate90d(keys, prob=recipe.rot90_prob, max_k=3, spatial_axes=(0, 1)),
        mt.RandScaleIntensityd("image", factors=recipe.intensity_factor, prob=recipe.intensity_prob),
        mt.RandShiftIntensityd("image", offsets=recipe.intensity_factor, prob=recipe.intensity_prob),
    ]
    return WithoutMetadata(chain)


def test_data_module_chain_draws_what_the_monai_chain_drew():
    """The btcv recipe's training chain, seeded as the resumable sampler seeds it (the whole chain, per sample),
    gives the tensors the MONAI chain gave for that seed: the sample-by-sample random state is unchanged."""
    recipe = dataclasses.replace(get_recipe("btcv"), patch_size=(12, 12, 10))
    entry = _entry()
    chain = train_transforms(recipe, batch_size=2)
    assert isinstance(chain[-1], PosNegPatchesd)
    head = mt.Compose(chain[:-1])
    ours = mt.Compose([*chain[:-1], chain[-1]])
    theirs = mt.Compose([*chain[:-1], _monai_chain(recipe)])
    item = head({k: v for k, v in entry.items() if k in ("image", "label", "case_id")})
    for seed in range(40):
        ours.set_random_state(seed)
        theirs.set_random_state(seed)
        _assert_same(ours(dict(item), start=len(chain) - 1), theirs(dict(item), start=len(chain) - 1))


def test_axis_order_layout_keeps_values_and_survives_the_cache(tmp_path):
    """An nnunet-v2 training entry is laid out on nnU-Net's axis order: the same values and shape, a crop permuted
    to nnU-Net's axes is a plain copy, and the disk cache stores and reads back that layout."""
    from amos_zoo.data.cache import ValidatedPersistentDataset, allow_cache_types
    from amos_zoo.data.transforms import AxisOrderLayoutd

    entry = _entry(shape=(16, 14, 12))
    layout = AxisOrderLayoutd(["image", "label"], (2, 0, 1))  # nnU-Net's axis i is amos-zoo's axis axes[i]
    laid_out = layout(entry)
    for key in ("image", "label"):
        assert torch.equal(laid_out[key], entry[key]) and laid_out[key].dtype == entry[key].dtype
        assert laid_out[key].permute(0, 3, 1, 2).is_contiguous() and not laid_out[key].is_contiguous()
    allow_cache_types()
    data = [{"image": entry["image"], "label": entry["label"], "case_id": "amos_0001"}]
    ds = ValidatedPersistentDataset(data, transform=mt.Compose([layout]), cache_dir=tmp_path, track_meta=False)
    first = ds._cachecheck(data[0])
    stored = ds._cachecheck(data[0])  # read back from the disk cache
    assert len(list(tmp_path.glob("*.pt"))) == 1
    for key in ("image", "label"):
        assert torch.equal(stored[key], entry[key]) and stored[key].stride() == first[key].stride()
        assert stored[key].permute(0, 3, 1, 2).is_contiguous()


def test_nnunet_chain_with_the_layout_draws_what_it_drew_without():
    """The nnunet-v2 recipe's training chain (nnU-Net sampling and augmentation) on the laid-out entry gives the
    tensors it gives on the (x, y, z) contiguous entry, for the same seed."""
    from amos_zoo.data.transforms import AxisOrderLayoutd

    recipe = dataclasses.replace(
        get_recipe("btcv"), sampling="nnunet", augmentation="nnunet-v2", patch_size=(12, 12, 8), num_samples=1
    )
    recipe = dataclasses.replace(recipe, spacing=(1.0, 1.0, 2.5))
    chain = train_transforms(recipe, batch_size=2)
    assert isinstance(chain[-2], AxisOrderLayoutd)
    entry = {k: v for k, v in _entry().items() if k in ("image", "label", "case_id")}
    plain = mt.Compose(chain[:-2])(dict(entry))
    laid_out = chain[-2](dict(plain))
    random_part = mt.Compose([chain[-1]])
    for seed in range(6):
        random_part.set_random_state(seed)
        a = random_part(dict(laid_out))
        random_part.set_random_state(seed)
        b = random_part(dict(plain))
        _assert_same(a, b)


def test_patch_beyond_the_volume_equals_torch_pad_in_the_entry_layout():
    """nnU-Net sampling's crop reaching past the volume (a foreground-forced patch near the border): zero padding
    equal to torch's pad of the cut patch, in the memory layout of the entry (plain or nnU-Net's axis order)."""
    from amos_zoo.data.transforms import AxisOrderLayoutd, OversampledCropd

    rng = np.random.RandomState(1)
    image = torch.from_numpy(rng.normal(size=(1, 9, 8, 7)).astype(np.float32))
    crop = OversampledCropd(["image"], (6, 5, 4))
    for x in (image, AxisOrderLayoutd(["image"], (2, 1, 0))({"image": image})["image"]):
        padded = 0
        for _ in range(40):
            lower = [int(rng.randint(-3, s - 1)) for s in (9, 8, 7)]
            got = crop._crop(x, lower)
            src = [slice(max(lo, 0), min(lo + p, s)) for lo, p, s in zip(lower, (6, 5, 4), (9, 8, 7))]
            pads = [(sl.start - lo, lo + p - sl.stop) for sl, lo, p in zip(src, lower, (6, 5, 4))]
            want = torch.nn.functional.pad(image[(slice(None), *src)], [v for ab in reversed(pads) for v in ab])
            assert got.shape == want.shape and torch.equal(got, want)
            if any(any(ab) for ab in pads):
                padded += 1
                memory_order = sorted(range(4), key=lambda d: -got.stride(d))
                assert memory_order == sorted(range(4), key=lambda d: -x.stride(d))
        assert padded > 10
