"""One experiment path: fit (LightningCLI) -> predict the validation cases on their own grids -> evaluate with the
metric suite -> a row (``row.json``). ``amos-zoo quickstart`` and ``amos-zoo reproduce`` are both this function
with different configs.

Under DDP, Lightning starts one process per device; every process fits (and saves any checkpoint) together, then
only global rank 0 predicts, evaluates and writes the row (the others return None after fitting). A fit stopped by
a signal (:class:`~amos_zoo.train.callbacks.PreemptionCheckpoint`) raises
:class:`~amos_zoo.train.callbacks.Preempted` on every process before anything is predicted or written.
"""

from __future__ import annotations

import hashlib
import json
import platform
import resource
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amos_zoo.config_files import config_file, config_root  # re-exported: their old home

__all__ = [
    "ExperimentResult",
    "run_experiment",
    "config_file",
    "config_root",
    "config_hash",
    "dataset_hash",
    "finished_experiment",
    "load_rows",
    "resume_checkpoint",
    "run_config",
    "CHECKPOINT_LABELS",
]

#: what a row says about the checkpoint it evaluated (``row["checkpoint_choice"]``)
CHECKPOINT_LABELS = {
    "final": "final: the weights at the end of training (nnU-Net reports each fold's checkpoint_final.pth)",
    "best": "best: the checkpoint of the best validation Dice, chosen on the same validation cases this row scores "
    "(optimistic: model selection on the evaluation cases)",
}


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10
        )
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
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({platform.processor() or 'x86_64'})"


@dataclass
class ExperimentResult:
    """What an experiment produced: the row (also in ``row.json``), the evaluation summary and where things are."""

    row: dict[str, Any]
    summary: dict[str, Any]
    run_dir: Path
    checkpoint: Path
    val_cases: list[dict[str, Any]]


