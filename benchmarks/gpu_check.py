"""What the zoo costs to train and to run on one GPU, measured the way `amos-zoo fit --config configs/base/gpu.yaml`
and `amos-zoo predict` run it. Every configuration is resolved by the same LightningCLI as `amos-zoo fit` (the
protocol card, gpu.yaml, the data -> model links), never by hard-coded class names, so a renamed protocol, recipe
or network setting shows here as it would in a user's command.

Three modes, one code path:

    python benchmarks/gpu_check.py --check --out OUT   # every configuration at full size, built on the CPU and run
                                                       # on the meta device (no training): CI, any machine
    python benchmarks/gpu_check.py --smoke --out OUT   # every measurement row on a CPU with tiny sizes and fixed step
                                                       # counts (no time limits): CI
    python benchmarks/gpu_check.py --out OUT           # the measurements on a GPU, each row time-boxed, the whole
                                                       # run kept inside --budget seconds

Rows go to ``OUT/gpu_run.jsonl`` (``--check``: ``OUT/gpu_check.jsonl``) as soon as each is measured; a row that raises
is recorded with its error and the run goes on. ``benchmarks/gpu_report.py`` renders the rows as tables. Rows:

* ``train``: per protocol/model, a Lightning fit on synthetic CT at real resolution (8 cases of 384 x 384 x 120 at
  0.9 x 0.9 x 2 mm), with the protocol's batch, patch, precision and gpu.yaml's loader workers and cuDNN
  autotuning; after ``warmup_steps`` (autotuning, loader start) a ``box_s`` time box: step time p50 / p90 (the
  step alone, synchronised), samples (patches) per second and the data-wait fraction (time between one step's
  end and the next step's start: waiting for the loader and the host-to-device copy), peak allocated and
  reserved memory. The epoch is longer than the run (``--data.epoch_iterations``), so the loader never drains.
* ``precision``: the same network and batch, training steps in fp32 and in bf16 autocast, interleaved (3 repeats,
  median and spread); fp32 convolutions use TF32, PyTorch's default.
* ``predict``: a synthetic 512 x 512 x 300 scan with the just-trained network and the protocol's window: load,
  preprocess, network (fp32, bf16; bf16 with mirror TTA where the protocol predicts with it), resample to the
  scan's grid, write, with peak GPU memory per network pass.
* ``workers``: the nnU-Net augmentation's data wait with 15 loader workers instead of gpu.yaml's 8.
* ``ddp``: one model's step time under gpu.yaml's ``DDPStrategy`` on 1 GPU against a single-device run.
* ``cpu_stitch``: one forced pass that stitches windows in CPU memory (the predictor's out-of-memory path).
* ``fit``: one real ``amos-zoo fit --config configs/base/gpu.yaml`` of 100 steps through the command line.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shlex
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GPU_YAML = REPO / "configs" / "base" / "gpu.yaml"

#: (protocol, model) of every measured configuration: the protocols' own models
CONFIGS: tuple[tuple[str, str], ...] = (
    ("btcv", "unetr"),
    ("btcv", "swin_unetr"),
    ("amos-paper", "vnet"),
    ("nnunet-v2", "dynunet"),
    ("quickstart", "unet"),
)
FIT_CONFIG = ("btcv", "swin_unetr")  # the real `amos-zoo fit` row: the README's example command
DDP_CONFIG = ("quickstart", "unet")  # DDPStrategy on 1 GPU against a single device
WORKERS_CONFIG = ("nnunet-v2", "dynunet")  # nnU-Net's augmentation: 15 loader workers against gpu.yaml's 8
WORKERS_MORE = 15
STITCH_CONFIG = ("btcv", "unetr")  # one forced CPU-stitching pass
FIT_START_S = 50.0  # the fit starts with this much budget left (its 80 s estimate is what the other rows leave it)
TASK = "amos-ct"


@dataclass(frozen=True)
class Mode:
    """Sizes and limits of one mode: the GPU run, or its CPU smoke version."""

    name: str
    train_shape: tuple[int, int, int]
    train_spacing: tuple[float, float, float]
    n_train: int
    n_val: int
    scan_shape: tuple[int, int, int]
    scan_spacing: tuple[float, float, float]
    warmup_steps: int  # excluded from the timings: cuDNN autotuning, loader start
    measure_steps: int  # at most this many timed steps...
    box_s: float | None  # ...within this many seconds (None: no time limit)
    precision_steps: int  # steps per precision and repeat in the precision row (GPU: adapted to the step time)
    fit_steps: int
    workers: int | None  # None: gpu.yaml's
    #: CLI options per (protocol, model) that shrink a configuration (smoke only): patch, network, spacing
    shrink: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    #: estimated seconds per row kind: a row starts only if the budget holds it (GPU only)
    estimate_s: dict[str, float] = field(default_factory=dict)


_SMOKE_NET = {
    "unetr": ([32, 32, 32], {"hidden_size": 48, "mlp_dim": 96, "num_heads": 4, "feature_size": 8}),
    "swin_unetr": (  # deepest stage 2x1x1
        [64, 32, 32],
        {"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1], "use_checkpoint": True},
    ),
    "vnet": ([16, 16, 16], {"dropout_prob_down": 0.5}),  # MONAI's VNet has no width setting
    "dynunet": (
        [32, 32, 16],
        {
            "filters": [8, 16, 32, 32],
            "kernel_size": [[3, 3, 3]] * 4,
            "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 1]],
            "deep_supervision": True,
            "deep_supr_num": 2,
        },
    ),
    "unet": ([32, 32, 16], {"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1}),
}


def _smoke_shrink() -> dict[tuple[str, str], list[str]]:
    out = {}
    for protocol, model in CONFIGS:
        patch, kwargs = _SMOKE_NET[model]
        out[(protocol, model)] = ["--data.patch_size", json.dumps(patch), "--model.arch_kwargs", json.dumps(kwargs)]
        out[(protocol, model)] += ["--data.num_samples", "1"]
    return out


GPU = Mode(
    name="gpu",
    train_shape=(384, 384, 120),
    train_spacing=(0.9, 0.9, 2.0),
    n_train=8,
    n_val=1,
    scan_shape=(512, 512, 300),
    scan_spacing=(0.75, 0.75, 1.0),
    warmup_steps=3,  # cuDNN autotuning is done in the first step (fixed shapes); the loader's workers are running
    measure_steps=100_000,
    box_s=8.0,  # 40-100 steps at the expected step times; the 6-minute limit binds (README "The GPU run")
    precision_steps=3,
    fit_steps=100,
    workers=None,
    estimate_s={"train": 22, "precision": 10, "predict": 25, "workers": 12, "ddp": 18, "cpu_stitch": 15, "fit": 80},
)
SMOKE = Mode(
    name="smoke",
    train_shape=(48, 40, 24),  # the middle of the phantom abdomen
    train_spacing=(3.5, 3.5, 5.0),
    n_train=2,
    n_val=1,
    scan_shape=(32, 32, 16),  # a few windows per pass: full-width VNet and 8 TTA passes on a CPU
    scan_spacing=(3.5, 3.5, 5.0),
    warmup_steps=1,
    measure_steps=2,
    box_s=None,
    precision_steps=1,
    fit_steps=2,
    workers=0,
    shrink=_smoke_shrink(),
)


# ---- rows ------------------------------------------------------------------------------------------------------
class Rows:
    """Appends each row to a JSON-lines file as soon as it exists (a run stopped at its limit keeps them); the file
    holds one run's rows (an earlier run's are replaced)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
        self.rows: list[dict] = []

    def add(self, row: dict) -> dict:
        self.rows.append(row)
        with open(self.path, "a") as f:
            f.write(json.dumps(row, default=_jsonable) + "\n")
            f.flush()
            os.fsync(f.fileno())
        status = row.get("status")
        detail = row.get("error", "") if status != "ok" else ""
        print(f"[{row.get('kind')}] {row.get('protocol', '')}/{row.get('model', '')}: {status} {detail}"[:400])
        return row


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | set):
        return list(value)
    return str(value)


