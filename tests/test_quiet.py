"""`amos-zoo` output is quiet: the known third-party noise (console.NOISE) is filtered unless --verbose."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import small_fit_args

from amos_zoo.console import NOISE

REPO = Path(__file__).resolve().parents[1]


def _fit(synth_root: Path, tmp_path: Path, *, verbose: bool) -> str:
    args = [
        *(["--verbose"] if verbose else []),
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


def test_fit_prints_none_of_the_known_noise_and_verbose_shows_it(synth_root, tmp_path):
    quiet = _fit(synth_root, tmp_path / "quiet", verbose=False)
    shown = [why for _kind, _where, message, why in NOISE if re.search(message, quiet)]
    assert not shown, f"noise that should be filtered was printed: {shown}\n{quiet[-3000:]}"
    assert "Traceback" not in quiet
    # the filter, not a quiet library, is what removed it: --verbose shows Lightning's tip again
    loud = _fit(synth_root, tmp_path / "loud", verbose=True)
    assert re.search(r"Tip: For seamless cloud", loud), loud[-3000:]
