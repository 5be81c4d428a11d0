"""GPU check, sized for about 8 minutes on one H100: throughput benchmarks plus a few hundred iterations of
each AMOS recipe on synthetic data at real resolution, checking that the loss falls, nothing runs out of
memory, and measuring the data-wait fraction (time the training loop waits for the next batch); then seconds per
case of `amos-zoo predict`'s Predictor for each model, fp32 against bf16 AMP.

    python benchmarks/gpu_check.py --out benchmarks/results/gpu_<card>.md     # on a GPU machine
    python benchmarks/gpu_check.py --smoke                                     # logic check on CPU, ~2 min

Writes a markdown report naming the card. Never run in CI (no GPU there).
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytorch_lightning as pl
import torch

from amos_zoo.data.datamodule import SegmentationDataModule
from amos_zoo.data.synth import make_phantom
from amos_zoo.io import save_nifti, write_json, write_text
from amos_zoo.train.module import SegmentationModule

MODELS = {  # model -> (recipe, steps, constructor overrides)
    "unet": ("btcv", 300, {}),
    "unetr": ("btcv", 200, {}),
    "swin_unetr": ("btcv", 150, {"use_checkpoint": True}),
    "vnet": ("btcv", 200, {}),
    "dynunet": (
        "amos-nnunet",
        200,
        {
            "strides": [[1, 1, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
            "kernel_size": [[3, 3, 1]] + [[3, 3, 3]] * 5,
        },
    ),
}


SMOKE_KW = {  # tiny networks for --smoke on CPU
    "unet": {"channels": (8, 16, 32), "strides": (2, 2), "num_res_units": 1},
    "unetr": {"img_size": (32, 32, 32), "hidden_size": 48, "mlp_dim": 96, "num_heads": 4, "feature_size": 8},
    "swin_unetr": {"feature_size": 12},
    "vnet": {},
    "dynunet": {
        "filters": (8, 16, 32, 32),
        "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 1]],
        "kernel_size": [[3, 3, 3]] * 4,
    },
}


class DataWait(pl.Callback):
    """Steady-state training speed: steps, seconds and seconds waiting for the next batch (between one step's end
    and the next step's start), all counted after ``warmup`` steps, so that setup, cache filling, cuDNN autotuning
    and the final validation stay out of it/s and of the data-wait fraction; and every step's loss."""

    def __init__(self, warmup: int = 5) -> None:
        self.warmup = warmup
        self.wait = 0.0
        self.t_end: float | None = None
        self.t_warm: float | None = None
        self.steps_after_warmup = 0
        self.losses: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.t_warm is not None and self.t_end is not None:
            self.wait += time.perf_counter() - self.t_end

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.t_end = time.perf_counter()
        self.losses.append(float(outputs["loss"]))
        if len(self.losses) == self.warmup:
            self.t_warm = self.t_end
        elif self.t_warm is not None:
            self.steps_after_warmup += 1

    @property
    def seconds(self) -> float:
        return (self.t_end - self.t_warm) if self.t_warm is not None and self.t_end is not None else float("nan")


def _write_case(args):
    root, split, case_id, shape, spacing = args
    case = make_phantom(case_id, shape=shape, spacing=spacing, anatomy_scale=1.3)
    name = f"amos_{case_id:04d}.nii.gz"
    save_nifti(case.image, case.affine, Path(root) / f"images{split}" / name)
    save_nifti(case.label, case.affine, Path(root) / f"labels{split}" / name)
    return {"image": f"./images{split}/{name}", "label": f"./labels{split}/{name}"}


def make_dataset(root: Path, shape, spacing, n_train: int, n_val: int) -> Path:
    """A synthetic AMOS-layout dataset at real resolution, written in parallel processes."""
    from amos_zoo.data.labels import AMOS_LABELS

    jobs = [(root, "Tr", i + 1, shape, spacing) for i in range(n_train)]
    jobs += [(root, "Va", 100 + i, shape, spacing) for i in range(n_val)]
    with ProcessPoolExecutor() as pool:
        entries = list(pool.map(_write_case, jobs))
    write_json(
        root / "dataset.json",
        {
            "name": "AMOS-synthetic-real-resolution",
            "modality": {"0": "CT"},
            "labels": AMOS_LABELS.to_json(),
            "training": entries[:n_train],
            "validation": entries[n_train:],
        },
    )
    return root


def run_model(name: str, root: Path, steps: int, smoke: bool) -> dict:
    recipe, _, kw = MODELS[name]
    patch = None
    if smoke:
        kw = SMOKE_KW[name]
        patch = {"swin_unetr": (64, 64, 32), "unetr": (32, 32, 32), "vnet": (32, 32, 32)}.get(name, (32, 32, 16))
        recipe = "tiny"
    dm = SegmentationDataModule(
        str(root),
        task="amos-ct",
        recipe=recipe,
        patch_size=patch,
        num_workers=0 if smoke else 12,
        batch_size=1 if smoke else 2,
        cache_dir=str(root / ".cache" / name),
    )
    model = SegmentationModule(
        arch=name,
        arch_kwargs=kw,
        num_classes=16,
        roi_size=dm.patch_size,
        lr=1e-4 if name != "dynunet" else 1e-2,
        optimizer="adamw" if name != "dynunet" else "sgd",
        scheduler="none",
        label_names=dm.label_names,
    )
    timer = DataWait(warmup=2 if smoke else 10)
    gpu = torch.cuda.is_available()
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="gpu" if gpu else "cpu",
        devices=1,
        precision="bf16-mixed" if gpu else "32-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=1,
        val_check_interval=steps,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )
    start = time.perf_counter()
    status = "ok"
    try:
        trainer.fit(model, dm)
    except torch.cuda.OutOfMemoryError as err:
        status = f"out of memory: {err}"
    seconds = time.perf_counter() - start
    losses = timer.losses
    k = max(1, min(20, len(losses) // 5))
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    return {
        "model": name,
        "recipe": recipe,
        "patch": list(dm.patch_size),
        "steps": len(losses),
        "status": status,
        "loss_first": first,
        "loss_last": last,
        "loss_falls": last < first,
        "it_per_s": timer.steps_after_warmup / timer.seconds,  # after warm-up, without setup and validation
        "data_wait_fraction": timer.wait / timer.seconds,
        "fit_seconds": seconds,
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if gpu else None,
        "val_mean_dice": float(trainer.callback_metrics.get("val/mean_dice", float("nan"))),
    }


def predict_timing(name: str, scan: Path, smoke: bool) -> dict:
    """Seconds per case of ``Predictor`` on one scan, fp32 against bf16 autocast, and their label agreement."""
    from amos_zoo.data.recipes import get_recipe
    from amos_zoo.infer.predictor import Predictor
    from amos_zoo.models.registry import create_model

    recipe_name, _, kw = MODELS[name]
    recipe = get_recipe("tiny" if smoke else recipe_name)
    roi = ((32, 32, 32) if name == "unetr" else (64, 64, 32)) if smoke else recipe.patch_size
    if smoke:
        kw = SMOKE_KW[name]
    if name == "unetr":
        kw = {**kw, "img_size": tuple(roi)}
    kw = {k: v for k, v in kw.items() if k != "use_checkpoint"}
    net = create_model(name, 1, 16, **kw)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    row: dict = {"model": name}
    labels = {}
    for precision in ("fp32", "bf16"):
        predictor = Predictor(net, recipe, tuple(roi), sw_batch_size=4, overlap=0.5, device=device, precision=precision)
        predictor.predict_case(scan)  # warm-up (cuDNN autotuning, allocator)
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        labels[precision], _, _ = predictor.predict_case(scan)
        if device == "cuda":
            torch.cuda.synchronize()
        row[precision] = time.perf_counter() - start
    row["agreement"] = float((labels["fp32"] == labels["bf16"]).mean())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on CPU to check the script itself")
    parser.add_argument("--work", default="/tmp/amos_zoo_gpu_check")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    card = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    shape, spacing = ((80, 64, 40), (3.5, 3.5, 5.0)) if args.smoke else ((384, 384, 96), (0.9, 0.9, 2.5))
    root = make_dataset(Path(args.work), shape, spacing, n_train=3 if args.smoke else 8, n_val=1 if args.smoke else 2)
    lines = [
        f"# gpu_check on {card}",
        "",
        "| model | recipe | patch | steps | it/s | data-wait | loss first -> last | falls | peak GB | status |",
        "|---" * 10 + "|",
    ]

    def flush() -> None:  # each result is kept as soon as it exists (a run stopped at its limit keeps them)
        if args.out:
            write_text(args.out, "\n".join(lines) + "\n")

    for name, (_, steps, _) in MODELS.items():
        r = run_model(name, root, 4 if args.smoke else steps, args.smoke)
        peak = "" if r["peak_memory_gb"] is None else f"{r['peak_memory_gb']:.1f}"
        lines.append(
            f"| {r['model']} | {r['recipe']} | {'x'.join(map(str, r['patch']))} | {r['steps']} | "
            f"{r['it_per_s']:.2f} | {r['data_wait_fraction']:.1%} | {r['loss_first']:.3f} -> "
            f"{r['loss_last']:.3f} | {r['loss_falls']} | {peak} | {r['status']} |"
        )
        flush()
    scan = sorted((root / "imagesVa").glob("*.nii.gz"))[0]
    lines += [
        "",
        f"Predictor on {scan.name} (shape {shape} at {spacing} mm), sliding window overlap 0.5, seconds per case:",
        "",
        "| model | fp32 s | bf16 AMP s | speed-up | label agreement |",
        "|---|---|---|---|---|",
    ]
    for name in MODELS:
        r = predict_timing(name, scan, args.smoke)
        lines.append(
            f"| {name} | {r['fp32']:.2f} | {r['bf16']:.2f} | {r['fp32'] / r['bf16']:.2f} | {r['agreement']:.5f} |"
        )
        flush()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
