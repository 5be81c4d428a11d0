"""Many machines, simulated on one CPU: examples/torchrun.sh started twice, as node 0 and node 1 (NODE_RANK), one gloo
process each, both filling one shared preprocessing cache; and the cache's writes, atomic where the entries live."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from conftest import small_fit_args

from amos_zoo.data.cache import allow_cache_types
from amos_zoo.data.datamodule import SegmentationDataModule

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_example_as_two_nodes_trains_and_validates_every_case_once(synth_root, tmp_path):
    run = tmp_path / "run"
    options = [*small_fit_args(synth_root, tmp_path / "cache", "amos-ctmr"), "--trainer.strategy", "ddp"]
    options += ["--trainer.max_steps", "3", "--trainer.val_check_interval", "3", "--model.sw_batch_size", "2"]
    options += ["--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(run)]
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "NNODES": "2",
        "GPUS_PER_NODE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(_free_port()),
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    nodes = [
        subprocess.Popen(
            [str(REPO / "examples" / "torchrun.sh"), *options],
            env={**env, "NODE_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    for node, output in zip(nodes, outputs):
        assert node.returncode == 0, output[-4000:]

    saved = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 3
    rows = [r for f in sorted(run.rglob("metrics.csv")) for r in csv.DictReader(f.open())]
    cases = [float(r["val/cases"]) for r in rows if r.get("val/cases")]
    assert cases == [3.0]  # amos-ctmr's 3 validation cases over the two nodes, each scored once
    # both nodes' local rank 0 filled the one cache at once: every entry whole, no partial file left
    entries = list((tmp_path / "cache").rglob("*.pt"))
    assert len(entries) == 7  # 4 training + 3 validation cases
    allow_cache_types()
    for entry in entries:
        torch.load(entry, weights_only=True, map_location="cpu")
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_cache_writes_beside_its_entries_and_leaves_other_writers_files(synth_root, tmp_path, monkeypatch):
    """No system temporary folder (a node-local /tmp that is full or absent; MONAI stages entries there and copies
    them onto the shared disk): entries are still written, each renamed into place; another writer's partial file
    is left alone, and a corrupt entry is replaced by a whole one."""
    cache = tmp_path / "cache"
    dm = SegmentationDataModule(str(synth_root), task="amos-ct", recipe="tiny", num_workers=0, cache_dir=str(cache))
    cache.mkdir(parents=True)
    other_writer = cache / ".0123456789abcdef.pt.node1.4242.cafe0123.tmp"
    other_writer.write_bytes(b"another node is writing this entry")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-temporary-folder"))
    dm.prepare_data(workers=1, progress=False)
    entries = sorted(cache.glob("*.pt"))
    assert len(entries) == 5  # 3 training + 2 validation CT cases
    whole = {p: torch.load(p, weights_only=True) for p in entries}
    assert other_writer.read_bytes() == b"another node is writing this entry"

    entries[0].write_bytes(b"corrupt")
    dm.setup("fit")
    import warnings

    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        for ds in (dm.train_ds, dm.val_ds):
            for item in ds.data:
                ds._cachecheck(item)
    rebuilt = torch.load(entries[0], weights_only=True)
    assert rebuilt.keys() == whole[entries[0]].keys()
    assert sorted(p.name for p in cache.glob(".*.tmp")) == [other_writer.name]
