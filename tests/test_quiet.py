"""`amos-zoo` output is quiet: the known third-party noise (console.NOISE) is filtered unless --verbose (the quiet side:
every README command in tests/test_readme.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import small_fit_args

from amos_zoo.console import NOISE

REPO = Path(__file__).resolve().parents[1]


def _verbose_fit(synth_root: Path, tmp_path: Path) -> str:
    """`amos-zoo --verbose fit` of the small UNet for 2 steps in a new interpreter (warnings come once per process)."""
    args = [
        "--verbose",
        "fit",
        *small_fit_args(synth_root, tmp_path / "cache"),
        "--trainer.max_steps",
        "2",
        "--trainer.val_check_interval",
        "2",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(tmp_path / "runs"),
    ]
    tmp_path.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "AMOS_ZOO_VERBOSE"}
    code = "import sys; from amos_zoo.cli.main import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def test_verbose_fit_shows_the_noise_the_filter_removes(synth_root, tmp_path):
    """The filter, not a quiet library, is what keeps the commands quiet: with --verbose, Lightning's tip is printed
    again (tests/test_readme.py asserts that every README command, run as typed, prints none of console.NOISE)."""
    loud = _verbose_fit(synth_root, tmp_path / "loud")
    assert re.search(r"Tip: For seamless cloud", loud), loud[-3000:]
    assert [message for _kind, _where, message, _why in NOISE if message.startswith("Tip: For seamless cloud")]
