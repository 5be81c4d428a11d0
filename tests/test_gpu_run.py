"""benchmarks/gpu_run.sh --smoke: the lent-GPU script runs on a CPU with tiny settings and leaves its results in
$OUT, one file per check, each with its exit status."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_run_smoke_writes_every_result(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks/gpu_run.sh"), "--smoke"], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "cuda False" in (out / "device.txt").read_text() or "cuda True" in (out / "device.txt").read_text()
    report = (out / "gpu_check.md").read_text()
    for model in ("unet", "unetr", "swin_unetr", "vnet", "dynunet"):
        assert f"| {model} |" in report, model
    assert "rc=0" in (out / "gpu_check.txt").read_text()
