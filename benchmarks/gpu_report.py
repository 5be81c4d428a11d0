"""Render the GPU run's JSON lines (benchmarks/gpu_check.py) as the tables a user reads.

    python benchmarks/gpu_report.py                                     # benchmarks/results/gpu.md from the
                                                                        # committed run (or "no GPU run yet")
    python benchmarks/gpu_report.py OUT/gpu_run.jsonl --device OUT/device.txt --out OUT/gpu_report.md

Without a rows file the page says that no GPU run exists yet and how to make one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DEFAULT_ROWS = RESULTS / "gpu_run" / "gpu_run.jsonl"
DEFAULT_DEVICE = RESULTS / "gpu_run" / "device.txt"
DEFAULT_PAGE = RESULTS / "gpu.md"

HOW = (
    'How to make one: README, section "The GPU run" (`make gpu-wheels`, then `benchmarks/gpu_run.sh` on the lent '
    "machine with `.whl` carried); commit its `gpu_run.jsonl` and `device.txt` under `benchmarks/results/gpu_run/` "
    "and run `python benchmarks/gpu_report.py` to render this page."
)


def read_rows(path: Path) -> list[dict]:
    """The rows of a JSON-lines file; a torn last line (a run killed mid-write) is left out."""
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def _f(value: Any, digits: int = 1, scale: float = 1.0, suffix: str = "") -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, int | float):
        return f"{value * scale:.{digits}f}{suffix}"
    return str(value)


def _name(row: dict) -> str:
    return f"{row.get('protocol', '')}/{row.get('model', '')}"


def _table(header: list[str], lines: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(cells) + " |" for cells in lines] + [""]


def render(rows: list[dict], device_text: str | None = None) -> str:
    """The markdown page of one run's rows."""
    if not rows:
        return "\n".join(
            [
                "# GPU run",
                "",
                "No GPU run exists yet: no GPU has been lent to this project's development sessions so far. This",
                "page shows the run's tables (step time, samples/s, memory, data wait per model; predict timings) once",
                "`benchmarks/gpu_run.sh` has run on a GPU; CPU `--smoke` runs of the same script are not results.",
                "",
                HOW,
                "",
            ]
        )
    by_kind: dict[str, list[dict]] = {}
    for row in rows:
        by_kind.setdefault(row.get("kind", "?"), []).append(row)
    device = (by_kind.get("device") or [{}])[0]
    mode = device.get("mode", "gpu")
    lines = [f"# GPU run on {device.get('device', 'unknown device')}", ""]
    if mode != "gpu":
        note = f"**A `--{mode}` run on a CPU with tiny sizes: it checks the script, its numbers are not results.**"
        lines += [note, ""]
    lines += [
        f"torch {device.get('torch', '?')} (CUDA {device.get('cuda', '-')}), {device.get('cpus', '?')} cores, "
        f"{device.get('date', '')}. Rows: benchmarks/gpu_check.py (its docstring says what each measures).",
        "",
    ]
    train = by_kind.get("train", []) + by_kind.get("workers", [])
    if train:
        lines += ["## Training step per model (the protocols' settings, gpu.yaml's loader and cuDNN autotuning)", ""]
        cells = []
        for r in train:
            patch = "x".join(map(str, r.get("patch") or [])) + f" x {r.get('patches_per_step', '?')}"
            cells.append(
                [
                    _name(r) + (" (more workers)" if r.get("kind") == "workers" else ""),
                    patch,
                    _f(r.get("precision")),
                    _f(r.get("workers"), 0),
                    _f(r.get("step_ms_p50")),
                    _f(r.get("step_ms_p90")),
                    _f(r.get("samples_per_s"), 2),
                    _f(r.get("data_wait_fraction"), 1, 100, " %"),
                    _f(r.get("peak_allocated_gb"), 2),
                    _f(r.get("peak_reserved_gb"), 2),
                    f"{r.get('steps', '-')} in {_f(r.get('timed_s'))} s",
                    r.get("status", "?"),
                ]
            )
        header = ["protocol/model", "patch x patches", "precision", "workers", "step p50 ms", "step p90 ms"]
        header += ["samples/s", "data wait", "peak alloc GB", "peak reserved GB", "timed steps", "status"]
        lines += _table(header, cells)
    if by_kind.get("precision"):
        lines += ["## bf16 autocast against fp32 (one training step, same batch, 3 interleaved repeats)", ""]
        cells = [
            [
                _name(r),
                f"{_f(r.get('fp32_ms'))} ({_f(r.get('fp32_spread_ms'))})",
                f"{_f(r.get('bf16_ms'))} ({_f(r.get('bf16_spread_ms'))})",
                _f(r.get("bf16_speedup"), 2),
                r.get("status", "?"),
            ]
            for r in by_kind["precision"]
        ]
        lines += _table(["protocol/model", "fp32 ms (spread)", "bf16 ms (spread)", "bf16 speed-up", "status"], cells)
    if by_kind.get("ddp"):
        lines += ["## gpu.yaml's DDPStrategy on 1 GPU against a single device", ""]
        cells = [
            [
                _name(r),
                _f(r.get("single_step_ms_p50")),
                _f(r.get("ddp_step_ms_p50")),
                _f(r.get("ddp_over_single"), 3),
                r.get("status", "?"),
            ]
            for r in by_kind["ddp"]
        ]
        lines += _table(["protocol/model", "single step p50 ms", "DDP step p50 ms", "DDP / single", "status"], cells)
    predict = by_kind.get("predict", [])
    if predict:
        scan = next((r.get("scan_shape") for r in predict if r.get("scan_shape")), None)
        shape = "x".join(map(str, scan)) if scan else "?"
        lines += [f"## Predict one {shape} scan with the just-trained network (seconds per stage)", ""]
        cells = []
        for r in predict:
            cells.append(
                [
                    _name(r),
                    "x".join(map(str, r.get("network_grid") or [])) or "-",
                    _f(r.get("load_s"), 2),
                    _f(r.get("preprocess_s"), 2),
                    _f(r.get("network_fp32_s"), 2),
                    _f(r.get("network_bf16_s"), 2),
                    "skipped (budget)" if r.get("network_bf16_tta_skipped") else _f(r.get("network_bf16_tta_s"), 2),
                    _f(r.get("resample_s"), 2),
                    _f(r.get("write_s"), 2),
                    _f(r.get("network_bf16_peak_allocated_gb"), 2),
                    _f(r.get("network_bf16_tta_peak_allocated_gb"), 2),
                    r.get("status", "?"),
                ]
            )
        header = ["protocol/model", "network grid", "load", "preprocess", "network fp32", "network bf16"]
        header += ["bf16 + mirror TTA", "resample", "write", "peak GB bf16", "peak GB TTA", "status"]
        lines += _table(header, cells)
        note = "Load is timed once (every model reads the same file). TTA: `-` where the protocol predicts without it."
        lines += [note, ""]
    if by_kind.get("cpu_stitch"):
        lines += ["## Windows stitched in CPU memory (the out-of-memory fallback, forced)", ""]
        cells = [
            [
                _name(r),
                _f(r.get("cpu_stitch_bf16_s"), 2),
                _f(r.get("cpu_stitch_bf16_peak_allocated_gb"), 2),
                r.get("status"),
            ]
            for r in by_kind["cpu_stitch"]
        ]
        lines += _table(["protocol/model", "network bf16 s", "peak GB", "status"], cells)
    if by_kind.get("fit"):
        lines += ["## One real `amos-zoo fit --config configs/base/gpu.yaml` through the command line", ""]
        cells = [
            [
                _name(r),
                _f(r.get("steps"), 0),
                _f(r.get("fit_s")),
                _f(r.get("rc"), 0),
                ", ".join(r.get("checkpoints") or []) or "-",
                _f(r.get("val_mean_dice"), 3),
                r.get("status", "?"),
            ]
            for r in by_kind["fit"]
        ]
        header = ["protocol/model", "steps", "seconds (all)", "exit", "checkpoints", "val mean Dice", "status"]
        lines += _table(header, cells)
        lines += [f"Command: `{by_kind['fit'][0].get('command', '')}`", ""]
    problems = [r for r in rows if r.get("status") not in ("ok", None)]
    if problems:
        lines += ["## Errors and skipped rows", ""]
        lines += [f"- {r.get('kind')} {_name(r)}: {r.get('status')}: {str(r.get('error', ''))[:300]}" for r in problems]
        lines.append("")
    total = sum(r.get("wall_s") or 0 for r in rows)
    lines += [f"Rows took {total:.0f} s in all.", ""]
    if device_text:
        lines += ["## Device (preflight)", "", "```", device_text.strip(), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", nargs="?", default=str(DEFAULT_ROWS), help="gpu_run.jsonl")
    parser.add_argument("--device", default=None, help="device.txt of the same run")
    parser.add_argument("--out", default=str(DEFAULT_PAGE))
    args = parser.parse_args(argv)
    rows_path = Path(args.rows)
    rows = read_rows(rows_path) if rows_path.is_file() else []
    device_path = Path(args.device) if args.device else (DEFAULT_DEVICE if rows_path == DEFAULT_ROWS else None)
    device_text = device_path.read_text() if rows and device_path is not None and device_path.is_file() else None
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(render(rows, device_text))
    print(f"wrote {args.out} ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
