"""Shared fixtures: the synthetic dataset (session-wide) and the real fixtures in ../shared/data."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

#: this xdist worker's folder for its child processes' temporary files (below); None outside xdist
SCRATCH: Path | None = None

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one xdist worker per core: one compute thread each (torch's and OpenMP's), inherited by
    # the notebook kernels and DDP processes they start. Two workers x N threads on N cores oversubscribe the
    # CPU, and OpenMP's spinning threads then slow everything down several times.
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

    # What the notebooks' kernels, the GPU run's scripts and other child processes put in the temporary folder
    # (tempfile.mkdtemp, mktemp) goes to one folder per worker, removed when the worker ends (pytest_unconfigure):
    # a suite run leaves nothing in /tmp but pytest's own rotated tmp_path folders.
    import tempfile

    SCRATCH = Path(tempfile.mkdtemp(prefix=f"amos-zoo-tests-{os.environ['PYTEST_XDIST_WORKER']}-"))
    os.environ["AMOS_ZOO_TESTS_SYSTEM_TMPDIR"] = tempfile.gettempdir()  # tests/forked.py's fork server outlives us
    os.environ["TMPDIR"] = str(SCRATCH)
    tempfile.tempdir = None  # recomputed from TMPDIR


def pytest_unconfigure(config):
    if SCRATCH is not None:
        import shutil

        shutil.rmtree(SCRATCH, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real CT and SA-Med2D fixtures); tests skip when a clone does not have it."""
    if not (SHARED_DATA / "ct_example" / "image.nii.gz").is_file():
        pytest.skip(f"real-data fixtures not found at {SHARED_DATA} (only present beside the project checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A small synthetic AMOS dataset: 3 CT + 1 MRI training, 2 CT + 1 MRI validation, 1 test case."""
    from amos_zoo.data.synth import write_synthetic_dataset

    root = tmp_path_factory.mktemp("synth")
    return write_synthetic_dataset(root, n_train_ct=3, n_train_mr=1, n_val_ct=2, n_val_mr=1, n_test=1, seed=0)


SMALL_UNET = {"channels": (8, 16, 32), "strides": (2, 2), "num_res_units": 1}


def small_fit_args(data_root: Path, cache_dir: Path, task: str | None = None) -> list[str]:
    """`amos-zoo fit` options of a small CPU run: cpu.yaml, the quickstart protocol on the tiny recipe, SMALL_UNET,
    fp32 (the quickstart card's bf16-mixed depends on the CPU; the tests' small runs compute alike everywhere)."""
    import json

    args = ["--config", str(REPO / "configs/base/cpu.yaml"), "--protocol", "quickstart/unet"]
    args += ["--data.root", str(data_root), "--data.recipe", "tiny", *(["--data.task", task] if task else [])]
    args += ["--trainer.precision", "32-true"]
    return [*args, "--data.cache_dir", str(cache_dir), "--model.arch_kwargs", json.dumps(SMALL_UNET)]


#: LightningCLI options that keep a test's `amos-zoo fit` quiet and small (CPU, fp32, no logger/callbacks/files)
QUIET_CLI_TRAINER = [
    "--trainer.precision",
    "32-true",
    "--trainer.accelerator",
    "cpu",
    "--trainer.logger",
    "false",
    "--trainer.callbacks",
    "[]",
    "--trainer.enable_checkpointing",
    "false",
]


def small_module(dm, steps: int, arch: str = "unet", arch_kwargs: dict | None = None, **kw):
    """A SegmentationModule for the data module ``dm`` (the small UNet unless told otherwise)."""
    from amos_zoo.train.module import SegmentationModule

    return SegmentationModule(
        arch=arch,
        arch_kwargs=SMALL_UNET if arch_kwargs is None else arch_kwargs,
        in_channels=dm.num_channels,
        num_classes=dm.num_classes,
        roi_size=dm.patch_size,
        label_names=dm.label_names,
        lr=3e-3,
        sw_batch_size=kw.pop("sw_batch_size", 2),
        max_steps=steps,
        **kw,
    )


def cpu_trainer(steps: int, root: Path | None = None, **kw):
    """A quiet CPU Lightning trainer for ``steps`` optimiser steps."""
    import pytorch_lightning as pl

    options = {
        "accelerator": "cpu",
        "logger": False,
        "enable_progress_bar": False,
        "enable_checkpointing": False,
        "num_sanity_val_steps": 0,
        **kw,
    }
    if root is not None:
        options["default_root_dir"] = str(root)
    return pl.Trainer(max_steps=steps, **options)


def train_tiny_checkpoint(
    root: Path, out: Path, steps: int, task: str = "amos-ct", seed: int = 0, flip_prob: float = 0.0
) -> Path:
    """Train the small UNet on ``root`` (tiny recipe, CPU) for ``steps`` and save an amos-zoo checkpoint
    (``flip_prob``: mirror each axis with this probability in training, which allows mirroring TTA)."""
    import dataclasses

    import pytorch_lightning as pl

    from amos_zoo.data.datamodule import SegmentationDataModule

    pl.seed_everything(seed)
    dm = SegmentationDataModule(str(root), task=task, recipe="tiny", num_workers=0, cache_dir=str(out / "cache"))
    dm.recipe = dataclasses.replace(dm.recipe, flip_prob=flip_prob)
    model = small_module(dm, steps)
    trainer = cpu_trainer(steps, out, limit_val_batches=0, deterministic=True)
    trainer.fit(model, dm)
    path = out / "model.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="session")
def amos_checkpoint(synth_root, tmp_path_factory) -> Path:
    """The small UNet trained 400 steps on the synthetic AMOS CT cases with mirroring (a 'pretrained' AMOS model;
    mean Dice 0.36 on the 2 validation CT cases, measured once: tests/test_predict.py)."""
    import os

    from filelock import FileLock

    # trained once per test run: under xdist the workers share this run's temporary root (deterministic training,
    # so whichever worker trains it, the file is the same)
    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "amos_ckpt_shared"
    shared.mkdir(exist_ok=True)
    with FileLock(str(shared) + ".lock"):
        path = shared / "model.ckpt"
        if not path.is_file():
            trained = train_tiny_checkpoint(synth_root, shared / "train", steps=400, flip_prob=0.5)
            trained.rename(path)
    return path


#: the longest tests, longest first (measured with --durations; file::name): started first and, as xdist's load
#: scheduling deals the first tests out in turn, on alternate workers, so that the two xdist workers finish together
#: instead of one running a long test alone at the end
LONGEST_FIRST = (
    "test_readme.py::test_every_readme_command_and_python_example_runs_as_typed",
    "test_quickstart.py::test_quickstart_meets_its_promise_and_its_notebook_shows_the_run",
    "test_gpu_run.py::test_smoke_run_writes_every_row_and_the_table",
    "test_preemption.py::test_reproduce_preempted_in_the_second_fold_resumes_it_and_skips_the_first",
    "02_finetune.ipynb::02_finetune.ipynb",
)


#: notebooks/01_quickstart.ipynb shows a finished quickstart run: tests/test_quickstart.py executes it on the outputs of
#: the quickstart it has just run, so a session that runs that test does not execute the notebook a second time (it
#: would train the quickstart again: each end-to-end path runs once per suite)
QUICKSTART_NOTEBOOK = ("01_quickstart.ipynb", "test_quickstart.py::test_quickstart_meets_its_promise_and_its_notebook")


def pytest_collection_modifyitems(config, items):
    notebook, runner = QUICKSTART_NOTEBOOK
    if any(runner in item.nodeid for item in items):
        shown = [item for item in items if item.nodeid.endswith(f"{notebook}::{notebook}")]
        if shown:
            config.hook.pytest_deselected(items=shown)
            items[:] = [item for item in items if item not in shown]

    def rank(item) -> int:
        name = item.nodeid.rsplit("/", 1)[-1].split("[")[0]
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the rest keep their order


def _free_port_in(start: int, count: int) -> int:
    """A port of [start, start + count) that nothing listens on now."""
    import random
    import socket

    for port in random.Random().sample(range(start, start + count), 200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {start}..{start + count - 1}")


@pytest.fixture(autouse=True)
def _master_port_of_this_worker(monkeypatch):
    """DDP runs (gloo) of the two xdist workers take ports from disjoint ranges: Lightning's own free-port search
    (bind to port 0, close, listen later) let two workers' launches pick the same port at the same time."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    monkeypatch.setenv("MASTER_PORT", str(_free_port_in(21000 + 4000 * index, 4000)))


# --- the package as a user installs it ------------------------------------------------------------------------------


def declared_closure(requirements: list[str], extras: tuple[str, ...] = ()) -> dict[str, object]:
    """The distributions that ``requirements`` (Requires-Dist lines) pull in, transitively, markers evaluated for
    this interpreter: {canonical name: importlib.metadata distribution}. A requirement this environment does not
    have installed is an error naming it (the closure is what a resolver would install)."""
    import importlib.metadata as metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found: dict[str, object] = {}
    seen: set[tuple[str, str]] = set()
    todo = [(Requirement(r), extras) for r in requirements]
    while todo:
        req, active = todo.pop()
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in (*active, "")):
            continue
        name = canonicalize_name(req.name)
        for extra in ("", *sorted(req.extras)):
            if (name, extra) in seen:
                continue
            seen.add((name, extra))
            try:
                dist = found.get(name) or metadata.distribution(req.name)
            except metadata.PackageNotFoundError as missing:
                raise RuntimeError(f"{req} is required but not installed in the test environment") from missing
            found[name] = dist
            todo += [(Requirement(r), tuple(req.extras)) for r in dist.requires or []]
    return found


def link_distributions(dists, target: Path) -> None:
    """Make ``target`` a site directory holding only ``dists`` (each one's files, by symbolic links at the shallowest
    level no other distribution shares: namespace packages such as ``nvidia`` get real folders)."""
    from collections import defaultdict

    owners: dict[tuple[str, ...], set[int]] = defaultdict(set)
    files: dict[tuple[str, ...], Path] = {}
    for i, dist in enumerate(dists):
        for f in dist.files or []:
            parts = Path(str(f)).parts
            if not parts or parts[0] == ".." or "__pycache__" in parts:
                continue
            files[parts] = Path(dist.locate_file(f))
            for depth in range(1, len(parts) + 1):
                owners[parts[:depth]].add(i)
    linked: set[tuple[str, ...]] = set()
    for parts, source in sorted(files.items()):
        for depth in range(1, len(parts) + 1):
            prefix = parts[:depth]
            if prefix in linked:
                break
            if len(owners[prefix]) == 1 or depth == len(parts):
                link = target.joinpath(*prefix)
                link.parent.mkdir(parents=True, exist_ok=True)
                origin = source.parents[len(parts) - depth - 1] if depth < len(parts) else source
                if not link.exists():
                    link.symlink_to(origin)
                linked.add(prefix)
                break


@dataclass
class WheelEnv:
    """A fresh virtual environment with amos-zoo's wheel and only the distributions its metadata declares."""

    python: Path
    console: Path
    purelib: Path
    deps: Path
    requires: list[str]

    @property
    def env(self) -> dict[str, str]:
        """The environment of a user's shell: no PYTHONPATH (the suite may run with the checkout on it)."""
        return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.fixture(scope="session")
def wheel_env(tmp_path_factory) -> WheelEnv:
    """Build amos-zoo's wheel from the checkout and install it into a fresh virtual environment (no system site
    packages); its dependencies are the wheel's declared ``Requires-Dist`` closure, taken file by file from this
    environment (no network at test time), so a dependency missing from pyproject.toml fails an import. Built once
    per test run (shared by the xdist workers, like amos_checkpoint)."""
    import json
    import subprocess
    import sys
    import zipfile

    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "wheel_env"
    root.mkdir(exist_ok=True)
    python, console = root / "venv" / "bin" / "python", root / "venv" / "bin" / "amos-zoo"
    with FileLock(str(root) + ".lock"):
        done = root / "env.json"
        if not done.is_file():
            wheels = root / "wheels"
            subprocess.run(
                [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, REPO],
                check=True,
                capture_output=True,
            )
            wheel = next(wheels.glob("amos_zoo-*.whl"))
            with zipfile.ZipFile(wheel) as archive:
                meta = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
                lines = archive.read(meta).decode().splitlines()
            requires = [line.split(":", 1)[1].strip() for line in lines if line.startswith("Requires-Dist:")]
            subprocess.run([sys.executable, "-m", "venv", "--without-pip", root / "venv"], check=True)
            install = [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index"]
            clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # else pip sees the checkout's copy
            subprocess.run([*install, wheel], check=True, capture_output=True, env=clean)
            purelib = subprocess.run(
                [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                env=clean,
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            deps = root / "deps"
            link_distributions(declared_closure(requires).values(), deps)
            (Path(purelib) / "amos_zoo_declared_deps.pth").write_text(f"{deps}\n")
            done.write_text(json.dumps({"purelib": purelib, "requires": requires}))
        saved = json.loads((root / "env.json").read_text())
    return WheelEnv(python, console, Path(saved["purelib"]), root / "deps", saved["requires"])


def check_smoke_row(run_dir: Path, task: str, protocol: str, model: str) -> dict:
    """What `amos-zoo reproduce --task TASK --protocol PROTOCOL --model MODEL --smoke` must leave in ``run_dir``: the
    row of the official split (4 steps, every synthetic validation case scored per modality), its card and
    resolved config, one prediction per case."""
    import json

    import yaml

    row = json.loads((run_dir / "row.json").read_text())
    # the synthetic validation split: 2 CT + 1 MRI
    cases, modalities = {"amos-ct": (2, {"CT"}), "amos-ctmr": (3, {"CT", "MRI"}), "amos-mr": (1, {"MRI"})}[task]
    assert (row["model"], row["protocol"], row["task"], row["split_kind"]) == (model, protocol, task, "official")
    assert row["smoke"] and row["steps"] == 4 and row["metrics"]["cases"] == cases
    assert set(row["metrics"]["per_modality"]) == modalities
    card = row["card"]
    assert card["protocol"] == protocol and card["recipe"]["name"] == protocol
    resolved = yaml.safe_load(row["resolved_config"])
    assert resolved["model"]["arch"] == model and resolved["data"]["recipe"] == protocol
    assert len(list((run_dir / "predictions").glob("*.nii.gz"))) == cases
    return row


def check_official_smoke_run(run_dir: Path, task: str, protocol: str, model: str) -> dict:
    """:func:`check_smoke_row`, and what an official-split smoke row of the amos-paper and btcv protocols records
    (tests/test_reproduce.py's covering runs; README's `reproduce ... --model swin_unetr --protocol btcv` line)."""
    import yaml

    row = check_smoke_row(run_dir, task, protocol, model)
    if protocol == "amos-paper":
        resolved = yaml.safe_load(row["resolved_config"])
        assert resolved["model"]["optimizer"] == "adam" and resolved["model"]["amsgrad"] is True
        card = row["card"]
        assert card["recipe"]["spacing"] == [7.0, 7.0, 10.0] and card["recipe"]["intensity_stats"]  # planned stats
        assert card["tta"] is True and card["blend"] == "probabilities"
        assert card["recipe"]["normalization_order"] == "after-resampling"  # nnU-Net v1: resample, then normalise
    if task == "amos-mr":  # the AMOS fork's MR task: MRI z-score (its patch: smoke runs shrink it)
        assert row["card"]["recipe"]["mri_normalization"] == "zscore"
    # amos-paper and btcv predict with their best validation checkpoint, and the row says so
    assert row["checkpoint_choice"].startswith("best:") and row["checkpoint"].endswith("best.ckpt")
    assert row["empty_policy"] == "score"
    return row


def check_cross_validation_smoke_run(runs: Path, labelled_cases: int) -> None:
    """What `amos-zoo reproduce --task amos-ctmr --protocol nnunet-v2 --model nnunet --smoke --out RUNS` and then
    `amos-zoo table RUNS` leave (README's lines; run once per suite, in tests/test_readme.py): a row per fold, the
    row of their union, nnU-Net's checkpoint and empty-organ rules, and the table's cross-validation line."""
    import json

    run_dir = runs / "amos-ctmr" / "nnunet-v2" / "nnunet"
    folds = [json.loads((run_dir / f"fold_{k}" / "row.json").read_text()) for k in (0, 1)]
    row = json.loads((run_dir / "row.json").read_text())
    assert [f["fold"] for f in folds] == [0, 1] and row["folds"] == [0, 1]
    assert row["split_kind"] == "cross-validation" and all(f["split_kind"] == "cross-validation" for f in folds)
    # the two folds' validation cases partition the labelled cases, and the row scores their union
    val = [
        set(json.loads((run_dir / f"fold_{k}" / "evaluation" / "summary.json").read_text())["per_case"]) for k in (0, 1)
    ]
    assert not (val[0] & val[1]) and len(val[0] | val[1]) == labelled_cases == row["metrics"]["cases"]
    assert folds[0]["card"]["recipe"]["ct_normalization"] == "zscore"  # nnU-Net's Task 2: z-score every case
    # nnU-Net reports each fold with its final checkpoint and its own empty-organ rule
    assert all(f["checkpoint_choice"].startswith("final:") and f["checkpoint"].endswith("final.ckpt") for f in folds)
    assert row["checkpoint_choice"].startswith("final:") and row["fold_checkpoints"] == [f["checkpoint"] for f in folds]
    assert row["empty_policy"] == "nnunet" == folds[0]["empty_policy"]
    assert folds[0]["card"]["blend"] == "logits" and folds[0]["card"]["tta"] is True
    assert folds[0]["card"]["sw_tiling"] == "nnunet"
    assert row["card"]["arch_kwargs"]["deep_supervision"] is True
    markdown = (runs / "table.md").read_text()
    assert "| amos-ctmr | nnunet-v2 | nnunet (smoke) | cross-validation |" in markdown
    assert (runs / "table.png").stat().st_size > 0 and (runs / "table.csv").read_text().startswith("task,model")