@contextlib.contextmanager
def recorded(rows: Rows, row: dict) -> Iterator[dict]:
    """Fill ``row`` in the block; it is written whatever happens, with the exception (type, message, traceback
    tail) when the block raises, and the run goes on."""
    start = time.perf_counter()
    try:
        yield row
        row.setdefault("status", "ok")
    except Exception as err:  # noqa: BLE001 - every failure is a result to report; the next row still runs
        row["status"] = "error"
        row["error"] = f"{type(err).__name__}: {err}"[:2000]
        row["traceback"] = traceback.format_exc()[-3000:]
    finally:
        row["wall_s"] = round(time.perf_counter() - start, 3)
        rows.add(row)


class Budget:
    """Seconds left for the whole run; a row starts only when its estimate fits (the rest are recorded skipped)."""

    def __init__(self, seconds: float | None, reserve_s: float = 0.0) -> None:
        self.deadline = None if seconds is None else time.perf_counter() + seconds
        self.reserve_s = reserve_s

    def left(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - time.perf_counter()

    def allows(self, estimate_s: float, reserved: bool = False) -> bool:
        return self.left() - (0.0 if reserved else self.reserve_s) >= estimate_s


def skip_row(rows: Rows, kind: str, protocol: str, model: str, budget: Budget) -> None:
    rows.add(
        {
            "kind": kind,
            "protocol": protocol,
            "model": model,
            "status": "skipped",
            "error": f"not started: {budget.left():.0f} s of the budget left",
        }
    )


# ---- data ------------------------------------------------------------------------------------------------------
def _write_case(job: tuple) -> dict:
    from amos_zoo.data.synth import make_phantom
    from amos_zoo.io import save_nifti

    root, folder, case_id, shape, spacing = job
    case = make_phantom(case_id, shape=shape, spacing=spacing, anatomy_scale=1.3)
    name = f"amos_{case_id:04d}.nii.gz"
    save_nifti(case.image, case.affine, Path(root) / f"images{folder}" / name)
    save_nifti(case.label, case.affine, Path(root) / f"labels{folder}" / name)
    return {"image": f"./images{folder}/{name}", "label": f"./labels{folder}/{name}"}


def _write_scan(job: tuple) -> str:
    """The predict scan: a phantom at half resolution, upsampled (trilinear) to the full grid, so that a
    512 x 512 x 300 scan costs seconds to make; CT values and the body's extent as a real abdominal CT."""
    import torch

    from amos_zoo.data.synth import make_phantom
    from amos_zoo.io import save_nifti

    path, shape, spacing = job
    half = tuple(max(8, s // 2) for s in shape)
    case = make_phantom(900 % 500 + 1, shape=half, spacing=tuple(2 * s for s in spacing), anatomy_scale=1.3)
    image = torch.nn.functional.interpolate(
        torch.from_numpy(case.image.astype(np.float32))[None, None], size=shape, mode="trilinear"
    )[0, 0]
    affine = case.affine.copy()
    affine[:3, :3] = affine[:3, :3] / 2
    affine[:3, 3] -= affine[:3, :3] @ np.full(3, 0.5)  # voxel centres of the finer grid inside the same extent
    save_nifti(image.round().numpy().astype(np.int16), affine, path)
    return str(path)


def make_data(work: Path, mode: Mode) -> tuple[Path, Path]:
    """A synthetic AMOS-layout dataset and one predict scan, written in parallel processes."""
    from amos_zoo.data.labels import AMOS_LABELS
    from amos_zoo.io import write_json

    root = work / "data"
    scan = work / "scan" / "amos_scan.nii.gz"
    jobs = [(root, "Tr", i + 1, mode.train_shape, mode.train_spacing) for i in range(mode.n_train)]
    jobs += [(root, "Va", 100 + i, mode.train_shape, mode.train_spacing) for i in range(mode.n_val)]
    workers = min(len(jobs) + 1, os.cpu_count() or 1)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            scan_done = pool.submit(_write_scan, (scan, mode.scan_shape, mode.scan_spacing))
            entries = list(pool.map(_write_case, jobs))
            scan_done.result()
    else:
        entries = [_write_case(j) for j in jobs]
        _write_scan((scan, mode.scan_shape, mode.scan_spacing))
    write_json(
        root / "dataset.json",
        {
            "name": "AMOS-synthetic-real-resolution",
            "modality": {"0": "CT"},
            "labels": AMOS_LABELS.to_json(),
            "training": entries[: mode.n_train],
            "validation": entries[mode.n_train :],
        },
    )
    return root, scan


# ---- configurations --------------------------------------------------------------------------------------------
def cli_args(protocol: str, model: str, root: Path, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The `amos-zoo fit` options of one configuration: gpu.yaml, the protocol card with its model, the data."""
    args = ["--config", str(GPU_YAML), "--protocol", f"{protocol}/{model}"]
    return [*args, "--data.root", str(root), "--data.task", TASK, *extra]


def measure_args(protocol: str, model: str, root: Path, mode: Mode) -> list[str]:
    """Options of a measured configuration: gpu.yaml's trainer settings are read from the resolved config, but the
    Trainer is the benchmark's (no loggers or checkpoint callbacks); an epoch longer than the run."""
    extra = ["--trainer.logger", "false", "--trainer.callbacks", "[]", "--data.epoch_iterations", "100000"]
    if mode.workers is not None:
        extra += ["--data.num_workers", str(mode.workers)]
    extra += mode.shrink.get((protocol, model), [])
    if mode.name == "smoke":
        extra += _smoke_spacing(protocol)
    return cli_args(protocol, model, root, extra)


def _smoke_spacing(protocol: str) -> list[str]:
    """Smoke runs: a coarse grid for recipes with a fixed spacing (planned recipes keep their plan)."""
    from amos_zoo.data.recipes import get_recipe

    return [] if get_recipe(protocol).needs_plan else ["--data.spacing", "[7.0, 7.0, 10.0]"]


def fit_args(root: Path, run_dir: Path, mode: Mode, wandb: bool | None = None) -> list[str]:
    """`amos-zoo fit` options of the real fit row: gpu.yaml as a user runs it, 100 steps, one validation at the end.
    Without wandb (``wandb`` None: whether it imports here; the lent GPU machine has none), the CSV logger alone
    replaces gpu.yaml's two loggers."""
    protocol, model = FIT_CONFIG
    steps = str(mode.fit_steps)
    extra = ["--trainer.max_steps", steps, "--trainer.val_check_interval", steps, "--data.max_val_cases", "1"]
    extra += ["--trainer.default_root_dir", str(run_dir), "--trainer.log_every_n_steps", "10"]
    if not (_has("wandb") if wandb is None else wandb):
        csv = {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": "${run_dir}/logs"}}
        extra += ["--trainer.logger", json.dumps([csv])]
    if mode.name == "smoke":
        extra += ["--trainer.accelerator", "cpu", "--trainer.precision", "32-true", "--data.num_workers", "0"]
        extra += mode.shrink[FIT_CONFIG] + _smoke_spacing(protocol)
    return cli_args(protocol, model, root, extra)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def resolve(args: list[str]):
    """Model, data module and trainer config exactly as `amos-zoo fit` resolves them (LightningCLI, run=False)."""
    from amos_zoo.train.cli import run_lightning_cli

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_lightning_cli(args, run=False)


def _shapes(out: Any) -> list[list[int]]:
    if isinstance(out, list | tuple):
        return [list(o.shape) for o in out]
    return [list(out.shape)]


def check_row(protocol: str, model: str, args: list[str]) -> dict:
    """One configuration at full size: resolved like `amos-zoo fit`, the network built on the CPU, then a
    training-mode forward pass of one full batch on the meta device (shapes only)."""
    import torch

    from amos_zoo.models.registry import count_parameters

    cli = resolve(args)
    module, dm, config = cli.model, cli.datamodule, cli.config
    recipe, card = dm.recipe, module.card
    if card.tta and not recipe.mirror_axes:  # what the Predictor would refuse
        raise ValueError(f"{protocol}/{model}: the protocol predicts with mirror TTA but its recipe never mirrors")
    patches = dm.batch_size * recipe.num_samples
    net = module.net
    row = {
        "arch": module.hparams.arch,
        "params": count_parameters(net),
        "network": type(net).__name__,
        "recipe": recipe.name,
        "patch": list(recipe.patch_size),
        "spacing": "planned" if recipe.needs_plan else list(recipe.spacing),
        "batch_size": dm.batch_size,
        "patches_per_step": patches,
        "workers": dm.num_workers,
        "epoch_iterations": dm.hparams.epoch_iterations,
        "precision": str(config.trainer.precision),
        "benchmark": config.trainer.benchmark,
        "strategy": type(cli.trainer.strategy).__name__,
        "loggers": [type(lg).__name__ for lg in cli.trainer.loggers],
        "optimizer": module.hparams.optimizer,
        "scheduler": module.hparams.scheduler,
        "tta": card.tta,
        "roi": list(card.roi_size),
        "sw_overlap": card.sw_overlap,
        "sw_batch_size": card.sw_batch_size,
    }
    net = net.to("meta").train()
    with torch.no_grad():
        out = net(torch.empty((patches, dm.num_channels, *recipe.patch_size), device="meta"))
    # deep supervision: a list (one output per resolution) or stacked, (B, outputs, C, *spatial)
    row["output_shapes"] = shapes = _shapes(out)
    if len(shapes) > 1:
        row["outputs"], full = len(shapes), shapes[0]
    elif len(shapes[0]) == 3 + len(recipe.patch_size):
        row["outputs"], full = shapes[0][1], shapes[0][:1] + shapes[0][2:]
    else:
        row["outputs"], full = 1, shapes[0]
    expected = [patches, dm.num_classes, *recipe.patch_size]
    if full != expected:
        raise ValueError(f"{protocol}/{model}: the network's output {full} differs from the batch's {expected}")
    unused, row["unused_found_by"] = unused_parameters(module, patches, dm.num_channels, recipe.patch_size)
    row["unused_parameters"] = len(unused)
    row["unused_parameter_names"] = unused[:4]
    strategy = cli.trainer.strategy
    tolerant = getattr(strategy, "_ddp_kwargs", {}).get("find_unused_parameters", False)
    # DDPStrategy refuses trainable parameters that get no gradient, unless told to look for them
    row["ddp_ready"] = not unused or bool(tolerant) or "DDP" not in type(strategy).__name__
    del cli, module, net, out
    gc.collect()
    return row


def unused_parameters(module: Any, patches: int, channels: int, patch: tuple[int, ...]) -> tuple[list[str], str]:
    """Trainable parameters that get no gradient from a training step, found on the meta device: the module's own
    loss where it runs there, else the sum of the network's outputs (every output used)."""
    import torch

    module.zero_grad(set_to_none=True)
    module.trainer = None
    image = torch.empty((patches, channels, *patch), device="meta")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loss = module.training_step({"image": image, "label": torch.zeros_like(image, dtype=torch.long)}, 0)
        found_by = "training_step"
    except RuntimeError:  # an operation without a meta kernel (.item())
        module.zero_grad(set_to_none=True)
        out = module.net(image)
        loss = sum(o.float().mean() for o in (out if isinstance(out, list | tuple) else [out]))
        found_by = "outputs"
    loss.backward()
    return [name for name, p in module.named_parameters() if p.requires_grad and p.grad is None], found_by


def run_check(out: Path, work: Path, configs: tuple[tuple[str, str], ...]) -> int:
    """``--check``: every configuration the GPU run resolves, at full size, without training. Returns failures."""
    rows = Rows(out / "gpu_check.jsonl")
    root, _ = make_data(work, SMOKE)  # only the dataset's index is read: tiny cases suffice
    for protocol, model in configs:
        with recorded(rows, {"kind": "check", "protocol": protocol, "model": model}) as row:
            row.update(check_row(protocol, model, measure_args(protocol, model, root, GPU)))
    if configs == CONFIGS:  # the real fit's command, with wandb and without it (as on the lent machine)
        protocol, model = FIT_CONFIG
        for wandb in (True, False):
            with recorded(rows, {"kind": "check_fit", "protocol": protocol, "model": model, "wandb": wandb}) as row:
                row.update(check_row(protocol, model, fit_args(root, work / "fit", GPU, wandb)))
                row["command"] = "amos-zoo fit " + shlex.join(fit_args(Path("DATA"), Path("RUN"), GPU, wandb))
    failed = [r for r in rows.rows if r["status"] != "ok"]
    print(f"gpu_check --check: {len(rows.rows) - len(failed)} of {len(rows.rows)} configurations resolve")
    for r in rows.rows:
        if r.get("ddp_ready") is False:
            print(
                f"WARNING: {r['protocol']}/{r['model']}: {r['unused_parameters']} trainable parameters get no gradient "
                f"(e.g. {', '.join(r['unused_parameter_names'])}): gpu.yaml's DDPStrategy refuses to train it"
            )
    return len(failed)


# ---- measurements ----------------------------------------------------------------------------------------------
def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _memory(prefix: str = "") -> dict:
    import torch

    if not torch.cuda.is_available():
        return {f"{prefix}peak_allocated_gb": None, f"{prefix}peak_reserved_gb": None}
    return {
        f"{prefix}peak_allocated_gb": round(torch.cuda.max_memory_allocated() / 2**30, 3),
        f"{prefix}peak_reserved_gb": round(torch.cuda.max_memory_reserved() / 2**30, 3),
    }


def _reset_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def step_timer(warmup: int, measure: int, box_s: float | None):
    """A Lightning callback timing each training step (start to synchronised end) and the wait between steps,
    after ``warmup`` steps; it stops training after ``measure`` timed steps or ``box_s`` seconds."""
    import pytorch_lightning as pl

    class StepTimer(pl.Callback):
        def __init__(self) -> None:
            self.steps: list[float] = []
            self.waits: list[float] = []
            self.t_start = self.t_end = self.t_first = self.t_warm = None
            self.done = 0
            self.last_batch = None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            now = time.perf_counter()
            if self.t_first is None:
                self.t_first = now
            if self.t_warm is not None:
                self.waits.append(now - self.t_end)
            self.t_start = now

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            _sync()
            self.t_end = time.perf_counter()
            self.done += 1
            if self.t_warm is not None:
                self.steps.append(self.t_end - self.t_start)
            elif self.done >= warmup:
                self.t_warm = self.t_end
            self.last_batch = batch
            timed_out = box_s is not None and self.t_warm is not None and self.t_end - self.t_warm >= box_s
            if len(self.steps) >= measure or timed_out:
                trainer.should_stop = True

        def summary(self, patches_per_step: int) -> dict:
            span = (self.t_end - self.t_warm) if self.t_warm is not None and self.steps else float("nan")
            return {
                "warmup_steps": warmup,
                "warmup_s": round(self.t_warm - self.t_first, 3) if self.t_warm is not None else None,
                "steps": len(self.steps),
                "timed_s": round(span, 3),
                "step_ms_p50": _ms(_percentile(self.steps, 50)),
                "step_ms_p90": _ms(_percentile(self.steps, 90)),
                "samples_per_s": round(len(self.steps) * patches_per_step / span, 3) if self.steps else None,
                "data_wait_fraction": round(sum(self.waits) / span, 4) if self.steps else None,
                "wait_ms_p90": _ms(_percentile(self.waits, 90)),
            }

    return StepTimer()


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(1000 * seconds, 2)


@dataclass
class Trained:
    """A configuration after its training row: what the precision and predict rows reuse."""

    protocol: str
    model: str
    module: Any
    datamodule: Any
    batch: Any
    step_ms: float | None
    precision: str


def train_row(
    protocol: str,
    model: str,
    root: Path,
    mode: Mode,
    row: dict,
    extra: list[str] | tuple[str, ...] = (),
    strategy: Any = "auto",
    box_share: float = 1.0,
) -> Trained:
    """Train one configuration, time-boxed (``box_share`` of the mode's box); fills ``row`` with the step timings,
    data wait and memory."""
    import pytorch_lightning as pl
    import torch

    cli = resolve([*measure_args(protocol, model, root, mode), *extra])
    module, dm, config = cli.model, cli.datamodule, cli.config
    gpu = torch.cuda.is_available()
    precision = str(config.trainer.precision) if gpu else "32-true"
    patches = dm.batch_size * dm.recipe.num_samples
    box_s = None if mode.box_s is None else mode.box_s * box_share
    timer = step_timer(mode.warmup_steps, mode.measure_steps, box_s)
    row.update(
        {
            "arch": module.hparams.arch,
            "patch": list(dm.recipe.patch_size),
            "batch_size": dm.batch_size,
            "patches_per_step": patches,
            "workers": dm.num_workers,
            "precision": precision,
            "benchmark": bool(config.trainer.benchmark) and gpu,
            "box_s": box_s,
        }
    )
    _reset_memory()
    trainer = pl.Trainer(
        accelerator="gpu" if gpu else "cpu",
        devices=1,
        strategy=strategy,
        precision=precision,
        benchmark=bool(config.trainer.benchmark) if gpu else None,
        max_steps=10**7,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, dm)
    row["setup_s"] = round(timer.t_first - start, 3) if timer.t_first is not None else None
    row.update(timer.summary(patches))
    row.update(_memory())
    row["spacing"] = list(dm.recipe.spacing) if dm.recipe.spacing is not None else None
    if not timer.steps:
        raise RuntimeError(f"no timed step: {timer.done} steps in all")
    batch = timer.last_batch
    del trainer, timer
    return Trained(protocol, model, module, dm, batch, row["step_ms_p50"], precision)


def precision_row(trained: Trained, mode: Mode, row: dict) -> None:
    """Training steps of the same network on the same batch in fp32 and bf16 autocast, interleaved: 3 repeats of
    ``k`` steps each, per-step medians and spreads."""
    import torch

    module = trained.module
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    module.to(device).train()
    module.trainer = None  # steps outside Lightning: self.log() warns and returns
    batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in trained.batch.items()}
    configured = module.configure_optimizers()
    opt = configured["optimizer"] if isinstance(configured, dict) else configured
    k = mode.precision_steps
    if mode.box_s is not None and trained.step_ms:  # 3 repeats x 2 precisions (fp32 assumed 3x slower) in ~box
        k = int(max(1, min(5, mode.box_s / (3 * 4 * trained.step_ms / 1000))))

    def steps(bf16: bool, n: int) -> float:
        _sync()
        start = time.perf_counter()
        for _ in range(n):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = module.training_step(batch, 0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        _sync()
        return (time.perf_counter() - start) / n

    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if mode.box_s is not None:  # warm-up: autotuning of each precision's kernels
            steps(False, 2)
            steps(True, 2)
        for _ in range(3):
            times["fp32"].append(steps(False, k))
            times["bf16"].append(steps(True, k))
    fp32, bf16 = float(np.median(times["fp32"])), float(np.median(times["bf16"]))
    row.update(
        {
            "steps_per_repeat": k,
            "repeats": 3,
            "fp32_ms": _ms(fp32),
            "bf16_ms": _ms(bf16),
            "fp32_spread_ms": _ms(max(times["fp32"]) - min(times["fp32"])),
            "bf16_spread_ms": _ms(max(times["bf16"]) - min(times["bf16"])),
            "bf16_speedup": round(fp32 / bf16, 3),
            "tf32_convolutions": bool(torch.backends.cudnn.allow_tf32),
        }
    )
    opt.zero_grad(set_to_none=True)


def predict_row(
    trained: Trained,
    image: Any,
    scan: Path,
    out_dir: Path,
    row: dict,
    stitch_on_cpu: bool = False,
    budget: Budget | None = None,
):
    """The just-trained network on the predict scan with the protocol's window: each stage timed. The mirror-TTA
    pass (8 network passes) runs only when ``budget`` holds 8 times the bf16 pass and 10 s more."""
    import torch

    from amos_zoo.infer.predictor import Predictor, nifti_header
    from amos_zoo.io import save_nifti

    module, dm = trained.module, trained.datamodule
    device = "cuda" if torch.cuda.is_available() else "cpu"
    card = module.card.with_(recipe=dm.recipe)  # the recipe completed by the dataset's plan

    def predictor(precision: str, tta: bool) -> Predictor:
        return Predictor.from_card(module.net, card, device=device, precision=precision, tta=tta)

    base = predictor("bf16", False)
    start = time.perf_counter()
    data = base.preprocess({"image": image.clone(), "modality": "CT"})
    row["preprocess_s"] = round(time.perf_counter() - start, 3)
    row.update(
        {
            "scan_shape": list(image.shape[1:]),
            "network_grid": list(data["image"].shape[1:]),
            "roi": list(base.roi_size),
            "sw_batch_size": base.sw_batch_size,
            "overlap": base.overlap,
            "protocol_tta": card.tta,
        }
    )
    # mirror TTA where the protocol predicts with it (8 network passes: the 6-minute run cannot afford it for all)
    variants = [("fp32", False), ("bf16", False)] + ([("bf16", True)] if card.tta else [])
    if stitch_on_cpu:
        variants = [("bf16", False)]
    probs = None
    for precision, tta in variants:
        single = row.get("network_bf16_s")
        if tta and budget is not None and single is not None and not budget.allows(8 * single + 10):
            row["network_bf16_tta_skipped"] = f"{budget.left():.0f} s of the budget left"
            continue
        p = predictor(precision, tta)
        p._stitch_on_cpu = stitch_on_cpu  # the path a whole-volume output too large for the GPU takes
        with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            window = torch.zeros((p.sw_batch_size, card.in_channels, *p.roi_size), device=device)
            p.model(window)  # warm-up: this window shape's kernels (cuDNN autotuning)
        _reset_memory()
        _sync()
        start = time.perf_counter()
        result = p.probabilities_from_preprocessed(data)
        _sync()
        key = f"{'cpu_stitch' if stitch_on_cpu else 'network'}_{precision}{'_tta' if tta else ''}"
        row[f"{key}_s"] = round(time.perf_counter() - start, 3)
        row.update(_memory(f"{key}_"))
        if precision == "bf16" and not tta:
            probs = result
        del result
    if stitch_on_cpu:
        return
    start = time.perf_counter()
    labels, affine, _ = base.to_input_grid(image, probs, with_probabilities=False)
    row["resample_s"] = round(time.perf_counter() - start, 3)
    start = time.perf_counter()
    save_nifti(labels, affine, out_dir / f"{trained.protocol}_{trained.model}.nii.gz", header=nifti_header(scan))
    row["write_s"] = round(time.perf_counter() - start, 3)
    row["labels_present"] = int(len(np.unique(labels)))


def fit_row(root: Path, work: Path, out: Path, mode: Mode, row: dict, timeout_s: float | None) -> None:
    """One real `amos-zoo fit` through the command line (a separate process, as a user runs it)."""
    import csv

    run_dir = work / "fit"
    args = fit_args(root, run_dir, mode, wandb=False if mode.name == "smoke" else None)  # smoke: as the lent machine
    command = [sys.executable, "-m", "amos_zoo.cli.main", "fit", *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    row["command"] = "amos-zoo fit " + shlex.join(args)
    row["steps"] = mode.fit_steps
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s, cwd=REPO)
    row["fit_s"] = round(time.perf_counter() - start, 3)
    row["rc"] = done.returncode
    (out / "fit.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"amos-zoo fit exited {done.returncode}: {(done.stdout + done.stderr)[-1500:]}")
    row["checkpoints"] = sorted(p.name for p in run_dir.glob("checkpoints/*.ckpt"))
    metrics = sorted(run_dir.glob("logs/**/metrics.csv"))
    if metrics:
        with open(metrics[-1]) as f:
            records = list(csv.DictReader(f))
        for name in ("val/mean_dice", "train/loss"):
            values = [r[name] for r in records if r.get(name)]
            row[name.replace("/", "_")] = float(values[-1]) if values else None
    if not row["checkpoints"]:
        raise RuntimeError(f"amos-zoo fit wrote no checkpoint in {run_dir}/checkpoints")


def release() -> None:
    """Collect a finished configuration's network and loaders and return its cached GPU memory."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_measurements(out: Path, work: Path, mode: Mode, budget_s: float | None) -> int:
    """Every row of the GPU run (``mode`` GPU) or its CPU smoke version; returns the number of failed rows."""
    import torch

    from amos_zoo.infer.predictor import load_scan

    rows = Rows(out / "gpu_run.jsonl")
    budget = Budget(budget_s, reserve_s=mode.estimate_s.get("fit", 0.0) if budget_s is not None else 0.0)
    est = mode.estimate_s

    def allowed(kind: str, protocol: str, model: str, reserved: bool = False) -> bool:
        if budget.allows(est.get(kind, 0.0), reserved):
            return True
        skip_row(rows, kind, protocol, model, budget)
        return False

    rows.add(
        {
            "kind": "device",
            "status": "ok",
            "mode": mode.name,
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "cpus": os.cpu_count(),
            "budget_s": budget_s,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
    )
    with recorded(rows, {"kind": "data"}) as row:
        root, scan = make_data(work, mode)
        row.update({"train_shape": mode.train_shape, "cases": mode.n_train + mode.n_val, "scan_shape": mode.scan_shape})
    if row["status"] != "ok":
        return 1
    scan_image: dict = {}  # the predict scan, loaded (and the load timed) once: every model reads the same file

    def loaded() -> tuple[Any, float]:
        if not scan_image:
            start = time.perf_counter()
            scan_image["image"] = load_scan(scan)
            scan_image["load_s"] = round(time.perf_counter() - start, 3)
        return scan_image["image"], scan_image["load_s"]

    for protocol, model in CONFIGS:
        if not allowed("train", protocol, model):
            continue
        trained = None
        with recorded(rows, {"kind": "train", "protocol": protocol, "model": model}) as row:
            trained = train_row(protocol, model, root, mode, row)
        if trained is None:
            continue
        if allowed("precision", protocol, model):
            with recorded(rows, {"kind": "precision", "protocol": protocol, "model": model}) as row:
                precision_row(trained, mode, row)
        if allowed("predict", protocol, model):
            with recorded(rows, {"kind": "predict", "protocol": protocol, "model": model}) as row:
                image, row["load_s"] = loaded()
                predict_row(trained, image, scan, work / "predictions", row, budget=budget)
        if (protocol, model) == STITCH_CONFIG and allowed("cpu_stitch", protocol, model):
            with recorded(rows, {"kind": "cpu_stitch", "protocol": protocol, "model": model}) as row:
                image, row["load_s"] = loaded()
                predict_row(trained, image, scan, work / "predictions", row, stitch_on_cpu=True)
        trained = None
        release()
    scan_image.clear()
    protocol, model = WORKERS_CONFIG
    if allowed("workers", protocol, model):
        with recorded(rows, {"kind": "workers", "protocol": protocol, "model": model}) as row:
            more = WORKERS_MORE if mode.workers is None else 1
            train_row(protocol, model, root, mode, row, ["--data.num_workers", str(more)], box_share=0.5)
            release()
    protocol, model = DDP_CONFIG
    if allowed("ddp", protocol, model):
        with recorded(rows, {"kind": "ddp", "protocol": protocol, "model": model}) as row:
            ddp_row(protocol, model, root, mode, row)
    if budget.left() >= FIT_START_S or allowed("fit", *FIT_CONFIG, reserved=True):  # 80 s held back; starts at 50
        with recorded(rows, {"kind": "fit", "protocol": FIT_CONFIG[0], "model": FIT_CONFIG[1]}) as row:
            left = budget.left()
            # up to 20 s past the budget: gpu_run.sh's limit is the budget + 25 s
            fit_row(root, work, out, mode, row, None if left == float("inf") else left + 20.0)
    failed = [r for r in rows.rows if r["status"] == "error"]
    print(f"gpu_check: {len(rows.rows)} rows, {len(failed)} failed, in {out / 'gpu_run.jsonl'}")
    return len(failed)


def ddp_row(protocol: str, model: str, root: Path, mode: Mode, row: dict) -> None:
    """Step time under gpu.yaml's strategy (DDPStrategy: one process on one device) against a single device."""
    import torch

    configured = resolve(measure_args(protocol, model, root, mode)).trainer.strategy
    kind = type(configured)
    row["strategy"] = kind.__name__
    environ = dict(os.environ)  # the DDP launcher exports MASTER_PORT, LOCAL_RANK...: later runs must not inherit them
    try:
        for name in ("single", "ddp"):
            strategy = "auto" if name == "single" else kind(timeout=getattr(configured, "_timeout", None))
            part: dict = {}
            train_row(protocol, model, root, mode, part, strategy=strategy, box_share=0.5)
            release()
            for key in ("step_ms_p50", "step_ms_p90", "samples_per_s", "data_wait_fraction"):
                row[f"{name}_{key}"] = part[key]
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        os.environ.clear()
        os.environ.update(environ)
    row["ddp_over_single"] = round(row["ddp_step_ms_p50"] / row["single_step_ms_p50"], 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true", help="resolve every configuration at full size, no training")
    group.add_argument("--smoke", action="store_true", help="every row on a CPU with tiny sizes, no time limits")
    parser.add_argument("--out", default="benchmarks/results/gpu_run", help="folder for the JSON-lines rows")
    parser.add_argument("--work", default=None, help="scratch folder for data and runs (default: a temporary one)")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds for the GPU run's rows (GPU mode)")
    parser.add_argument(
        "--configs", nargs="*", default=None, help="--check only these PROTOCOL/MODEL (default: every one)"
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import tempfile

    with contextlib.ExitStack() as stack:
        work = Path(args.work) if args.work else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        work.mkdir(parents=True, exist_ok=True)
        if args.check:
            configs = CONFIGS if args.configs is None else tuple(tuple(c.split("/", 1)) for c in args.configs)
            return 1 if run_check(out, work, configs) else 0
        mode = SMOKE if args.smoke else GPU
        return 1 if run_measurements(out, work, mode, None if args.smoke else args.budget) else 0


if __name__ == "__main__":
    sys.exit(main())
