"""Benchmark: training throughput, sliding-window inference time and peak memory per model.

For each model (recipe architecture, or the small CPU sizes with --cpu-small) it measures, in one run:

* amos-zoo: training iterations per second of ``SegmentationModule`` driven by a Lightning Trainer
  on synthetic patches held in memory (batch x patch as given), and the loss drop over those steps;
* the same MONAI network in a plain research-contributions style loop (``for x, y in loader: loss =
  DiceCELoss(net(x), y); loss.backward(); opt.step()``), same patch and batch: ratio printed;
* sliding-window inference seconds for one volume and peak memory (CUDA: max allocated; CPU: peak RSS).

Each model is measured in its own process (``--one MODEL``, started by the main process; ``--repeats`` rounds,
interleaved over the models, median and spread), so the peak-memory
column is that model's own (CUDA: max allocated; CPU: the process's peak RSS), not the maximum of the models
measured before it. On CUDA, ``--amp`` uses bf16 autocast. The data-wait fraction of the real data pipeline and
torch.compile are not measured yet.

    python benchmarks/bench_train.py --cpu-small --steps 5            # CPU, small patches (CI-sized machine)
    python benchmarks/bench_train.py --device cuda --steps 50 --amp    # GPU, recipe patch sizes
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from amos_zoo.models.registry import create_model

RECIPE = {  # model -> (patch, constructor overrides) at the recipe sizes
    "unet": ((96, 96, 96), {}),
    "unetr": ((96, 96, 96), {}),
    "swin_unetr": ((96, 96, 96), {"use_checkpoint": True}),
    "vnet": ((96, 96, 96), {}),
    "dynunet": (
        (160, 160, 64),
        {
            "strides": [[1, 1, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
            "kernel_size": [[3, 3, 1]] + [[3, 3, 3]] * 5,
        },
    ),
}
CPU_SMALL = {
    "unet": ((64, 64, 32), {"channels": (16, 32, 64, 128), "strides": (2, 2, 2), "num_res_units": 1}),
    "unetr": (
        (32, 32, 32),
        {"img_size": (32, 32, 32), "feature_size": 8, "hidden_size": 96, "mlp_dim": 192, "num_heads": 4},
    ),
    "swin_unetr": ((64, 64, 32), {"feature_size": 12}),
    "vnet": ((32, 32, 32), {}),
    "dynunet": (
        (64, 64, 32),
        {
            "filters": (16, 32, 64, 128),
            "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 1]],
            "kernel_size": [[3, 3, 3]] * 4,
        },
    ),
}


def _peak_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _batch(patch, batch, device, classes=16):
    x = torch.rand(batch, 1, *patch, device=device)
    y = torch.randint(0, classes, (batch, 1, *patch), device=device).float()
    return x, y


def plain_loop(name, patch, kw, batch, steps, device, amp) -> float:
    """Iterations per second of the research-contributions style loop."""
    from monai.losses import DiceCELoss

    net = create_model(name, out_channels=16, **kw).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    x, y = _batch(patch, batch, device)
    times = []
    for _ in range(steps + 1):
        t = time.perf_counter()
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return 1.0 / (sum(times[1:]) / steps)


def amos_zoo_loop(name, patch, kw, batch, steps, device, amp) -> tuple[float, float]:
    """Iterations per second of SegmentationModule under a Lightning Trainer, and the loss drop."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    from amos_zoo.train.module import SegmentationModule

    module = SegmentationModule(arch=name, arch_kwargs=kw, num_classes=16, roi_size=patch, scheduler="none", lr=1e-4)
    x, y = _batch(patch, batch, "cpu")
    items = [{"image": x[i], "label": y[i]} for i in range(batch)] * (steps + 1)
    data = DataLoader(items, batch_size=batch)

    class Timer(pl.Callback):
        def __init__(self):
            self.t, self.times, self.losses = 0.0, [], []

        def on_train_batch_start(self, *a):
            self.t = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, *a):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.t)
            self.losses.append(float(outputs["loss"]))

    timer = Timer()
    trainer = pl.Trainer(
        max_steps=steps + 1,
        accelerator="gpu" if device.startswith("cuda") else "cpu",
        devices=1,
        precision="bf16-mixed" if amp else "32-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(module, data)
    return 1.0 / (sum(timer.times[1:]) / steps), timer.losses[0] - timer.losses[-1]


def sliding_window_seconds(name, patch, kw, device, amp, volume=None) -> float:
    from monai.inferers import sliding_window_inference

    net = create_model(name, out_channels=16, **kw).to(device).eval()
    volume = volume or tuple(2 * p for p in patch)
    x = torch.rand(1, 1, *volume, device=device)
    with torch.inference_mode(), torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=amp):
        t = time.perf_counter()
        sliding_window_inference(x, patch, 4, net, overlap=0.5, mode="gaussian")
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t


