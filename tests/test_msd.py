"""All ten Decathlon tasks through the same data module, Lightning module, predictor and metric suite:
synthetic MSD-layout datasets with each task's channels (4D NIfTI) and labels; fit, predict, evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import pytorch_lightning as pl
import yaml
from conftest import QUIET_CLI_TRAINER, cpu_trainer, small_module

from amos_zoo.cli.main import main
from amos_zoo.data.datamodule import SegmentationDataModule
from amos_zoo.data.msd import MSD_TASKS
from amos_zoo.infer.pipeline import collect_inputs, load_predictor, predict_many
from amos_zoo.metrics.evaluate import evaluate_folders


@pytest.mark.parametrize("task", list(MSD_TASKS))
def test_fit_predict_evaluate_on_every_task_layout(task, tmp_path):
    spec = MSD_TASKS[task]
    root = tmp_path / task
    assert (
        main(["synth", "--layout", "msd", "--task", task, "--out", str(root), "--n_train_ct", "3", "--n_test", "1"])
        == 0
    )
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["modality"] == spec.modality and meta["labels"] == spec.labels
    first = nib.load(root / meta["training"][0]["image"])
    assert first.ndim == (4 if spec.num_channels > 1 else 3) and (
        first.shape[-1] == spec.num_channels or first.ndim == 3
    )
    label = np.asarray(nib.load(root / meta["training"][0]["label"]).dataobj)
    assert set(np.unique(label)) <= {int(k) for k in spec.labels} and label.max() > 0

    pl.seed_everything(0)
    dm = SegmentationDataModule(str(root), task="all", recipe="tiny", num_workers=0, cache_dir=str(tmp_path / "c"))
    assert dm.num_channels == spec.num_channels and dm.num_classes == len(spec.labels)
    expected = "CT" if spec.is_ct else "MRI"
    assert {c.modality for c in dm.index.split("training")} == {expected}  # per-task CT or MRI normalisation
    model = small_module(dm, 4)
    trainer = cpu_trainer(4, tmp_path)
    trainer.fit(model, dm)
    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)

    report = predict_many(load_predictor(ckpt), collect_inputs(root / "dataset.json", split="training"), tmp_path / "p")
    assert not report["failed"] and len(report["done"]) == 3
    pred = nib.load(tmp_path / "p" / meta["training"][0]["image"].split("/")[-1])
    assert pred.shape == first.shape[:3] and np.allclose(pred.affine, first.affine)
    summary = evaluate_folders(
        tmp_path / "p", root / "labelsTr", tmp_path / "eval", labels=dm.index.labels, metrics=("dice", "nsd"), workers=1
    )
    organs = {dm.index.labels.display_name(i) for i in dm.index.labels.foreground_ids}
    assert summary["all"]["cases"] == 3 and set(summary["all"]["per_organ"]) == organs
    # independent of the metric suite: MONAI's DiceMetric on the same files (each case on its own grid)
    import torch
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot

    monai_dice = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
    n = len(spec.labels)
    for case in meta["training"]:
        name = case["image"].split("/")[-1]
        pred = torch.as_tensor(np.asarray(nib.load(tmp_path / "p" / name).dataobj).astype(np.int64))[None, None]
        ref = torch.as_tensor(np.asarray(nib.load(root / case["label"]).dataobj).astype(np.int64))[None, None]
        monai_dice(one_hot(pred, n), one_hot(ref, n))
    per_organ = torch.nanmean(monai_dice.aggregate(), 0)
    ours = [summary["all"]["per_organ"][dm.index.labels.display_name(i)]["dice"] for i in range(1, n)]
    assert np.allclose([np.nan if v is None else v for v in ours], per_organ.numpy(), atol=1e-5, equal_nan=True)


REPO = Path(__file__).resolve().parents[1]


def test_every_model_and_task_config_composes(capsys):
    """Each Decathlon task file composes with the BTCV protocol of every 3D model; the task's patch wins."""
    tasks = sorted((REPO / "configs" / "msd").glob("*.yaml"))
    assert [t.stem for t in tasks] == list(MSD_TASKS)
    for model in ("unet", "unetr", "swin_unetr", "vnet"):
        for task in tasks:
            with pytest.raises(SystemExit) as exit_:
                main(
                    [
                        "fit",
                        "--config",
                        str(REPO / "configs/base/gpu.yaml"),
                        "--protocol",
                        f"btcv/{model}",
                        "--config",
                        str(task),
                        "--data.root",
                        "/x",
                        "--print_config",
                    ]
                )
            assert exit_.value.code in (0, None), (model, task)
            printed = yaml.safe_load(capsys.readouterr().out)
            patch = printed["data"]["patch_size"]
            assert patch == yaml.safe_load(task.read_text())["data"]["patch_size"]  # the task's, after the protocol's
            assert all(side % 32 == 0 for side in patch), task  # every model accepts it
            assert printed["model"]["arch"] == model and printed["data"]["task"] == "all"


def test_composed_configs_train_unetr_on_a_two_channel_task(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "prostate"
    main(["synth", "--layout", "msd", "--task", "Task05_Prostate", "--out", str(root), "--n_train_ct", "3"])
    args = [
        "fit",
        "--config",
        str(REPO / "configs/base/cpu.yaml"),
        "--protocol",
        "btcv/unetr",
        "--config",
        str(REPO / "configs/msd/Task05_Prostate.yaml"),
        "--data.root",
        str(root),
        "--data.recipe",
        "tiny",
        "--data.spacing",
        "[7.0, 7.0, 10.0]",
        "--data.patch_size",
        "[32, 32, 32]",
        "--data.num_workers",
        "0",
        "--model.arch_kwargs",
        '{"feature_size": 8, "hidden_size": 48, "mlp_dim": 96, "num_heads": 4, "proj_type": "perceptron"}',
        "--trainer.max_steps",
        "2",
        "--trainer.val_check_interval",
        "2",
        *QUIET_CLI_TRAINER,
    ]
    from amos_zoo.train.cli import run_lightning_cli

    cli = run_lightning_cli(args)  # UNETR's img_size follows the patch; 2 channels in, 3 classes out (dataset.json)
    meta = json.loads((root / "dataset.json").read_text())
    assert len(meta["modality"]) == 2 and len(meta["labels"]) == 3
    assert cli.datamodule.num_channels == 2 and cli.datamodule.num_classes == 3
    net = cli.model.net.eval()
    assert cli.model.card.in_channels == 2 and cli.model.card.num_classes == 3 and cli.model.card.arch == "unetr"
    assert net.vit.patch_embedding.n_patches == 8  # img_size followed the 32^3 patch: (32 / 16)^3 patches
    import torch

    with torch.no_grad():
        assert net(torch.zeros(1, 2, 32, 32, 32)).shape == (1, 3, 32, 32, 32)
    logged = cli.trainer.callback_metrics
    organ_keys = {k for k in logged if k.startswith("val/dice_")}
    assert len(organ_keys) == 2 and "val/mean_dice" in logged and cli.trainer.global_step == 2
