"""``amos-zoo reproduce``: one benchmark-table row = one protocol, one model, one AMOS or Decathlon task.

Each run is the experiment path (:func:`~amos_zoo.experiments.run.run_experiment`) with ``configs/base/gpu.yaml``
(``cpu.yaml`` for ``--smoke``) and ``--protocol PROTOCOL/MODEL``. With ``folds``, each fold is its own run
(``<out>/<task>/<protocol>/<model>/fold_<k>``) and the row of the whole cross-validation evaluates the union of the
folds' validation predictions, as nnU-Net summarises a cross-validation. ``--smoke`` runs the same path on the
synthetic dataset with a coarse grid and small networks (the protocol's normalisation, sampling, augmentation,
loss and optimiser kept), in minutes on a CPU.

A Decathlon task (``Task01_BrainTumour`` ... ``Task10_Colon``) has no public test labels and no validation list: its
row is always nnU-Net's 5-fold cross-validation over the task's training cases (2 folds with ``--smoke``), under any
protocol, with the task's patch (and, for a fixed-spacing protocol, spacing) from ``configs/msd/<task>.yaml``; a
planning protocol plans the task from its own fingerprint (per-channel z-score for MRI, CTNormalization with the
task's foreground statistics for CT). Predictions are scored on the task's labels, BrainTumour's on the BraTS regions
(:mod:`amos_zoo.metrics.regions`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from amos_zoo.data.msd import MSD_TASKS, check_task_dataset, task_fit_args, write_msd_dataset

__all__ = ["AMOS_TASKS", "TASKS", "SMOKE_SETTINGS", "default_protocol", "run_reproduce", "smoke_args"]

AMOS_TASKS = ("amos-ct", "amos-ctmr", "amos-mr")
TASKS = (*AMOS_TASKS, *MSD_TASKS)

#: per model: the smallest network that keeps the architecture, and a patch it accepts (smoke runs)
SMOKE_SETTINGS: dict[str, dict[str, Any]] = {
    "unet": {"arch_kwargs": {"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1}, "patch": [32, 32, 16]},
    "unetr": {
        "arch_kwargs": {"feature_size": 8, "hidden_size": 48, "mlp_dim": 96, "num_heads": 4, "proj_type": "perceptron"},
        "patch": [32, 32, 32],
    },
    # 64 x 32 x 32: the smallest patch Swin-UNETR trains on (sides divisible by 32, a bottleneck of 2 voxels for its
    # instance norm); depths kept at 2, so every stage has its shifted-window block
    "swin_unetr": {"arch_kwargs": {"feature_size": 12}, "patch": [64, 32, 32]},
    # MONAI's VNet has no width setting: the smallest patch it trains on keeps its smoke runs short (four halvings,
    # and a bottleneck of 2 voxels for its batch norm at a batch of 1)
    "vnet": {"arch_kwargs": {}, "patch": [32, 16, 16]},
    "dynunet": {
        "arch_kwargs": {
            "filters": [8, 16, 32, 32],
            "kernel_size": [[3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
            "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 1]],
        },
        "patch": [32, 32, 16],
    },
    "nnunet": {
        "arch_kwargs": {
            "n_stages": 3,
            "features_per_stage": [8, 16, 32],
            "kernel_sizes": [[3, 3, 3], [3, 3, 3], [3, 3, 3]],
            "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 1]],
            "n_conv_per_stage": [2, 2, 2],
            "n_conv_per_stage_decoder": [2, 2],
        },
        "patch": [32, 32, 16],
    },
}


def default_protocol(model: str) -> str:
    """The first published protocol whose source trained ``model`` (``btcv`` for a model no source trained)."""
    from amos_zoo.protocols import list_protocols

    for p in list_protocols():
        if p.kind == "published" and model in p.models:
            return p.name
    return "btcv"


def _smoke_data(out: Path, task: str) -> Path:
    from amos_zoo.data.synth import write_synthetic_dataset

    if task in MSD_TASKS:  # 4 training cases: 2 folds of 2
        data = out / "smoke_data" / task
        if not (data / "dataset.json").is_file():
            write_msd_dataset(data, task, n_train=4, n_test=0)
        return data
    data = out / "smoke_data"
    if not (data / "dataset.json").is_file():
        write_synthetic_dataset(data, n_train_ct=3, n_train_mr=1, n_val_ct=2, n_val_mr=1, n_test=0)
    return data


def _smoke_network(model: str, protocol: str) -> dict[str, Any]:
    """The protocol's network arguments for ``model`` with the smoke sizes: deep supervision and activations stay,
    the number of deep-supervision heads fits the smaller network."""
    from amos_zoo.protocols import get_protocol

    kwargs = {**get_protocol(protocol).network(model), **SMOKE_SETTINGS[model]["arch_kwargs"]}
    if kwargs.get("deep_supervision") and "strides" in kwargs and model == "dynunet":
        kwargs["deep_supr_num"] = min(int(kwargs.get("deep_supr_num", 1)), len(kwargs["strides"]) - 2)
    return kwargs


def smoke_args(model: str, protocol: str, out: Path, steps: int, folds: bool) -> list[str]:
    """``fit`` options that shrink a protocol's run to seconds on a CPU: coarse grid, small network and patch,
    ``steps`` steps, cache under ``out``; normalisation, sampling, augmentation, loss and optimiser kept."""
    setting = SMOKE_SETTINGS[model]
    args = [
        "--data.spacing",
        "[7.0, 7.0, 10.0]",
        "--data.patch_size",
        json.dumps(setting["patch"]),
        "--data.num_samples",
        "1",
        "--data.batch_size",
        "1",
        "--data.num_workers",
        "0",
        "--data.cache_dir",
        str(out / "smoke_cache"),
        "--model.arch_kwargs",
        json.dumps(_smoke_network(model, protocol)),
        "--model.epoch_steps",
        "2",
        "--data.epoch_iterations",
        "null",
        "--trainer.val_check_interval",
        str(steps),
        "--trainer.max_steps",
        str(steps),
        "--model.warmup_steps",
        "1",
        "--trainer.precision",
        "32-true",
    ]
    if folds:
        args += ["--data.num_folds", "2"]  # 7 (AMOS) or 4 (Decathlon) synthetic cases: both sides non-empty
    return args


def run_reproduce(
    task: str,
    model: str,
    data: str | Path | None,
    *,
    protocol: str | None = None,
    out: str | Path = "runs",
    smoke: bool = False,
    max_steps: int | None = None,
    folds: Sequence[int] | None = None,
    extra_args: Sequence[str] = (),
    progress: bool = True,
    checkpoint: str | None = None,
) -> dict | None:
    """Fit, predict the validation cases, evaluate, and write ``<out>/<task>/<protocol>/<model>/row.json``.

    Args:
        task: ``amos-ct`` (AMOS Task 1), ``amos-ctmr`` (AMOS Task 2), ``amos-mr`` (the MR cases of Task 2 alone) or a
            Decathlon task (``Task09_Spleen``...).
        model: a registered 3D model (``unet``, ``unetr``, ``swin_unetr``, ``vnet``, ``dynunet``).
        data: the task's dataset folder (holding dataset.json); with ``smoke`` and None, a synthetic dataset in the
            task's layout is written under ``out``.
        protocol: protocol card (default: :func:`default_protocol`).
        out: runs folder.
        smoke: small networks, a coarse grid and 4 steps on the synthetic dataset: the same code path on a CPU.
        max_steps: override the protocol's iteration budget.
        folds: cross-validation folds to run (nnU-Net's split over every labelled case); None: the protocol's split
            (its five folds for a cross-validation protocol or a Decathlon task, two with ``smoke``; else the official
            split).
        extra_args: further ``amos-zoo fit`` options.
        progress: progress bars.
        checkpoint: ``final`` (the weights at the end of each fold's training, as nnU-Net reports) or ``best`` (the
            best validation checkpoint, chosen on the cases the row scores); default: the protocol's
            ``eval.checkpoint``. The row names the choice (``checkpoint_choice``).

    Returns:
        The row (the cross-validation's row with ``folds``); None on DDP ranks other than 0.

    Long because its docstring is the command's --help text and the folds are run in order here.
    """
    from amos_zoo.console import quiet_third_party
    from amos_zoo.experiments.run import config_file
    from amos_zoo.protocols import get_protocol

    quiet_third_party()  # a job: results and progress only (AMOS_ZOO_VERBOSE=1 shows all)
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if model not in SMOKE_SETTINGS:
        raise ValueError(f"model must be one of {', '.join(SMOKE_SETTINGS)}, got {model!r}")
    protocol = protocol or default_protocol(model)
    decathlon = task in MSD_TASKS
    evaluation = get_protocol(protocol).evaluation()
    scoring = {"checkpoint": checkpoint or evaluation["checkpoint"], "empty_policy": evaluation["empty_policy"]}
    if folds is None and (decathlon or get_protocol(protocol).split == "cross-validation"):
        folds = [0, 1] if smoke else [0, 1, 2, 3, 4]  # the protocol's (a Decathlon task's) evaluation is its CV
    out = Path(out)
    if data is None:
        if not smoke:
            what = f"the MSD {task} folder" if decathlon else "the AMOS 2022 folder"
            raise ValueError(f"--data is required ({what} holding dataset.json); --smoke uses synthetic data")
        data = _smoke_data(out, task)
    regions = None
    if decathlon:
        from amos_zoo.metrics.regions import task_regions

        regions = task_regions(task, check_task_dataset(data, task).labels)
    run_root = out / task / protocol / model
    steps = max_steps or 4
    common = [
        "--config",
        str(config_file("base/cpu.yaml" if smoke else "base/gpu.yaml")),
        "--protocol",
        f"{protocol}/{model}",
        "--data.root",
        str(data),
    ]
    if decathlon:
        common += task_fit_args(task, protocol)
    else:
        common += ["--data.task", task]
    if smoke:
        common += smoke_args(model, protocol, out, steps, folds is not None)
    elif max_steps:
        common += ["--trainer.max_steps", str(max_steps)]
    common += list(extra_args)
    info: dict[str, Any] = {"smoke": smoke, "requested_protocol": protocol}
    if regions is not None:
        info["benchmark"] = "decathlon"
        info["scored_on"] = {r.name: list(r.labels) for r in regions}
    if folds is None:
        result = _resumable_run(common, run_root, progress, info, regions=regions, **scoring)
        return None if result is None else result.row
    results = []
    for k in folds:  # under DDP every process runs every fold (each fold's fit is a collective of all of them)
        fold_args, fold_info = [*common, "--data.fold", str(k)], {**info, "fold": k}
        result = _resumable_run(fold_args, run_root / f"fold_{k}", progress, fold_info, regions=regions, **scoring)
        if result is not None:
            results.append(result)
    return _crossval_row(results, run_root, progress, regions, scoring["empty_policy"]) if results else None


def _resumable_run(fit_args: list[str], run_dir: Path, progress: bool, info: dict, **scoring: Any):
    """A run that a rerun of the same command does not repeat: a finished run with the same arguments and scoring
    (checkpoint choice, empty-organ rule, regions) is reused, an interrupted one resumes from its furthest checkpoint
    of the same arguments (pre-emption, SLURM requeue, last). Under DDP every process decides alike: the files are
    read before the processes connect, and written after."""
    from amos_zoo.experiments.run import finished_experiment, resume_checkpoint, run_config, run_experiment

    info = {**info, "checkpoint_requested": scoring.get("checkpoint", "best")}  # "best" falls back to the final one
    done = finished_experiment(run_dir, fit_args)
    if done is not None and _scored_alike(done.row, scoring):
        print(f"{run_dir}: finished with the same configuration; reusing its row", flush=True)
        return done
    resume = resume_checkpoint(run_dir, fit_args)
    extra = ["--ckpt_path", str(resume)] if resume is not None else []
    if resume is not None:
        print(f"{run_dir}: resuming from {resume}", flush=True)
    with run_config(fit_args):
        return run_experiment([*fit_args, *extra], run_dir, progress=progress, info=info, hash_args=fit_args, **scoring)


def _scored_alike(row: dict, scoring: dict) -> bool:
    """Whether a finished run's row was scored as this command asks (checkpoint, empty-organ rule, regions)."""
    regions = scoring.get("regions")
    wanted_regions = None if regions is None else {r.name: list(r.labels) for r in regions}
    return (
        row.get("checkpoint_requested") == scoring.get("checkpoint", "best")
        and row.get("empty_policy") == scoring.get("empty_policy", "score")
        and row.get("scored_on") == wanted_regions
    )


def _crossval_row(
    results: list, run_root: Path, progress: bool, regions: Sequence | None = None, empty_policy: str = "score"
) -> dict:
    """Evaluate the union of the folds' validation predictions (as nnU-Net summarises a cross-validation)."""
    from amos_zoo.data.index import load_index
    from amos_zoo.experiments.run import row_metrics
    from amos_zoo.io import write_json
    from amos_zoo.metrics.evaluate import evaluate_folders

    merged_pred, merged_gt = run_root / "crossval" / "predictions", run_root / "crossval" / "reference"
    for folder in (merged_pred, merged_gt):
        folder.mkdir(parents=True, exist_ok=True)
    case_ids = []
    for r in results:
        for case in r.val_cases:
            cid = case["case_id"]
            case_ids.append(cid)
            shutil.copyfile(r.run_dir / "predictions" / f"{cid}.nii.gz", merged_pred / f"{cid}.nii.gz")
            link = merged_gt / f"{cid}.nii.gz"
            if not link.exists():
                link.symlink_to(Path(case["label"]).resolve())
    first = results[0].row
    summary = evaluate_folders(
        merged_pred,
        merged_gt,
        run_root / "crossval" / "evaluation",
        labels=load_index(first["data_root"]).labels,
        metrics=("dice", "nsd"),
        empty_policy=empty_policy,
        workers=1,
        progress=progress,
        case_ids=case_ids,
        regions=regions,
    )
    folds = [r.row["fold"] for r in results]
    row = {
        **{k: v for k, v in first.items() if k not in ("fold", "metrics", "checkpoint", "steps", "fit_seconds")},
        "split": f"folds {folds} of a {first['num_folds']}-fold cross-validation over every labelled {first['task']} "
        "case (nnU-Net's split); metrics over the union of the folds' validation cases",
        "split_kind": "cross-validation",
        "folds": folds,
        "fold_rows": [str(r.run_dir / "row.json") for r in results],
        "fold_dice": [r.row["metrics"]["overall"]["dice"] for r in results],
        "fold_checkpoints": [r.row["checkpoint"] for r in results],
        "steps": [r.row["steps"] for r in results],
        "wall_time_s": sum(r.row["wall_time_s"] for r in results),
        "metrics": row_metrics(summary),
    }
    write_json(run_root / "row.json", row)
    return row
