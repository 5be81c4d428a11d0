"""The GPU run (benchmarks/gpu_run.sh) on a CPU: `--check` (benchmarks/gpu_check.py's, in-process) resolves every
configuration it uses at full size, as `amos-zoo fit` resolves it (so a renamed protocol, recipe or setting fails here);
`--smoke` (the whole script: preflight, rows, table) produces every row and the rendered table; the preflight stops with
its reason; `make gpu-wheels` picks what the GPU machine lacks. No test here limits or asserts a duration."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _bench(name: str):
    """A script of benchmarks/ as a module."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    if spec.name in sys.modules:
        return sys.modules[spec.name]
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _run(mode: str, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    return subprocess.run(["bash", str(REPO / "benchmarks/gpu_run.sh"), mode], env=env, capture_output=True, text=True)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_check_resolves_every_gpu_configuration_at_full_size(tmp_path):
    from amos_zoo.protocols import get_protocol

    gpu_check = _bench("gpu_check")
    # what `benchmarks/gpu_run.sh --check` runs after the preflight (the preflight: the smoke run below), in this
    # process: the configurations resolve here as in a process of their own
    assert gpu_check.main(["--check", "--out", str(tmp_path), "--work", str(tmp_path / "work")]) == 0
    rows = _rows(tmp_path / "gpu_check.jsonl")
    checked = {(r["protocol"], r["model"]) for r in rows if r["kind"] == "check"}
    assert checked == set(gpu_check.CONFIGS)
    assert {r["kind"] for r in rows} == {"check", "check_fit"}
    for row in rows:
        assert row["status"] == "ok", row
        card = get_protocol(row["protocol"])
        # full size: the protocol card's own patch, batch and precision (not the smoke run's)
        assert row["patch"] == list(card.values("recipe")["patch_size"])
        assert row["batch_size"] == card.values("data").get("batch_size", 1)
        assert row["patches_per_step"] == row["batch_size"] * card.values("recipe").get("num_samples", 1)
        assert row["precision"] == card.values("trainer")["precision"]
        assert row["arch"] == row["model"]
        assert row["strategy"] == "DDPStrategy" and row["benchmark"] is True  # configs/base/gpu.yaml
        assert row["params"] > 10**6 if row["protocol"] != "quickstart" else row["params"] > 10**5
        full = row["output_shapes"][0]
        assert full[-3:] == row["patch"] and full[0] == row["patches_per_step"]
    by_config = {(r["protocol"], r["model"]): r for r in rows if r["kind"] == "check"}
    assert by_config[("nnunet-v2", "dynunet")]["outputs"] > 1  # deep supervision, as the protocol trains
    assert all(r["outputs"] == 1 for key, r in by_config.items() if key != ("nnunet-v2", "dynunet"))
    assert all(r["epoch_iterations"] == 100000 for r in by_config.values())  # the loader never drains mid-row
    swin = by_config[("btcv", "swin_unetr")]
    assert swin["unused_parameters"] == 0 and swin["ddp_ready"]
    # every configuration trains under gpu.yaml's DDP (the same --check rows: the check runs once per suite)
    assert [r for r in rows if not r["ddp_ready"]] == []
    fits = {r["wandb"]: r for r in rows if r["kind"] == "check_fit"}
    for fit in fits.values():
        assert fit["command"].startswith("amos-zoo fit --config ") and "--trainer.max_steps 100" in fit["command"]
    assert fits[True]["loggers"] == ["CSVLogger", "WandbLogger"]  # configs/base/gpu.yaml's
    assert fits[False]["loggers"] == ["CSVLogger"]  # the lent GPU machine has no wandb


def test_check_reports_a_configuration_that_does_not_resolve(tmp_path):
    gpu_check = _bench("gpu_check")
    args = ["--check", "--out", str(tmp_path), "--work", str(tmp_path / "work"), "--configs", "btcv/nonet"]
    rc = gpu_check.main(args)
    assert rc == 1
    (row,) = _rows(tmp_path / "gpu_check.jsonl")
    assert row["status"] == "error" and "nonet" in row["error"]


@pytest.mark.slow
def test_smoke_run_writes_every_row_and_the_table(tmp_path):
    from amos_zoo.protocols import get_protocol

    gpu_check = _bench("gpu_check")
    done = _run("--smoke", tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert (tmp_path / "device.txt").read_text().splitlines()[-1].startswith("preflight: ok")
    rows = _rows(tmp_path / "gpu_run.jsonl")
    errors = [r for r in rows if r["status"] != "ok"]
    assert not errors, errors
    kinds = [r["kind"] for r in rows]
    assert kinds[:2] == ["device", "data"] and kinds[-1] == "fit"
    configs = set(gpu_check.CONFIGS)
    for kind in ("train", "precision", "predict"):
        assert {(r["protocol"], r["model"]) for r in rows if r["kind"] == kind} == configs, kind
    for kind, config in (("workers", gpu_check.WORKERS_CONFIG), ("ddp", gpu_check.DDP_CONFIG)):
        assert [(r["protocol"], r["model"]) for r in rows if r["kind"] == kind] == [config]
    assert [(r["protocol"], r["model"]) for r in rows if r["kind"] == "cpu_stitch"] == [gpu_check.STITCH_CONFIG]
    for r in (r for r in rows if r["kind"] in ("train", "workers")):
        assert r["steps"] == gpu_check.SMOKE.measure_steps  # fixed step counts, no time box
        assert 0 < r["step_ms_p50"] <= r["step_ms_p90"]
        assert r["samples_per_s"] > 0 and 0 <= r["data_wait_fraction"] <= 1
        assert r["box_s"] is None
    assert next(r for r in rows if r["kind"] == "workers")["workers"] == 1  # more than the smoke's 0
    for r in (r for r in rows if r["kind"] == "precision"):
        assert r["fp32_ms"] > 0 and r["bf16_ms"] > 0 and r["repeats"] == 3
    for r in (r for r in rows if r["kind"] == "predict"):
        for stage in ("load_s", "preprocess_s", "network_fp32_s", "network_bf16_s", "resample_s", "write_s"):
            assert r[stage] >= 0, (r["model"], stage)
        tta = get_protocol(r["protocol"]).values("model").get("tta", False)  # amos-paper, nnunet-v2
        assert r["protocol_tta"] == tta and ("network_bf16_tta_s" in r) == tta
        assert r["scan_shape"] == list(gpu_check.SMOKE.scan_shape) and r["labels_present"] >= 1
    ddp = next(r for r in rows if r["kind"] == "ddp")
    assert ddp["strategy"] == "DDPStrategy" and ddp["ddp_over_single"] > 0
    fit = rows[-1]
    assert fit["rc"] == 0 and "last.ckpt" in fit["checkpoints"] and fit["steps"] == gpu_check.SMOKE.fit_steps
    assert (tmp_path / "fit.log").is_file()
    report = (tmp_path / "gpu_report.md").read_text()
    assert "A `--smoke` run on a CPU" in report
    for protocol, model in configs:
        assert report.count(f"| {protocol}/{model} |") >= 3  # training, precision and predict tables
    assert "## One real `amos-zoo fit" in report and "Errors" not in report


def test_preflight_stops_with_the_reason(tmp_path, monkeypatch):
    preflight = _bench("gpu_preflight")
    names = [m for m, _ in preflight.modules()]
    for module in ("monai", "nibabel", "jsonargparse", "docstring_parser", "typeshed_client", "pytorch_lightning"):
        assert module in names  # pyproject's dependencies, jsonargparse's signature extras
    assert "amos_zoo.train.cli" in names
    if not torch.cuda.is_available():
        out = tmp_path / "no_cuda.txt"
        assert preflight.preflight(out, cpu_ok=False) == 2
        assert out.read_text().splitlines()[-1].startswith("STOP: no CUDA device")
    monkeypatch.setattr(preflight, "modules", lambda: [("numpy", True), ("no_such_module_xyz", True)])
    out = tmp_path / "import.txt"
    assert preflight.preflight(out, cpu_ok=True) == 3
    lines = out.read_text().splitlines()
    assert "import numpy: ok" in "\n".join(lines)
    assert lines[-1].startswith("STOP: no_such_module_xyz did not import")


def test_gpu_wheels_carry_what_the_machine_lacks_at_the_tested_versions(tmp_path):
    import importlib.metadata as metadata

    from packaging.utils import canonicalize_name

    wheels = _bench("gpu_wheels")
    wanted = wheels.wanted()
    for name in ("monai", "nibabel", "jsonargparse", "docstring-parser", "typeshed-client", "pydicom", "pooch"):
        assert name in wanted, name
    for name in ("torch", "numpy", "pytorch-lightning", "scipy", "pyyaml", "wandb"):
        assert name not in wanted, name  # on the machine already, or not carried (wandb)
    for name, (version, _) in wanted.items():
        assert version == metadata.version(name)
    for req in wheels.project_requirements():  # pyproject's ranges admit every carried version
        name = canonicalize_name(req.name)
        if name in wanted:
            assert wanted[name][0] in req.specifier
    for name in ("monai", "nibabel"):
        (tmp_path / f"{name}-{wanted[name][0]}-py3-none-any.whl").write_bytes(b"x")
    (tmp_path / "pydicom-1.0-cp312-cp312-manylinux_2_17_x86_64.whl").write_bytes(b"x")
    problems = wheels.check(sorted(tmp_path.glob("*.whl")), wanted, max_mib=32)
    assert any("not a pure-Python wheel" in p for p in problems)
    assert any(p.startswith("jsonargparse: 0 wheels") for p in problems)
    assert not any(p.startswith(("monai", "nibabel")) for p in problems)


def test_results_page_is_rendered_from_the_committed_run(tmp_path):
    report = _bench("gpu_report")
    out = tmp_path / "gpu.md"
    report.main(["--out", str(out)])
    assert out.read_text() == (REPO / "benchmarks/results/gpu.md").read_text()  # render it again after a run
    if not report.DEFAULT_ROWS.is_file():
        assert "No GPU run exists yet" in out.read_text()


def test_rows_past_the_budget_are_recorded_as_skipped(tmp_path):
    from dataclasses import replace

    gpu_check = _bench("gpu_check")
    expensive = replace(gpu_check.SMOKE, estimate_s={kind: 10**6 for kind in ("train", "workers", "ddp", "fit")})
    failed = gpu_check.run_measurements(tmp_path, tmp_path / "work", expensive, budget_s=30.0)
    assert failed == 0
    rows = _rows(tmp_path / "gpu_run.jsonl")
    assert [r["kind"] for r in rows] == ["device", "data"] + ["train"] * 5 + ["workers", "ddp", "fit"]
    assert all(r["status"] == "skipped" and "budget left" in r["error"] for r in rows[2:])
