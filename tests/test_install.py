"""The package as a user installs it: a wheel built from the checkout, installed into a fresh virtual environment,
runs `amos-zoo reproduce --smoke` and a short quickstart from a folder outside the checkout (configs and protocol
cards are package data, nothing is read from the source tree)."""

from __future__ import annotations

import json
import site
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_runs_reproduce_smoke_and_quickstart_outside_the_checkout(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(REPO)],
        check=True,
        capture_output=True,
    )
    wheel = next(wheels.glob("amos_zoo-*.whl"))
    env_dir = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # the dependencies (torch, MONAI...) come from this environment's site-packages, appended after the fresh
    # environment's own; the editable amos-zoo of this environment is not seen (its finder is a .pth there)
    (Path(purelib) / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    amos_zoo = str(env_dir / "bin" / "amos-zoo")
    where = subprocess.run(
        [str(python), "-c", "import amos_zoo; print(amos_zoo.__file__)"],
        cwd=work,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert where.startswith(purelib), where  # the wheel's copy, not the checkout

    run = subprocess.run(
        [amos_zoo, "reproduce", "--task", "amos-ct", "--model", "unet", "--smoke", "--out", "runs"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    row = json.loads((work / "runs" / "amos-ct" / "btcv" / "unet" / "row.json").read_text())
    assert row["protocol"] == "btcv" and row["metrics"]["cases"] == 2 and row["steps"] == 4

    run = subprocess.run(
        [amos_zoo, "quickstart", "--out", "qs", "--steps", "4", "--n_train", "3", "--n_val", "2"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1].startswith("mean foreground Dice: ")
    assert (work / "qs" / "checkpoints" / "last.ckpt").is_file() and (work / "qs" / "row.json").is_file()
