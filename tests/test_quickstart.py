"""The README's promise: the quickstart reaches mean foreground Dice >= 0.85 on the synthetic validation cases."""

from __future__ import annotations

import json

import pytest

from amos_zoo.cli.main import main


@pytest.mark.slow
def test_quickstart_meets_its_promise(tmp_path, capsys):
    out = tmp_path / "qs"
    assert main(["quickstart", "--out", str(out)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert lines[-1].startswith("mean foreground Dice: ")
    dice = float(lines[-1].split(":")[1])
    assert dice >= 0.85  # the promise in README "Quick start"
    assert any(line.startswith("[amos-zoo quickstart] wall time ") for line in lines)
    summary = json.loads((out / "evaluation" / "summary.json").read_text())
    assert summary["all"]["overall"]["dice"] == pytest.approx(dice, abs=1e-4)
    assert summary["all"]["cases"] == 6
    for path in (
        "dice_per_organ.png",
        "overlay.png",
        "checkpoints/last.ckpt",
        "evaluation/per_case.csv",
        "data/dataset.json",
    ):
        assert (out / path).stat().st_size > 0, path
    assert list((out / "logs").rglob("metrics.csv"))
    assert len(list((out / "predictions").glob("*.nii.gz"))) == 6
