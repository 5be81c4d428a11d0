"""amos-zoo reproduce --smoke: the full fit -> predict -> evaluate -> row path for a set of runs that, with README's
reproduce lines (run and checked in tests/test_readme.py: the cross-validation row of a cross-validation protocol
and the table), covers every protocol, every model and both AMOS tasks; the table (differences only against numbers
of the same protocol and split)."""

from __future__ import annotations

import pytest
import yaml
from conftest import REPO, check_official_smoke_run

from amos_zoo.cli.main import main
from amos_zoo.experiments.table import build_table, load_published

#: (task, protocol, model): every published protocol, every 3D model, every task
COVERING = [
    ("amos-mr", "amos-paper", "dynunet"),
    ("amos-ctmr", "amos-paper", "unetr"),
    ("amos-ctmr", "btcv", "vnet"),
]
#: the runs of README's `reproduce` lines, which run and are checked the same way in tests/test_readme.py (each
#: end-to-end path once per suite): btcv swin_unetr (check_official_smoke_run), nnunet-v2's cross-validation and its
#: table line (check_cross_validation_smoke_run), and btcv unet (check_smoke_row)
README_RUNS = {
    ("amos-ct", "btcv", "swin_unetr"): "reproduce --task amos-ct --model swin_unetr --protocol btcv --data",
    ("amos-ctmr", "nnunet-v2", "nnunet"): "reproduce --task amos-ctmr --model nnunet --protocol nnunet-v2 --data",
    ("amos-ct", "btcv", "unet"): "reproduce --task amos-ct --model unet --smoke",
}


def test_the_covering_set_covers():
    from amos_zoo.experiments.reproduce import SMOKE_SETTINGS

    runs = COVERING + list(README_RUNS)
    assert {m for _, _, m in runs} == set(SMOKE_SETTINGS)
    assert {p for _, p, _ in runs} == {"amos-paper", "btcv", "nnunet-v2"}
    assert {t for t, _, _ in runs} == {"amos-ct", "amos-ctmr", "amos-mr"}
    readme = (REPO / "README.md").read_text()
    assert all(f"amos-zoo {line}" in readme for line in README_RUNS.values())


@pytest.mark.slow
@pytest.mark.parametrize("task, protocol, model", COVERING)
def test_reproduce_smoke_official_split(task, protocol, model, tmp_path):
    runs = tmp_path / "runs"
    assert (
        main(["reproduce", "--task", task, "--protocol", protocol, "--model", model, "--smoke", "--out", str(runs)])
        == 0
    )
    check_official_smoke_run(runs / task / protocol / model, task, protocol, model)


def test_table_compares_only_same_protocol_and_split(tmp_path):
    entries = load_published()
    nnunet = [e for e in entries if e["model"] == "nnunet" and e["task"] == "amos-ctmr"][0]
    assert (
        nnunet["value"] == 0.8864 and nnunet["protocol"] == "nnunet-v2" and nnunet["split_kind"] == "cross-validation"
    )

    def row(protocol, split_kind, model="nnunet", dice=0.85):
        return {
            "task": "amos-ctmr",
            "model": model,
            "protocol": protocol,
            "split_kind": split_kind,
            "metrics": {"overall": {"dice": dice, "nsd": 0.7}, "per_modality": {}, "per_organ_dice": {}},
        }

    same = [ln for ln in build_table([row("nnunet-v2", "cross-validation")], entries) if ln["published"] == 0.8864]
    assert same[0]["comparison"] == "" and same[0]["difference"] == pytest.approx(0.85 - 0.8864)
    other = build_table([row("nnunet-v2", "official")], entries)
    assert [ln["comparison"] for ln in other if ln["published"] == 0.8864] == ["(different split)"]
    other = build_table([row("btcv", "official")], entries)
    assert [ln["comparison"] for ln in other if ln["published"] == 0.8864] == ["(different protocol and split)"]
    swin = build_table([row("nnunet-v2", "cross-validation", "swin_unetr", 0.80)], entries)
    labels = {ln["published"]: ln["comparison"] for ln in swin if ln["model"] == "swin_unetr" and ln["dice"]}
    assert labels == {0.8381: "(different protocol)"}  # 3D UX-Net's 0.880 is a Task 1 number: not compared
    winner = [ln for ln in build_table([], entries) if ln["model"] == "-"]
    assert winner and all(ln["dice"] is None for ln in winner)  # no run: our cells stay empty

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump({"entries": [{"model": "unet", "published_name": "x", "metric": "dice", "value": 0.9}]})
    )
    with pytest.raises(ValueError, match="lacks split, split_kind, protocol_description, citation, protocol"):
        load_published(bad)


def test_a_finished_run_is_reused_only_when_scored_as_asked():
    """A rerun of `reproduce` reuses a finished fold only when it was scored as the command asks: the checkpoint
    requested (not the one used: 'best' falls back to the final one when validation never saved one), the
    empty-organ rule and the regions; otherwise the fold runs again."""
    from amos_zoo.experiments.reproduce import _scored_alike
    from amos_zoo.metrics.regions import _TASK_REGIONS

    brats = _TASK_REGIONS["Task01_BrainTumour"]
    row = {"checkpoint_requested": "best", "checkpoint_choice": "final: ...", "empty_policy": "nnunet"}
    assert _scored_alike(row, {"checkpoint": "best", "empty_policy": "nnunet", "regions": None})
    assert not _scored_alike(row, {"checkpoint": "final", "empty_policy": "nnunet", "regions": None})
    assert not _scored_alike(row, {"checkpoint": "best", "empty_policy": "score", "regions": None})
    assert not _scored_alike(row, {"checkpoint": "best", "empty_policy": "nnunet", "regions": brats})
    scored_on = {r.name: list(r.labels) for r in brats}
    assert _scored_alike(
        {**row, "scored_on": scored_on}, {"checkpoint": "best", "empty_policy": "nnunet", "regions": brats}
    )