def run_experiment(
    fit_args: Sequence[str],
    run_dir: str | Path,
    *,
    metrics: Sequence[str] = ("dice", "nsd"),
    tolerance: str = "uniform-2mm",
    progress: bool = True,
    device: str | None = None,
    info: dict[str, Any] | None = None,
    regions: Sequence[Any] | None = None,
    checkpoint: str = "best",
    empty_policy: str = "score",
    hash_args: Sequence[str] | None = None,
) -> ExperimentResult | None:
    """Fit with ``amos-zoo fit`` arguments, predict the validation cases, evaluate them and write ``row.json``.

    Args:
        fit_args: LightningCLI ``fit`` arguments (configs, ``--protocol``, ``--data.root``...); ``run_dir`` is
            passed as ``--trainer.default_root_dir``.
        run_dir: the run folder: checkpoints, logs, ``predictions/``, ``evaluation/`` and ``row.json``.
        metrics: metrics of the evaluation (``dice``, ``nsd``, ``hd95``, ``assd``).
        tolerance: NSD tolerance preset.
        progress: progress bars.
        device: where to predict (default: CUDA when available).
        info: extra fields for the row (task, model, protocol, fold, smoke...).
        regions: score these label sets instead of each label (a Decathlon task's :func:`~amos_zoo.metrics.regions.
            task_regions`).
        checkpoint: ``final`` (the weights at the end of training, saved as ``checkpoints/final.ckpt``) or ``best``
            (the best validation checkpoint; the final one when validation never saved one); the row labels it.
        empty_policy: the metric suite's empty-organ rule (``score``, ``ignore`` or ``nnunet``).
        hash_args: the arguments whose :func:`config_hash` the row records (default ``fit_args``; a resumed run
            passes them without its ``--ckpt_path``, so it counts as the same configuration).

    Returns:
        The result on global rank 0; None on the other DDP ranks.

    Raises:
        Preempted: on every process, when a signal stopped the fit (its checkpoint saved, nothing predicted).

    One function because it is the experiment's stages in order (fit, predict, evaluate, row), each a few calls.
    """
    import torch

    from amos_zoo.infer.pipeline import PredictJob, predict_many
    from amos_zoo.infer.predictor import Predictor
    from amos_zoo.io import write_json
    from amos_zoo.metrics.evaluate import evaluate_folders
    from amos_zoo.train.callbacks import Preempted, preempted_checkpoint
    from amos_zoo.train.cli import run_lightning_cli
    from amos_zoo.weights.loading import load_model

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    args = ["fit", *fit_args, "--trainer.default_root_dir", str(run_dir)]
    if not progress:
        args += ["--trainer.enable_progress_bar", "false"]
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.time()
    cli = run_lightning_cli(args)
    fit_seconds = time.time() - start
    trainer, datamodule = cli.trainer, cli.datamodule
    if checkpoint not in CHECKPOINT_LABELS:
        raise ValueError(f"checkpoint must be one of {', '.join(CHECKPOINT_LABELS)}, got {checkpoint!r}")
    preempted = preempted_checkpoint(trainer)
    if preempted is not None:
        raise Preempted(preempted, int(trainer.global_rank))
    final = run_dir / "checkpoints" / "final.ckpt"
    trainer.save_checkpoint(final)  # on every rank: saving is a collective (Lightning's save ends with a barrier)
    if not trainer.is_global_zero:
        return None
    ckpt_cb = trainer.checkpoint_callback
    best = Path(ckpt_cb.best_model_path) if ckpt_cb and ckpt_cb.best_model_path else None
    ckpt = best if checkpoint == "best" and best is not None and best.is_file() else final
    choice = "best" if ckpt == best else "final"

    val_cases = datamodule.case_dicts("val")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    net, card, _ = load_model(ckpt)
    predictor = Predictor.from_card(net, card, device=device)
    jobs = [PredictJob(c["case_id"], c["image"], c["modality"]) for c in val_cases]
    report = predict_many(predictor, jobs, run_dir / "predictions", progress=progress)
    if report["failed"]:
        raise RuntimeError(f"prediction failed for {report['failed']}")
    gt_dir = run_dir / "evaluation" / "reference"
    gt_dir.mkdir(parents=True, exist_ok=True)
    for case in val_cases:
        link = gt_dir / f"{case['case_id']}.nii.gz"
        if not link.exists():
            link.symlink_to(Path(case["label"]).resolve())
    summary = evaluate_folders(
        run_dir / "predictions",
        gt_dir,
        run_dir / "evaluation",
        labels=datamodule.index.labels,
        metrics=tuple(metrics),
        tolerance=tolerance,
        empty_policy=empty_policy,
        workers=1,
        progress=progress,
        case_ids=[c["case_id"] for c in val_cases],
        regions=regions,
    )
    row = {
        **(info or {}),
        "protocol": card.protocol,
        "model": card.arch,
        "task": datamodule.task,
        "split": datamodule.split_description,
        "split_kind": datamodule.split_kind,
        "fold": datamodule.hparams.fold,
        "num_folds": datamodule.hparams.num_folds if datamodule.hparams.fold is not None else None,
        "fit_args": list(fit_args),
        "resolved_config": _resolved_config(run_dir),
        "card": card.to_dict(),
        "commit": _git_commit(),
        "data_root": str(datamodule.root),
        "data_hash": dataset_hash(datamodule.root),
        "checkpoint": str(ckpt),
        "checkpoint_choice": CHECKPOINT_LABELS[choice],
        "empty_policy": empty_policy,
        "steps": int(trainer.global_step),
        "fit_seconds": fit_seconds,
        "wall_time_s": time.time() - start,
        "device": _device_name(),
        "devices": int(trainer.world_size),
        **batch_fields(datamodule, int(trainer.world_size)),
        "peak_memory_mb": _peak_memory_mb(),
        "metrics": row_metrics(summary),
        "config_hash": config_hash(fit_args if hash_args is None else hash_args),
        "val_cases": [{"case_id": c["case_id"], "label": str(c["label"])} for c in val_cases],
    }
    write_json(run_dir / "row.json", row)
    return ExperimentResult(row, summary, run_dir, ckpt, val_cases)


def batch_fields(datamodule, world_size: int) -> dict[str, Any]:
    """What a row records of the batch: processes, the batch of each and the global batch (volumes per step)."""
    per_process, global_batch = datamodule.batch_layout(world_size)
    return {
        "world_size": world_size,
        "batch_per_process": per_process,
        "global_batch": global_batch,
        "batch_rule": "global batch split over the processes" if datamodule.hparams.global_batch else "per process",
    }


