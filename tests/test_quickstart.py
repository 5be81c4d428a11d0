"""The README's promise: the quickstart reaches mean foreground Dice >= 0.85 on the synthetic validation cases; its
notebook (notebooks/01_quickstart.ipynb) shows that run."""

from __future__ import annotations

import json

import pytest
from conftest import REPO

from amos_zoo.cli.main import main
from amos_zoo.protocols import get_protocol


@pytest.mark.slow
def test_quickstart_meets_its_promise_and_its_notebook_shows_the_run(tmp_path, capsys, monkeypatch):
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

    # the notebook on this finished run (the suite trains the quickstart once; notebooks/conftest.py leaves the
    # notebook to this test): every cell runs, its own assertions included, and it reports this run's Dice
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("AMOS_ZOO_QUICKSTART_RUN", str(out))
    notebook = nbformat.read(REPO / "notebooks" / "01_quickstart.ipynb", as_version=4)
    NotebookClient(notebook, timeout=None, resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", []))
    steps = json.loads((out / "row.json").read_text())["steps"]
    assert steps == get_protocol("quickstart").values("trainer")["max_steps"]
    assert f"{steps} training steps, 6 validation cases, mean foreground Dice {dice:.4f}" in printed


def _drawn_figure(monkeypatch, draw) -> object:
    """The matplotlib figure a viz function draws (captured before it is saved and closed)."""
    import amos_zoo.viz as viz

    figures = []
    monkeypatch.setattr(viz, "_save", lambda fig, path: figures.append(fig) or path)
    draw()
    [fig] = figures
    fig.canvas.draw()
    return fig


def test_box_plot_panels_leave_room_for_the_organ_names(monkeypatch, tmp_path):
    from amos_zoo.data.labels import AMOS_LABELS
    from amos_zoo.viz import metric_boxplot

    names = [AMOS_LABELS.display_name(i) for i in AMOS_LABELS.foreground_ids]
    data = {m: {n: [0.5, 0.7, 0.9] for n in names} for m in ("dice", "nsd")}
    fig = _drawn_figure(monkeypatch, lambda: metric_boxplot(data, tmp_path / "box.png"))
    left, right = fig.axes
    renderer = fig.canvas.get_renderer()
    right_labels = [t.get_window_extent(renderer) for t in right.get_yticklabels()]
    assert [t.get_text() for t in right.get_yticklabels()] == names
    # every organ name of the right panel lies right of the left panel's frame (no overlap)
    assert min(box.x0 for box in right_labels) > left.get_window_extent(renderer).x1


def test_overlay_legend_names_each_organ_with_its_contour_colour(monkeypatch, tmp_path):
    import numpy as np
    from matplotlib.colors import to_rgba

    from amos_zoo.viz import overlay_png

    truth = np.zeros((20, 20, 5), np.uint8)
    truth[2:8, 2:8, 2], truth[10:16, 10:16, 2] = 1, 6  # spleen and liver in slice 2
    pred = truth.copy()
    names = {1: "spleen", 6: "liver"}
    fig = _drawn_figure(
        monkeypatch, lambda: overlay_png(np.zeros(truth.shape), truth, pred, tmp_path / "o.png", names=names)
    )
    legend = fig.axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["1 spleen", "6 liver"]
    # each label draws its predicted (solid) then its reference (dashed) contour
    contour_colours = [to_rgba(c.get_edgecolor()[0]) for c in fig.axes[0].collections[0::2]]
    assert [to_rgba(h.get_color()) for h in legend.legend_handles] == contour_colours


@pytest.mark.parametrize("native", [True, False])
def test_quickstart_trains_in_bf16_only_where_the_cpu_computes_it_natively(native, monkeypatch, tmp_path):
    """The card's bf16-mixed where the CPU has AVX512-BF16 or AMX; fp32 elsewhere (emulated bf16 is slower)."""
    import amos_zoo.experiments.quickstart as quickstart
    import amos_zoo.experiments.run as run

    class Stop(Exception):
        pass

    fit_args = []

    def run_experiment(args, *_, **__):
        fit_args.extend(args)
        raise Stop  # the fit's arguments are all this test needs

    monkeypatch.setattr(run, "run_experiment", run_experiment)
    monkeypatch.setattr(quickstart, "_native_cpu_bf16", lambda: native)
    assert get_protocol("quickstart").values("trainer")["precision"] == "bf16-mixed"
    with pytest.raises(Stop):
        quickstart.run_quickstart(quickstart.QuickstartConfig(out=tmp_path, n_train=1, n_val=1, progress=False))
    assert ("--trainer.precision" in fit_args) is not native
    if not native:
        assert fit_args[fit_args.index("--trainer.precision") + 1] == "32-true"
