"""Protocol values against their sources: preprocessing order read from nnU-Net's own code, the AMOS fork's MR task,
research-contributions' blending per network, and the wording rule of every card ("equals" names its test)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from amos_zoo.data.recipes import get_recipe, preprocessing_spec
from amos_zoo.protocols import get_protocol, list_protocols, protocol_config

REPO = Path(__file__).resolve().parents[1]


def _order(recipe) -> list[str]:
    """The recipe's deterministic steps by kind: crop, normalise, resample."""
    kinds = {"CropForegroundd": "crop", "ModalityNormalized": "normalise", "Spacingd": "resample"}
    return [
        kinds[s.target.rsplit(".", 1)[1]] for s in preprocessing_spec(recipe) if s.target.rsplit(".", 1)[1] in kinds
    ]


def _first(source: str, *needles: str) -> list[int]:
    positions = [source.find(n) for n in needles]
    assert all(p >= 0 for p in positions), f"not found in the source: {needles}"
    return positions


def test_nnunet_v2_normalises_before_resampling_as_its_preprocessor():
    pytest.importorskip("nnunetv2")
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor

    crop, normalise, resample = _first(
        inspect.getsource(DefaultPreprocessor.run_case_npy),
        "crop_to_nonzero(",
        "self._normalize(",
        "resampling_fn_data(",
    )
    assert crop < normalise < resample
    recipe = get_recipe("nnunet-v2", spacing=(1.0, 1.0, 1.0), intensity_stats=((0.0, 1.0, 0.0, 1.0),))
    assert _order(recipe) == ["crop", "normalise", "resample"]


def test_amos_paper_resamples_before_normalising_as_nnunet_v1():
    pytest.importorskip("nnunet")
    from nnunet.preprocessing.preprocessing import GenericPreprocessor

    source = inspect.getsource(GenericPreprocessor.resample_and_normalize)
    resample, normalise = _first(source, "resample_patient(", "for c in range(len(data)):")
    assert resample < normalise and "crop" in inspect.getsource(GenericPreprocessor.preprocess_test_case).lower()
    for task in ("amos-ct", "amos-ctmr", "amos-mr"):
        recipe = get_recipe("amos-paper", task=task, spacing=(1.0, 1.0, 1.0), intensity_stats=((0.0, 1.0, 0.0, 1.0),))
        assert _order(recipe) == ["crop", "resample", "normalise"]


def test_btcv_resamples_normalises_then_crops_and_old_recipes_keep_their_order():
    assert _order(get_recipe("btcv")) == ["resample", "normalise", "crop"]
    # a recipe stored before normalization_order existed keeps the order it was trained with
    old = get_recipe("nnunet-v2", spacing=(1.0, 1.0, 1.0), intensity_stats=((0.0, 1.0, 0.0, 1.0),))
    assert old.normalization_order == "before-resampling"
    legacy = type(old).from_dict({k: v for k, v in old.to_dict().items() if k != "normalization_order"})
    assert _order(legacy) == ["crop", "normalise", "resample"]
    with pytest.raises(ValueError, match="normalises after resampling"):
        get_recipe("btcv", normalization_order="before-resampling")


def test_the_order_changes_the_voxels():
    """Resampling a clipped image and clipping a resampled one differ at the clip: the order is not cosmetic."""
    from dataclasses import replace

    from monai.data import MetaTensor
    from monai.transforms import Compose

    from amos_zoo.data.transforms import deterministic_transforms

    recipe = get_recipe("amos-paper", spacing=(1.5, 1.5, 1.5), intensity_stats=((-100.0, 300.0, 50.0, 100.0),))
    rng = np.random.default_rng(0)
    image = MetaTensor(torch.as_tensor(rng.uniform(-1000, 1000, (1, 12, 12, 8)), dtype=torch.float32))
    outputs = {}
    for order in ("before-resampling", "after-resampling"):
        chain = Compose(deterministic_transforms(replace(recipe, normalization_order=order), ("image",), load=False))
        outputs[order] = chain({"image": image.clone(), "modality": "CT"})["image"]
    after = outputs["after-resampling"]
    assert after.shape == outputs["before-resampling"].shape
    assert float(after.max()) <= (300.0 - 50.0) / 100.0 + 1e-6  # normalised last: the clip bounds hold exactly
    assert not torch.allclose(after, outputs["before-resampling"])


def test_amos_paper_mr_task_is_the_forks_mr_task():
    """JiYuanFeng/AMOS@90d506e nnUNetTrainer.py: img_size (48, 160, 224) (z, y, x) for 'mr'; splits/dataset_mr.json:
    modality MRI (nnU-Net v1's per-case z-score)."""
    mr = get_recipe("amos-paper", task="amos-mr")
    ct = get_recipe("amos-paper", task="amos-ct")
    assert mr.patch_size == (224, 160, 48) and mr.mri_normalization == "zscore"
    assert ct.patch_size == (160, 160, 64) and ct.mri_normalization == "ct"
    assert get_recipe("amos-paper", task="amos-ctmr").mri_normalization == "ct"  # Task 2's quirk kept