def config_hash(fit_args: Sequence[str]) -> str:
    """SHA-256 of a run's ``fit`` arguments (configs, protocol, data, overrides): a finished run is reused by a
    rerun of the same command only when it was made with the same arguments."""
    return hashlib.sha256(json.dumps(list(fit_args)).encode()).hexdigest()


def finished_experiment(run_dir: str | Path, fit_args: Sequence[str]) -> ExperimentResult | None:
    """The result of a run that already finished in ``run_dir`` with the same ``fit_args`` (its ``row.json``, its
    evaluation summary and predictions kept); None when there is none or it was made with other arguments."""
    run_dir = Path(run_dir)
    row_file, summary_file = run_dir / "row.json", run_dir / "evaluation" / "summary.json"
    if not (row_file.is_file() and summary_file.is_file()):
        return None
    row = json.loads(row_file.read_text())
    if row.get("config_hash") != config_hash(fit_args) or "val_cases" not in row:
        return None
    summary = json.loads(summary_file.read_text())
    return ExperimentResult(row, summary, run_dir, Path(row["checkpoint"]), row["val_cases"])


def resume_checkpoint(run_dir: str | Path, fit_args: Sequence[str]) -> Path | None:
    """The checkpoint an interrupted run in ``run_dir`` with the same ``fit_args`` (its stored run configuration hash;
    see :func:`run_config`) resumes from: the furthest trained of ``preempted.ckpt`` (a signal), Lightning's SLURM
    ``hpc_ckpt_*.ckpt`` (requeue) and ``last.ckpt`` (validation, time interval), in that order of preference at the
    same step (resumed from the ``last.ckpt`` Lightning writes as a pre-empted fit ends, a run can take its next epoch
    one epoch late: other samples than an uninterrupted run's). None when there is none."""
    import torch

    run_dir = Path(run_dir)
    ckpts = run_dir / "checkpoints"
    found = [ckpts / "preempted.ckpt", *sorted(run_dir.glob("hpc_ckpt_*.ckpt")), ckpts / "last.ckpt"]
    wanted = config_hash(fit_args)
    best: tuple[int, int, Path] | None = None
    for preference, path in enumerate(p for p in found if p.is_file()):
        try:  # memory-mapped: only the small metadata is read
            saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # noqa: BLE001 - a checkpoint that cannot be read is not resumed from
            continue
        if saved.get("amos_zoo", {}).get("run_config_hash") == wanted:
            key = (int(saved.get("global_step", 0)), -preference, path)
            best = key if best is None or key[:2] > best[:2] else best
    return None if best is None else best[2]


@contextmanager
def run_config(fit_args: Sequence[str]) -> Iterator[None]:
    """Within: every checkpoint written stores the configuration hash of ``fit_args`` (:func:`resume_checkpoint`)."""
    import os

    from amos_zoo.train.module import RUN_CONFIG_ENV

    previous = os.environ.get(RUN_CONFIG_ENV)
    os.environ[RUN_CONFIG_ENV] = config_hash(fit_args)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(RUN_CONFIG_ENV, None)
        else:
            os.environ[RUN_CONFIG_ENV] = previous


def row_metrics(summary: dict) -> dict:
    """The metrics a results row keeps from an evaluation summary (see ``metrics.evaluate``)."""
    return {
        "overall": summary["all"]["overall"],
        "per_modality": {k: v["overall"] for k, v in summary["per_modality"].items()},
        "per_organ_dice": {k: v["dice"] for k, v in summary["all"]["per_organ"].items()},
        "cases": summary["all"]["cases"],
        "nsd_tolerance": summary["tolerance"],
    }


def _resolved_config(run_dir: Path) -> str | None:
    found = sorted(run_dir.rglob("config.yaml"), key=lambda p: p.stat().st_mtime)
    return found[-1].read_text() if found else None


def load_rows(runs: str | Path) -> list[dict]:
    """Every ``row.json`` below a runs folder."""
    return [json.loads(p.read_text()) for p in sorted(Path(runs).rglob("row.json"))]
