"""amos-zoo reproduce --smoke for every model (the full fit -> predict -> evaluate -> row path), and the table."""

from __future__ import annotations

import json

import pytest
import yaml

from amos_zoo.cli.main import main
from amos_zoo.experiments.table import build_table, load_published


@pytest.mark.slow
@pytest.mark.parametrize("model", ["unet", "unetr", "swin_unetr", "vnet", "dynunet"])
def test_reproduce_smoke_and_table(model, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["reproduce", "--task", "amos-ctmr", "--model", model, "--smoke", "--out", str(runs)]) == 0
    row = json.loads((runs / "amos-ctmr" / model / "row.json").read_text())
    assert row["model"] == model and row["smoke"] and row["steps"] == 4
    assert row["metrics"]["cases"] == 3 and set(row["metrics"]["per_modality"]) == {"CT", "MRI"}
    assert 0.0 <= row["metrics"]["overall"]["dice"] <= 1.0 and len(row["metrics"]["per_organ_dice"]) == 15
    assert len(row["data_hash"]) == 64 and row["wall_time_s"] > 0 and row["peak_memory_mb"] > 0
    assert f"arch: {model}" in row["resolved_config"]
    assert len(list((runs / "amos-ctmr" / model / "predictions").glob("*.nii.gz"))) == 3

    assert main(["table", str(runs)]) == 0
    markdown = (runs / "table.md").read_text()
    assert f"amos-ctmr | {model} (smoke)" in markdown
    assert (runs / "table.png").stat().st_size > 0 and (runs / "table.csv").read_text().startswith("task,model")


def test_published_numbers_cite_sources_and_unknown_cells_stay_empty(tmp_path):
    entries = load_published()
    assert entries and all(e["citation"] and e["protocol"] and e["split"] for e in entries)
    swin = [e for e in entries if e["model"] == "swin_unetr" and e["task"] == "amos-ctmr"][0]
    assert swin["value"] == 0.8381 and swin["protocol"] == "5-fold cross-validation"
    row = {
        "task": "amos-ctmr",
        "model": "swin_unetr",
        "protocol": "official split: train on 'training', evaluate on 'validation'",
        "metrics": {"overall": {"dice": 0.80, "nsd": 0.7}, "per_modality": {}, "per_organ_dice": {}},
    }
    lines = build_table([row], entries)
    mine = [ln for ln in lines if ln["model"] == "swin_unetr"]
    assert {ln["published"] for ln in mine} == {0.8381, 0.880}
    assert all(ln["same_protocol"] is False for ln in mine)  # labelled as another protocol
    assert [ln for ln in mine if ln["published"] == 0.8381][0]["difference"] == pytest.approx(0.80 - 0.8381)
    winner = [ln for ln in lines if ln["model"] == "-"]
    assert winner and all(ln["dice"] is None for ln in winner)  # no run: our cells stay empty
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "entries": [
                    {
                        "model": "unet",
                        "published_name": "x",
                        "metric": "dice",
                        "value": 0.9,
                        "split": "s",
                        "protocol": "p",
                    }
                ]
            }
        )
    )
    with pytest.raises(ValueError, match="lacks citation"):
        load_published(bad)
