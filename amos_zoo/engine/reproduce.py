"""``amos-zoo reproduce``: one benchmark-table row = fit on the official train split, predict the official
validation split in original geometry, evaluate with the metric suite, and record the row.

The row (``row.json`` in the run folder) holds the resolved config, git commit, a hash of the dataset
index and files, the metrics (per organ, per modality, overall), wall time, device and peak memory.
``--smoke`` runs the same path on the synthetic dataset with small models, in minutes on CPU.
"""

from __future__ import annotations

import hashlib
import json
import platform
import resource
import subprocess
import time
from pathlib import Path

import torch

__all__ = ["TASK_CONFIG_DIRS", "MODELS", "SMOKE_OVERRIDES", "run_reproduce", "dataset_hash"]

TASK_CONFIG_DIRS = {"amos-ct": "amos_ct", "amos-ctmr": "amos_ctmr"}
MODELS = ("unet", "unetr", "swin_unetr", "vnet", "dynunet")

#: Smallest settings that keep each model's architecture and constraints, for CPU smoke runs.
SMOKE_OVERRIDES: dict[str, list[str]] = {
    "unet": [
        "--model.arch_kwargs",
        '{"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1}',
        "--data.patch_size",
        "[32, 32, 16]",
    ],
    "unetr": [
        "--model.arch_kwargs",
        '{"img_size": [32, 32, 32], "feature_size": 8, "hidden_size": 48, '
        '"mlp_dim": 96, "num_heads": 4, "proj_type": "perceptron"}',
        "--data.patch_size",
        "[32, 32, 32]",
    ],
    "swin_unetr": ["--model.arch_kwargs", '{"feature_size": 12}', "--data.patch_size", "[64, 64, 32]"],
    "vnet": ["--model.arch_kwargs", "{}", "--data.patch_size", "[32, 32, 32]"],
    "dynunet": [
        "--model.arch_kwargs",
        '{"filters": [8, 16, 32, 32], "kernel_size": [[3, 3, 3], [3, 3, 3], '
        '[3, 3, 3], [3, 3, 3]], "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 1]]}',
        "--data.patch_size",
        "[32, 32, 16]",
    ],
}


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=_repo_root(), capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def dataset_hash(root: str | Path) -> str:
    """SHA-256 over dataset.json and the names and sizes of the files it lists (fast, content-sensitive index)."""
    root = Path(root)
    h = hashlib.sha256((root / "dataset.json").read_bytes())
    for path in sorted(p for p in root.rglob("*.nii*") if ".amos_zoo_cache" not in p.parts):
        h.update(f"{path.relative_to(root)}:{path.stat().st_size}".encode())
    return h.hexdigest()


