"""Lightning callbacks for cross-cutting concerns."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from amos_zoo.train.preempted import PREEMPTED_EXIT_STATUS, Preempted

__all__ = ["PREEMPTED_EXIT_STATUS", "AtomicCheckpointIO", "Preempted", "PreemptionCheckpoint", "preempted_checkpoint"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic where the checkpoint lives: the file is written beside its target
    under a name of this process (``.last.ckpt.<pid>.tmp``), flushed to disk and renamed over the target, so a run
    killed while saving leaves the previous checkpoint whole. (Lightning's own writer stages the file in the system
    temporary folder and moves it, which is a copy, not a rename, when that folder is on another file system, as
    node-local ``/tmp`` is beside a cluster's shared disk.)"""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        """Write ``checkpoint`` to ``path`` atomically (local and network file systems)."""
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(partial, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)


def preempted_checkpoint(trainer: pl.Trainer) -> Path | None:
    """The checkpoint a :class:`PreemptionCheckpoint` of ``trainer`` saved on a signal (None: not pre-empted).
    The same answer on every process (the save is decided over all of them)."""
    for callback in trainer.callbacks:
        if isinstance(callback, PreemptionCheckpoint) and callback.saved is not None:
            return callback.saved
    return None


class PreemptionCheckpoint(pl.Callback):
    """On SIGTERM or SIGINT (a cluster's pre-emption, Ctrl-C), save a checkpoint after the current step and stop.

    The checkpoint goes to ``dirpath/preempted.ckpt`` (default: the trainer's checkpoint folder, else its
    ``default_root_dir``), on every process together (written atomically by :class:`AtomicCheckpointIO` in the base
    configs); resume with ``--ckpt_path`` pointing at it (not at a ``last.ckpt`` Lightning may write as the stopped fit
    ends: resumed from that one, a run can take its next epoch one epoch late, measured on Lightning 2.6).
    :func:`preempted_checkpoint` tells whether it happened.

    Args:
        dirpath: folder for the checkpoint.
        filename: checkpoint file name.
    """

    def __init__(self, dirpath: str | None = None, filename: str = "preempted.ckpt") -> None:
        self.dirpath = dirpath
        self.filename = filename
        self.received: int | None = None
        self.saved: Path | None = None
        self._previous: dict[int, object] = {}

    def _handler(self, signum, frame) -> None:  # noqa: ARG002 - signal handler signature
        self.received = signum

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            if sig in self._previous:  # already installed (validation before training)
                continue
            try:
                self._previous[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread: leave signals alone
                pass

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self.on_train_start(trainer, pl_module)  # also during the sanity check, before training starts

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int, *args) -> None:
        """A signal during validation in ``fit`` ends this validation at once (a full AMOS validation can outlast
        a cluster's grace period); the checkpoint is saved when validation ends, on every process together."""
        if trainer.state.fn == "fit" and self.received is not None:
            pl_module.validation_cut_short = True
            raise StopIteration  # Lightning's evaluation loop ends on StopIteration raised inside a step's hooks

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._save_if_signalled(trainer)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._save_if_signalled(trainer)

    def _save_if_signalled(self, trainer: pl.Trainer) -> None:
        flagged = self.received is not None
        if trainer.world_size > 1:  # every process calls this at the same points, so the collective matches
            flagged = bool(trainer.strategy.reduce_boolean_decision(flagged, all=False))
        if not flagged or trainer.should_stop:
            return
        folder = self.dirpath
        if folder is None:
            cb = trainer.checkpoint_callback
            folder = cb.dirpath if cb is not None and cb.dirpath else trainer.default_root_dir
        path = Path(folder) / self.filename
        trainer.save_checkpoint(path)
        self.saved = path
        if trainer.is_global_zero:
            name = signal.Signals(self.received).name if self.received else "a signal"
            print(
                f"received {name}: saved {path} at step {trainer.global_step}; resume with --ckpt_path {path}",
                flush=True,
            )
        trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