def test_btcv_blends_as_each_networks_test_script():
    """research-contributions@21ed8e5: SwinUNETR/BTCV/test.py passes mode='gaussian'; UNETR/BTCV/test.py uses
    MONAI's default ('constant'); both sw_batch_size 4 and overlap 0.5."""
    swin, unetr = protocol_config("btcv", "swin_unetr")["model"], protocol_config("btcv", "unetr")["model"]
    assert (swin["sw_mode"], swin["sw_batch_size"], swin["sw_overlap"]) == ("gaussian", 4, 0.5)
    assert (unetr["sw_mode"], unetr["sw_batch_size"], unetr["sw_overlap"]) == ("constant", 4, 0.5)
    assert "UNETR/BTCV/test.py" in get_protocol("btcv").setting("model.sw_mode@unetr").source


_TEST_FILE = re.compile(r"tests/(test_\w+\.py)")


@pytest.mark.parametrize("protocol", [p.name for p in list_protocols() if p.kind == "published"])
def test_equals_only_where_a_test_shows_it(protocol):
    """A published card's source says "equals" / "equal" only beside the test that shows it (an existing file under
    tests/), and "approximates" always says what differs."""
    for s in get_protocol(protocol).settings:
        text = s.source
        if re.search(r"\bequals?\b", text):
            named = _TEST_FILE.findall(text)
            assert named, f"{protocol} {s.key}: says 'equals' without naming the test: {text}"
            for name in named:
                assert (REPO / "tests" / name).is_file(), f"{protocol} {s.key}: names a missing test {name}"
        for match in re.finditer(r"\bapproximates\b(.{0,3})", text):
            assert match.group(1).startswith(":"), f"{protocol} {s.key}: 'approximates' needs ': what differs'"


def _source_loss(protocol: str):
    """The source's own DC_and_CE_loss with the card's settings (batch Dice, smooth 1e-5, no background)."""
    dice = {"batch_dice": True, "smooth": 1e-5, "do_bg": False}
    if protocol == "nnunet-v2":
        pytest.importorskip("nnunetv2")
        from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
        from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

        return DC_and_CE_loss({**dice, "ddp": False}, {}, 1, 1, None, MemoryEfficientSoftDiceLoss)
    pytest.importorskip("nnunet")
    from nnunet.training.loss_functions.dice_loss import DC_and_CE_loss

    return DC_and_CE_loss(dice, {})  # the AMOS fork's nnUNetTrainer: DC_and_CE_loss(soft_dice_kwargs, {})


@pytest.mark.parametrize("protocol", ["nnunet-v2", "amos-paper"])
def test_loss_equals_the_sources_dc_and_ce_loss_up_to_its_constant(protocol):
    """The card's MONAI DiceCELoss arguments against nnU-Net's own DC_and_CE_loss: nnU-Net returns CE - Dice where
    MONAI returns CE + 1 - Dice, so values differ by 1 and gradients are equal."""
    from monai.losses import DiceCELoss

    ours = DiceCELoss(to_onehot_y=True, softmax=True, **get_protocol(protocol).values("model")["loss_kwargs"])
    theirs = _source_loss(protocol)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        logits = torch.randn(2, 4, 6, 5, 4, generator=generator, requires_grad=True)
        target = torch.randint(0, 4, (2, 1, 6, 5, 4), generator=generator)
        target[1][target[1] == 3] = 0  # a class absent from one case
        ours_value, theirs_value = ours(logits, target), theirs(logits, target)
        ours_grad = torch.autograd.grad(ours_value, logits)[0]
        theirs_grad = torch.autograd.grad(theirs_value, logits)[0]
        assert float(ours_value.detach()) == pytest.approx(float(theirs_value.detach()) + 1.0, abs=1e-5)
        torch.testing.assert_close(ours_grad, theirs_grad, rtol=1e-4, atol=1e-7)


def test_nnunet_v2_clips_gradients_as_its_trainer():
    pytest.importorskip("nnunetv2")
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    assert "clip_grad_norm_(self.network.parameters(), 12)" in inspect.getsource(nnUNetTrainer.train_step)
    trainer = protocol_config("nnunet-v2", "dynunet")["trainer"]
    assert (trainer["gradient_clip_val"], trainer["gradient_clip_algorithm"]) == (12, "norm")


def test_readme_published_table_says_like_for_like_or_closest():
    """Each published number in the README says how it compares: like-for-like only where amos-zoo runs the same
    protocol and split (the nnU-Net Revisited row), else closest or context only."""
    lines = (REPO / "README.md").read_text().splitlines()
    start = lines.index("| published | task | mean Dice | protocol, split | comparable as | command |")
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    rows = [ln.split(" | ") for ln in lines[start + 2 : end]]
    labels = {cells[0].lstrip("| "): cells[4] for cells in rows}
    assert all(label.startswith(("like-for-like", "closest", "context only")) for label in labels.values()), labels
    like = [name for name, label in labels.items() if label.startswith("like-for-like")]
    assert like == ["nnU-Net 3d_fullres (nnU-Net Revisited, MICCAI 2024, AMOS22 table)"]
    row = next(cells for cells in rows if cells[0].lstrip("| ") == like[0])
    assert "--protocol nnunet-v2" in row[5] and "--folds [0,1,2,3,4]" in row[5]
    assert get_protocol("nnunet-v2").split == "cross-validation" and get_protocol("nnunet-v2").evaluation() == {
        "checkpoint": "final",
        "empty_policy": "nnunet",
    }