def _peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_reproduce(
    task: str,
    model: str,
    data: str | Path | None,
    out: str | Path = "runs",
    smoke: bool = False,
    max_steps: int | None = None,
    extra_args: list[str] | None = None,
    progress: bool = True,
) -> dict:
    """Fit, predict the validation split, evaluate, and write ``<out>/<task>/<model>/row.json``.

    Args:
        task: ``amos-ct`` (Task 1) or ``amos-ctmr`` (Task 2).
        model: one of :data:`MODELS`.
        data: AMOS dataset folder; with ``smoke`` and None, a synthetic dataset is written under ``out``.
        out: runs folder.
        smoke: small models, coarse recipe, few steps: the same code path in minutes on CPU.
        max_steps: override the config's iteration budget.
        extra_args: further LightningCLI overrides.
        progress: progress bars.
    """
    from amos_zoo.cli.lightning import run_lightning_cli
    from amos_zoo.data.index import load_index, select_task_cases
    from amos_zoo.engine.predict import PredictJob, load_predictor, predict_many
    from amos_zoo.io import write_json
    from amos_zoo.metrics.evaluate import evaluate_folders

    if task not in TASK_CONFIG_DIRS:
        raise ValueError(f"task must be one of {', '.join(TASK_CONFIG_DIRS)}, got {task!r}")
    if model not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
    run_dir = Path(out) / task / model
    run_dir.mkdir(parents=True, exist_ok=True)
    if data is None:
        if not smoke:
            raise ValueError(
                "--data is required (the AMOS 2022 folder holding dataset.json); use --smoke to run "
                "on the synthetic dataset"
            )
        from amos_zoo.data.synth import write_synthetic_dataset

        data = Path(out) / "smoke_data"
        if not (data / "dataset.json").is_file():
            write_synthetic_dataset(data, n_train_ct=3, n_train_mr=1, n_val_ct=2, n_val_mr=1, n_test=0)
    data = Path(data)
    config = _repo_root() / "configs" / TASK_CONFIG_DIRS[task] / f"{model}.yaml"
    args = [
        "fit",
        "--config",
        str(config),
        "--data.root",
        str(data),
        "--trainer.default_root_dir",
        str(run_dir),
        "--trainer.logger",
        "pytorch_lightning.loggers.CSVLogger",
        "--trainer.logger.save_dir",
        str(run_dir),
        "--trainer.logger.name",
        "csv",
        "--trainer.enable_progress_bar",
        str(progress).lower(),
    ]
    if smoke:
        args += [
            "--data.recipe",
            "tiny",
            "--data.num_workers",
            "0",
            "--data.batch_size",
            "1",
            "--data.cache_dir",
            str(Path(out) / "smoke_cache"),
            "--trainer.precision",
            "32-true",
            "--trainer.accelerator",
            "cpu",
            "--trainer.devices",
            "1",
            "--trainer.val_check_interval",
            str(max_steps or 4),
            "--trainer.num_sanity_val_steps",
            "0",
            *SMOKE_OVERRIDES[model],
        ]
        max_steps = max_steps or 4
    if max_steps:
        args += ["--trainer.max_steps", str(max_steps)]
    args += list(extra_args or [])

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.time()
    cli = run_lightning_cli(args)
    fit_seconds = time.time() - start
    ckpt_cb = cli.trainer.checkpoint_callback
    ckpt = (ckpt_cb.best_model_path or ckpt_cb.last_model_path) if ckpt_cb else ""
    if not ckpt:
        ckpt = str(run_dir / "final.ckpt")
        cli.trainer.save_checkpoint(ckpt)

    index = load_index(data)
    cases = select_task_cases(index, "validation", task)
    predictor = load_predictor(ckpt, device="cuda" if torch.cuda.is_available() else "cpu")
    jobs = [
        PredictJob(c.case_id, [str(p) for p in c.images] if len(c.images) > 1 else str(c.images[0]), c.modality)
        for c in cases
    ]
    pred_dir = run_dir / "predictions"
    report = predict_many(predictor, jobs, pred_dir, progress=progress)
    if report["failed"]:
        raise RuntimeError(f"prediction failed for {report['failed']}")
    gt_dir = run_dir / "reference"
    gt_dir.mkdir(exist_ok=True)
    for c in cases:
        link = gt_dir / Path(c.label).name
        if not link.exists():
            link.symlink_to(Path(c.label).resolve())
    summary = evaluate_folders(
        pred_dir,
        gt_dir,
        run_dir / "evaluation",
        labels=index.labels,
        metrics=("dice", "nsd"),
        tolerance="uniform-2mm",
        workers=1,
        progress=progress,
        case_ids=[c.case_id for c in cases],
    )
    row = {
        "task": task,
        "model": model,
        "protocol": "official split: train on 'training', evaluate on 'validation'",
        "smoke": smoke,
        "config": str(config.relative_to(_repo_root())),
        "overrides": args[4:],
        "resolved_config": _read_resolved_config(run_dir),
        "commit": _git_commit(),
        "data_root": str(data),
        "data_hash": dataset_hash(data),
        "checkpoint": str(ckpt),
        "steps": int(cli.trainer.global_step),
        "fit_seconds": fit_seconds,
        "wall_time_s": time.time() - start,
        "device": torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"cpu ({platform.processor() or 'x86_64'})",
        "peak_memory_mb": _peak_memory_mb(),
        "metrics": {
            "overall": summary["all"]["overall"],
            "per_modality": {k: v["overall"] for k, v in summary["per_modality"].items()},
            "per_organ_dice": {k: v["dice"] for k, v in summary["all"]["per_organ"].items()},
            "cases": summary["all"]["cases"],
            "nsd_tolerance": summary["tolerance"],
        },
    }
    write_json(run_dir / "row.json", row)
    return row


def _read_resolved_config(run_dir: Path) -> str | None:
    found = sorted(run_dir.rglob("config.yaml"), key=lambda p: p.stat().st_mtime)
    return found[-1].read_text() if found else None


def load_rows(runs: str | Path) -> list[dict]:
    """Every ``row.json`` below a runs folder."""
    return [json.loads(p.read_text()) for p in sorted(Path(runs).rglob("row.json"))]
