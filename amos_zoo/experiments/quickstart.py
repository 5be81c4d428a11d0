"""The quickstart: synthetic AMOS data -> a small UNet trained on CPU -> evaluation in original geometry -> plots.

It is the experiment path (:func:`~amos_zoo.experiments.run.run_experiment`) with ``configs/base/cpu.yaml`` and the
``quickstart`` protocol. Everything goes under one folder: ``data/`` (the synthetic dataset and its preprocessing
cache), ``checkpoints/``, ``logs/`` (CSV, and W&B offline when asked), ``predictions/`` (label NIfTIs on each scan's
own grid), ``evaluation/`` (per-case CSV, summary JSON and markdown, box plot), ``row.json``,
``dice_per_organ.png`` and ``overlay.png``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["QuickstartConfig", "run_quickstart"]


@dataclass
class QuickstartConfig:
    """Settings of the quickstart (None: the ``quickstart`` protocol card's value).

    Attributes:
        out: output folder.
        task: ``amos-ct`` or ``amos-ctmr``.
        n_train / n_val: synthetic training / validation cases.
        max_steps: training steps.
        seed: dataset and training seed.
        wandb: also log to Weights & Biases (offline).
        progress: progress bars.
        extra_args: further ``amos-zoo fit`` options.
    """

    out: Path = Path("quickstart")
    task: str = "amos-ct"
    n_train: int = 24
    n_val: int = 6
    max_steps: int | None = None
    seed: int = 0
    wandb: bool = False
    progress: bool = True
    extra_args: list[str] = field(default_factory=list)


def _log(msg: str) -> None:
    print(f"[amos-zoo quickstart] {msg}", flush=True)


def _native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), where the quickstart card's ``bf16-mixed``
    trains a step about 1.4x faster than fp32; elsewhere bf16 is emulated and slower than fp32."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def run_quickstart(cfg: QuickstartConfig) -> dict:
    """Run the whole quickstart; returns the evaluation summary (with ``wall_time_s``).

    One function because it is the quickstart's script, step after step, as the notebook shows it.
    """
    import nibabel as nib
    import numpy as np

    from amos_zoo.console import quiet_third_party
    from amos_zoo.data.labels import AMOS_LABELS
    from amos_zoo.data.synth import write_synthetic_dataset
    from amos_zoo.experiments.run import config_file, run_experiment
    from amos_zoo.metrics.evaluate import markdown_table
    from amos_zoo.viz import dice_barplot, overlay_png

    quiet_third_party()  # a job, not a library call: results and progress only (AMOS_ZOO_VERBOSE=1 shows all)
    start = time.time()
    out = Path(cfg.out)
    data_root = out / "data"
    n_mr = 0 if cfg.task == "amos-ct" else max(1, cfg.n_train // 4)
    n_val_mr = 0 if cfg.task == "amos-ct" else max(1, cfg.n_val // 3)
    _log(f"writing the synthetic AMOS dataset to {data_root} ...")
    write_synthetic_dataset(
        data_root,
        n_train_ct=cfg.n_train,
        n_train_mr=n_mr,
        n_val_ct=cfg.n_val,
        n_val_mr=n_val_mr,
        n_test=1,
        seed=cfg.seed,
    )
    args = [
        "--config",
        str(config_file("base/cpu.yaml")),
        "--protocol",
        "quickstart/unet",
        "--data.root",
        str(data_root),
        "--data.task",
        cfg.task,
        "--data.cache_dir",
        str(data_root / ".cache"),
        "--seed_everything",
        str(cfg.seed),
    ]
    if cfg.max_steps is not None:
        args += ["--trainer.max_steps", str(cfg.max_steps), "--trainer.val_check_interval", str(cfg.max_steps)]
        args += ["--model.warmup_steps", str(max(1, cfg.max_steps // 10))]
    if cfg.wandb:
        args += [
            "--trainer.logger+=pytorch_lightning.loggers.WandbLogger",
            "--trainer.logger.project",
            "amos-zoo",
            "--trainer.logger.save_dir",
            str(out / "logs"),
            "--trainer.logger.offline",
            "true",
        ]
    if not _native_cpu_bf16():  # the card's bf16-mixed is emulated (several times slower) without these instructions
        _log("this CPU has no native bf16 (AVX512-BF16 or AMX): training in fp32 (--trainer.precision 32-true)")
        args += ["--trainer.precision", "32-true"]
    args += list(cfg.extra_args)
    _log("training a small UNet on CPU (quickstart protocol: amos-zoo protocol show quickstart) ...")
    result = run_experiment(
        args, out, metrics=("dice", "nsd", "hd95"), progress=cfg.progress, info={"quickstart": True}
    )
    summary = result.summary

    per_organ = {name: v["dice"] for name, v in summary["all"]["per_organ"].items()}
    dice_barplot(per_organ, out / "dice_per_organ.png", title="Quickstart: validation Dice per organ")
    first = result.val_cases[0]
    img = nib.as_closest_canonical(nib.load(first["image"]))
    lab = nib.as_closest_canonical(nib.load(first["label"]))
    pred = nib.as_closest_canonical(nib.load(str(out / "predictions" / f"{first['case_id']}.nii.gz")))
    overlay_png(
        np.asanyarray(img.dataobj),
        np.asanyarray(lab.dataobj),
        np.asanyarray(pred.dataobj),
        out / "overlay.png",
        title=f"{first['case_id']}: prediction (solid) vs reference (dashed)",
        names={i: AMOS_LABELS.display_name(i) for i in AMOS_LABELS.foreground_ids},
    )
    print(markdown_table(summary, AMOS_LABELS, ("dice", "nsd")))
    wall = time.time() - start
    summary["wall_time_s"] = wall
    summary["train_time_s"] = result.row["fit_seconds"]
    _log(
        f"outputs in {out.resolve()}: checkpoints/, logs/, predictions/, evaluation/, row.json, dice_per_organ.png, "
        "overlay.png"
    )
    _log(f"wall time {wall:.0f} s (training {result.row['fit_seconds']:.0f} s)")
    print(f"mean foreground Dice: {summary['all']['overall']['dice']:.4f}", flush=True)
    return summary
