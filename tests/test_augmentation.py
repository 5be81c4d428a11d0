"""nnU-Net's augmentation in amos-zoo equals nnU-Net's own: the nnunet-v2 chain equals nnunetv2 2.8.1's
``nnUNetTrainer.get_training_transforms`` (batchgeneratorsv2) and the nnunet-v1 chain (amos-paper) equals nnunet
1.7.1's ``get_default_augmentation`` (batchgenerators), sample by sample on the same random state over many draws
(so application rates, parameter ranges and distributions are the same), with the same initial patch size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from amos_zoo.data.transforms import NnUNetAugmentationd, nnunet_axes

pytest.importorskip("nnunetv2")


def _sample(rng: np.random.RandomState, shape, classes: int = 4):
    """A smooth image (so that blur, low resolution and interpolation change it) and a blocky label map."""
    image = rng.normal(0, 1, (1, *shape)).astype(np.float32)
    image = np.cumsum(np.cumsum(image, 1), 2) / 4
    label = np.zeros((1, *shape), np.int16)
    for c in range(1, classes):
        lo = [rng.randint(0, s // 2) for s in shape]
        label[(0, *[slice(a, a + s // 2) for a, s in zip(lo, shape)])] = c
    return torch.from_numpy(image), torch.from_numpy(label)


def _to_xyz(x: torch.Tensor, axes) -> torch.Tensor:
    """nnU-Net's axes (spatial dim i is amos-zoo axis axes[i]) -> amos-zoo's (x, y, z)."""
    return x.permute(0, *[1 + axes.index(a) for a in range(3)])


def _nnunet_v2(patch, use_mask: bool):
    """nnunetv2's own training transforms and initial patch size for a 3d_fullres patch (nnU-Net's axes)."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    trainer = object.__new__(nnUNetTrainer)  # only configure_rotation...: needs the plan's patch size
    trainer.configuration_manager = type("C", (), {"patch_size": list(patch)})()
    trainer.print_to_log_file = lambda *a, **k: None
    rotation, dummy_2d, initial, mirror_axes = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    chain = nnUNetTrainer.get_training_transforms(
        list(patch), rotation, None, mirror_axes, dummy_2d, use_mask_for_norm=[use_mask]
    )
    return chain, [int(i) for i in initial]


CASES_V2 = [
    # (amos-zoo patch (x, y, z), spacing (x, y, z), masked z-score)
    ((20, 16, 12), (0.8, 0.8, 2.5), False),  # AMOS-like: z coarse and first on nnU-Net's axes
    ((16, 16, 16), (1.0, 1.0, 1.0), True),  # isotropic, normalised inside the non-zero mask
    ((40, 36, 8), (0.7, 0.7, 5.0), False),  # a patch 5x flatter than wide: nnU-Net's dummy-2D augmentation
]


@pytest.mark.parametrize("patch,spacing,use_mask", CASES_V2)
def test_nnunet_v2_augmentation_equals_batchgeneratorsv2_chain(patch, spacing, use_mask):
    ours = NnUNetAugmentationd("nnunet-v2", patch, spacing, use_mask_for_norm=use_mask)
    axes = nnunet_axes(spacing)
    theirs, initial = _nnunet_v2(ours.patch_size, use_mask)
    assert ours.patch_size == [patch[a] for a in axes]
    assert ours.initial_patch_size == initial  # the data loader's larger patch (rotation and scaling headroom)
    assert repr(ours.chain) == repr(theirs)  # every transform, probability, range and option
    rng = np.random.RandomState(0)
    draws = 1000 if patch == CASES_V2[0][0] else 300  # the AMOS-like case: a thousand draws
    for seed in range(draws):
        image, label = _sample(rng, initial)
        if use_mask:  # the non-zero region of a masked z-score, and nnU-Net's -1 label outside it
            image[:, :2] = 0
            label[:, :2] = -1
        np.random.seed(seed)
        torch.manual_seed(seed)
        ref = theirs(image=image.clone(), segmentation=label.clone())
        label_in = label.clamp(min=0).to(torch.uint8)  # amos-zoo's label: uint8, the mask found from the image
        out = ours.augment({"image": _to_xyz(image, axes), "label": _to_xyz(label_in, axes)}, seed)
        torch.testing.assert_close(out["image"], _to_xyz(ref["image"], axes), atol=1e-5, rtol=1e-5)
        assert torch.equal(out["label"], _to_xyz(ref["segmentation"], axes).to(torch.uint8))
        assert out["label"].dtype == torch.uint8
    assert tuple(out["image"].shape[1:]) == tuple(patch)


