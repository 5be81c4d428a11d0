"""Preflight of the GPU run: what the machine is and whether everything the run needs imports, written to a file
first thing; it stops (non-zero exit, the reason as the file's last line) at missing CUDA or a failed import, in
the few seconds the imports take, before any data is made.

    python benchmarks/gpu_preflight.py --out OUT/device.txt            # on the GPU machine: CUDA required
    python benchmarks/gpu_preflight.py --out OUT/device.txt --cpu-ok   # --smoke / --check on a CPU

The modules checked are the runtime dependencies in pyproject.toml (so a dependency added there is checked here)
and the amos-zoo modules the run imports. ``wandb`` is optional: without it the run's `amos-zoo fit` logs to CSV.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import re
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: distribution name -> module names, where they differ (jsonargparse[signatures] needs its two extras)
IMPORT_NAMES = {
    "pytorch-lightning": ["pytorch_lightning"],
    "pyyaml": ["yaml"],
    "pillow": ["PIL"],
    "jsonargparse": ["jsonargparse", "docstring_parser", "typeshed_client"],
    "dynamic-network-architectures": ["dynamic_network_architectures"],
    "scikit-image": ["skimage"],
}
OPTIONAL = {"wandb": "absent: the run's `amos-zoo fit` replaces gpu.yaml's W&B logger by CSV alone"}
AMOS_ZOO_MODULES = ["amos_zoo", "amos_zoo.train.cli", "amos_zoo.train.module", "amos_zoo.infer.predictor"]


def dependencies(pyproject: Path = REPO / "pyproject.toml") -> list[str]:
    """Distribution names of pyproject's runtime dependencies (extras and versions stripped)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: the dependencies list read as text
        block = pyproject.read_text().split("dependencies = [", 1)[1].split("]", 1)[0]
        deps = re.findall(r'"([^"]+)"', block)
    else:
        with open(pyproject, "rb") as f:
            deps = tomllib.load(f)["project"]["dependencies"]
    return [re.split(r"[\[<>=!~; ]", d.strip(), maxsplit=1)[0].lower() for d in deps]


def modules() -> list[tuple[str, bool]]:
    """(module, required) for every dependency and the amos-zoo modules, in that order."""
    out = []
    for dist in dependencies():
        for name in IMPORT_NAMES.get(dist, [dist.replace("-", "_")]):
            out.append((name, dist not in OPTIONAL))
    return out + [(m, True) for m in AMOS_ZOO_MODULES]


def _meminfo() -> dict[str, float]:
    info = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            if key in ("MemTotal", "MemAvailable"):
                info[key] = int(value.split()[0]) / 2**20  # kB -> GiB
    return info


def preflight(out: Path, cpu_ok: bool) -> int:
    """Write the machine's description and every import's outcome to ``out``; 0 when the run can go ahead."""
    start = time.perf_counter()
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        print(line, flush=True)
        out.write_text("\n".join(lines) + "\n")

    out.parent.mkdir(parents=True, exist_ok=True)
    say(f"python: {platform.python_version()} ({sys.executable})")
    say(f"cores: {os.cpu_count()} (usable {len(os.sched_getaffinity(0))})")
    mem = _meminfo()
    say(f"ram: {mem.get('MemTotal', 0):.1f} GiB total, {mem.get('MemAvailable', 0):.1f} GiB available")
    for where in ("/tmp", str(REPO)):
        say(f"free disk {where}: {shutil.disk_usage(where).free / 2**30:.1f} GiB")
    try:
        import torch
    except Exception as err:  # noqa: BLE001 - the reason is the result
        say(f"STOP: torch does not import ({type(err).__name__}: {err})")
        return 3
    say(f"torch: {torch.__version__} (CUDA build {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()})")
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        say(
            f"gpu: {torch.cuda.get_device_name(0)}, {props.total_memory / 2**30:.1f} GiB, compute capability "
            f"{props.major}.{props.minor}, {props.multi_processor_count} multiprocessors, "
            f"{torch.cuda.device_count()} device(s)"
        )
    else:
        say("gpu: none (torch.cuda.is_available() is False)")
        if not cpu_ok:
            say(f"STOP: no CUDA device; the GPU run needs one (after {time.perf_counter() - start:.1f} s)")
            return 2
    failed = []
    for name, required in modules():
        try:
            module = importlib.import_module(name)
            say(f"import {name}: ok {getattr(module, '__version__', '')}".rstrip())
        except Exception as err:  # noqa: BLE001 - every import's outcome is reported
            if required:
                failed.append(name)
                say(f"import {name}: FAILED ({type(err).__name__}: {err})")
            else:
                say(f"import {name}: {OPTIONAL.get(name, 'absent (optional)')}")
    seconds = time.perf_counter() - start
    if failed:
        say(f"STOP: {', '.join(failed)} did not import (carry them: make gpu-wheels) (after {seconds:.1f} s)")
        return 3
    say(f"preflight: ok in {seconds:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/gpu_run/device.txt")
    parser.add_argument("--cpu-ok", action="store_true", help="carry on without CUDA (--smoke, --check)")
    args = parser.parse_args(argv)
    return preflight(Path(args.out), args.cpu_ok)


if __name__ == "__main__":
    sys.exit(main())
