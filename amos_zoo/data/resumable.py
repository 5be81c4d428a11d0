"""Deterministic, resumable training data: the order of the samples is a function of (seed, epoch), and the
augmentation of every sample a function of (seed, epoch, the sample's position in the epoch's global order), so a
run resumed from a mid-epoch checkpoint sees exactly the batches an uninterrupted run would have seen.

Seeding from the position, not from the case: an epoch of ``epoch_iterations`` batches visits a case several
times (nnU-Net's 250 x 2 samples over fewer cases; N times more under N processes), and each visit gets its own
crop and augmentation, on every process (the processes' shards are disjoint slices of one global order).

The sampler yields ``(epoch, position, index, slot)`` keys (``slot``: the sample's position in its batch, which
nnU-Net's foreground oversampling depends on); the dataset wrapper re-seeds the random transforms from the key and
tells them the slot before producing the sample. On resume, the data module tells the sampler how many batches of
the current epoch were already trained (from the restored global step) and the sampler skips them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import torch
from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler

__all__ = ["EpochSeededSampler", "EpochSeededDataset", "sample_seed"]


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """A 31-bit seed for the sample at ``position`` of an epoch's global order (all processes together)."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{position}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


class EpochSeededSampler(DistributedSampler):
    """Shuffled order from (seed, epoch); shards across DDP processes; can skip already-trained batches.

    Args:
        dataset: the training dataset (its length is used).
        seed: run seed.
        batch_size: batch size per process (to convert skipped batches to samples).
        skip_batches: batches of ``skip_epoch`` to leave out (they were trained before a restart).
        skip_epoch: the epoch in which to skip.
        epoch_iterations: batches per epoch and process (nnU-Net's fixed 250-iteration epoch): the order is made of
            shuffled passes over the cases, as many as needed; None: one pass over the cases is an epoch.
        global_slots: a sample's batch position is its position in the global batch (this process's share comes
            after those of the lower ranks), for a global batch split over the processes (nnU-Net v2's oversampling
            rule over the global batch); False: its position in this process's batch.
    """

    def __init__(
        self,
        dataset,
        seed: int = 0,
        batch_size: int = 1,
        skip_batches: int = 0,
        skip_epoch: int = 0,
        epoch_iterations: int | None = None,
        global_slots: bool = False,
    ):
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        super().__init__(
            dataset,
            num_replicas=None if distributed else 1,
            rank=None if distributed else 0,
            shuffle=True,
            seed=seed,
            drop_last=False,
        )
        self.batch_size = batch_size
        self.skip_batches = skip_batches
        self.skip_epoch = skip_epoch
        self.epoch_iterations = epoch_iterations
        self.global_slots = global_slots

    def __len__(self) -> int:
        if self.epoch_iterations is None:
            return super().__len__()
        return self.epoch_iterations * self.batch_size

    def _fixed_length_order(self) -> list[int]:
        total = self.epoch_iterations * self.batch_size * self.num_replicas
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        order: list[int] = []
        while len(order) < total:
            order += torch.randperm(len(self.dataset), generator=generator).tolist()
        return order[:total][self.rank : total : self.num_replicas]

    def __iter__(self) -> Iterator[tuple[int, int, int, int]]:
        # permutation from seed + epoch, this process's shard: global positions rank, rank + N, rank + 2N...
        indices = self._fixed_length_order() if self.epoch_iterations else list(super().__iter__())
        first_slot = self.rank * self.batch_size if self.global_slots else 0
        keys = [
            (self.epoch, self.rank + n * self.num_replicas, i, first_slot + n % self.batch_size)
            for n, i in enumerate(indices)
        ]
        if self.epoch == self.skip_epoch and self.skip_batches:
            keys = keys[self.skip_batches * self.batch_size :]
        return iter(keys)


class EpochSeededDataset(Dataset):
    """Wrap a MONAI dataset so that ``ds[(epoch, position, index, slot)]`` re-seeds its random transforms from the
    sample's global position in the epoch and tells them the sample's batch position first."""

    def __init__(self, dataset, seed: int = 0, batch_size: int = 1) -> None:
        self.dataset = dataset
        self.seed = seed
        self.batch_size = batch_size
        # the transforms (nested chains included) that want the sample's batch position, found once
        self._slotted = [t for t in _nested(getattr(dataset, "transform", None)) if hasattr(t, "set_batch_slot")]

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, position, index, slot = key if isinstance(key, tuple) else (0, key, key, 0)
        transform = getattr(self.dataset, "transform", None)
        if transform is not None and hasattr(transform, "set_random_state"):
            transform.set_random_state(seed=sample_seed(self.seed, epoch, position))
        for t in self._slotted:
            t.set_batch_slot(slot, self.batch_size)
        return self.dataset[index]


def _nested(transform) -> Iterator:
    """A transform and every transform of its (nested) chains, in order."""
    yield transform
    for t in getattr(transform, "transforms", ()):
        yield from _nested(t)