def test_nnunet_v2_seeding_is_reproducible_and_leaves_global_state():
    aug = NnUNetAugmentationd("nnunet-v2", (16, 16, 12), (0.8, 0.8, 2.0))
    image, label = _sample(np.random.RandomState(1), aug.initial_patch_size_xyz)
    data = {"image": image, "label": label.to(torch.uint8)}
    np.random.seed(5)
    torch.manual_seed(5)
    aug.set_random_state(seed=3)
    a = aug(data)
    after = (np.random.rand(), torch.rand(1).item())
    np.random.seed(5)
    torch.manual_seed(5)
    assert after == (np.random.rand(), torch.rand(1).item())  # the global generators are untouched
    aug.set_random_state(seed=3)
    b = aug(data)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


def _nnunet_v1(patch):
    """nnunet 1.7.1's own get_default_augmentation chain (the AMOS fork's nnUNetTrainer) for a patch."""
    pytest.importorskip("nnunet")
    from copy import deepcopy

    from nnunet.training.data_augmentation.default_data_augmentation import (
        default_2D_augmentation_params,
        default_3D_augmentation_params,
        get_default_augmentation,
        get_patch_size,
    )

    params = deepcopy(default_3D_augmentation_params)  # nnUNetTrainer.setup_DA_params
    dummy_2d = max(patch) / patch[0] > 3
    if dummy_2d:
        params["dummy_2D"] = True
        for key in ("elastic_deform_alpha", "elastic_deform_sigma", "rotation_x"):
            params[key] = default_2D_augmentation_params[key]
        initial = [
            patch[0],
            *get_patch_size(
                patch[1:], params["rotation_x"], params["rotation_y"], params["rotation_z"], params["scale_range"]
            ),
        ]
    else:
        initial = get_patch_size(
            patch, params["rotation_x"], params["rotation_y"], params["rotation_z"], params["scale_range"]
        )
    params["mask_was_used_for_normalization"] = {0: False}
    params["selected_seg_channels"] = [0]
    train, _ = get_default_augmentation(None, None, list(patch), params)
    return train.transform, [int(i) for i in initial]


@pytest.mark.parametrize("patch,spacing", [((20, 20, 8), (0.7, 0.7, 2.0)), ((24, 20, 6), (0.7, 0.7, 5.0))])
def test_nnunet_v1_augmentation_equals_batchgenerators_chain(patch, spacing):
    """amos-paper: the fork's elastic deformation, rotation, scaling, gamma and mirroring, by batchgenerators."""
    ours = NnUNetAugmentationd("nnunet-v1", patch, spacing)
    axes = nnunet_axes(spacing)
    theirs, initial = _nnunet_v1(ours.patch_size)
    assert ours.initial_patch_size == initial
    names = [type(t).__name__ for t in theirs.transforms]
    expected = [
        "SegChannelSelectionTransform",
        "SpatialTransform",
        "GammaTransform",
        "MirrorTransform",
        "MaskTransform",
        "RemoveLabelTransform",
        "RenameTransform",
        "NumpyToTensor",
    ]
    if ours.dummy_2d:
        expected[1:2] = ["Convert3DTo2DTransform", "SpatialTransform", "Convert2DTo3DTransform"]
    assert names == expected
    spatial = next(t for t in theirs.transforms if type(t).__name__ == "SpatialTransform")
    assert vars(ours.chain[0]) == vars(spatial)
    for mine, ref in zip(
        ours.chain[1:3], [t for t in theirs.transforms if type(t).__name__ in ("GammaTransform", "MirrorTransform")]
    ):
        assert vars(mine) == vars(ref)
    rng = np.random.RandomState(0)
    for seed in range(500 if patch[2] == 8 else 150):  # the AMOS fork's proportions: 500 draws
        image, label = _sample(rng, initial)
        batch = {"data": image.numpy()[None].copy(), "seg": label.numpy()[None].astype(np.float32)}
        np.random.seed(seed)
        ref = theirs(**batch)
        out = ours.augment({"image": _to_xyz(image, axes), "label": _to_xyz(label.to(torch.uint8), axes)}, seed)
        torch.testing.assert_close(out["image"], _to_xyz(ref["data"][0].float(), axes), atol=1e-4, rtol=1e-4)
        assert torch.equal(out["label"], _to_xyz(ref["target"][0], axes).to(torch.uint8))
    assert tuple(out["image"].shape[1:]) == tuple(patch)