def measure_one(name: str, args: argparse.Namespace) -> dict:
    """All columns of one model, measured in this process."""
    table = RECIPE if not args.cpu_small else CPU_SMALL
    patch, kw = table[name]
    ours, drop = amos_zoo_loop(name, patch, kw, args.batch, args.steps, args.device, args.amp)
    plain = plain_loop(name, patch, kw, args.batch, args.steps, args.device, args.amp)
    sw = sliding_window_seconds(name, patch, kw, args.device, args.amp)
    return {
        "name": name,
        "patch": list(patch),
        "ours": ours,
        "plain": plain,
        "drop": drop,
        "sw": sw,
        "peak_mb": _peak_mb(args.device),
    }


def _spread(values: list[float], digits: int) -> str:
    """Median (min-max) of the rounds."""
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main() -> None:
    import json
    import subprocess
    import sys

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--amp", action="store_true", help="bf16 autocast")
    parser.add_argument("--cpu-small", action="store_true", help="small patches and widths that fit a 2-core CPU")
    parser.add_argument("--models", default="unet,unetr,swin_unetr,vnet,dynunet")
    parser.add_argument("--out", default=None, help="write the markdown table here too")
    parser.add_argument("--repeats", type=int, default=3, help="rounds, each model in a fresh process per round")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: measure one model, print JSON
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(measure_one(args.one, args)), flush=True)
        return
    header = (
        "| model | patch | batch | amos-zoo it/s | plain MONAI loop it/s | ratio | loss drop | "
        "sliding window s (2x patch volume) | peak MB (this model's process) |"
    )
    lines = [
        f"device: {torch.cuda.get_device_name() if args.device.startswith('cuda') else 'cpu'}, "
        f"threads {torch.get_num_threads()}, amp {args.amp}; each model in its own process, "
        f"{args.repeats} interleaved rounds, median (min-max); peak MB the largest round's",
        "",
        header,
        "|---" * 9 + "|",
    ]
    passed = [a for a in sys.argv[1:] if not a.startswith("--models") and a != args.models]
    names = args.models.split(",")
    runs: dict[str, list[dict]] = {name: [] for name in names}
    failed: dict[str, str] = {}
    for round_ in range(args.repeats):  # rounds interleave the models: round 1 of each, then round 2...
        for name in names:
            if name in failed:
                continue
            done = subprocess.run(
                [sys.executable, __file__, *passed, "--one", name], capture_output=True, text=True, check=False
            )
            found = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode != 0 or not found:
                failed[name] = f"failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}"
                continue
            runs[name].append(json.loads(found[-1][len("RESULT ") :]))
            print(f"round {round_ + 1}/{args.repeats} {name}: {runs[name][-1]}", flush=True)
    for name in names:
        if name in failed:
            lines.append(f"| {name} | {failed[name]} |")
            continue
        rs = runs[name]
        ratios = [r["ours"] / r["plain"] for r in rs]
        lines.append(
            f"| {name} | {'x'.join(map(str, rs[0]['patch']))} | {args.batch} | {_spread([r['ours'] for r in rs], 3)} | "
            f"{_spread([r['plain'] for r in rs], 3)} | {_spread(ratios, 2)} | "
            f"{statistics.median(r['drop'] for r in rs):.3f} | {_spread([r['sw'] for r in rs], 2)} | "
            f"{max(r['peak_mb'] for r in rs):.0f} |"
        )
    text = "\n".join(lines)
    print(text)
    if args.out:
        from amos_zoo.io import write_text

        write_text(args.out, text + "\n")


if __name__ == "__main__":
    main()
