"""Deterministic, resumable training data: the order and the augmentation of every sample are a function
of (seed, epoch, index), so a run resumed from a mid-epoch checkpoint sees exactly the batches an
uninterrupted run would have seen.

The sampler yields ``(epoch, index)`` keys; the dataset wrapper re-seeds the random transforms from
the key before producing the sample. On resume, the data module tells the sampler how many batches of
the current epoch were already trained (from the restored global step) and the sampler skips them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import torch
from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler

__all__ = ["EpochSeededSampler", "EpochSeededDataset", "sample_seed"]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 31-bit seed for one sample of one epoch."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


class EpochSeededSampler(DistributedSampler):
    """Shuffled order from (seed, epoch); shards across DDP processes; can skip already-trained batches.

    Args:
        dataset: the training dataset (its length is used).
        seed: run seed.
        batch_size: batch size per process (to convert skipped batches to samples).
        skip_batches: batches of ``skip_epoch`` to leave out (they were trained before a restart).
        skip_epoch: the epoch in which to skip.
    """

    def __init__(self, dataset, seed: int = 0, batch_size: int = 1, skip_batches: int = 0, skip_epoch: int = 0):
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

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())  # permutation from seed + epoch, this process's shard
        if self.epoch == self.skip_epoch and self.skip_batches:
            indices = indices[self.skip_batches * self.batch_size :]
        return iter([(self.epoch, i) for i in indices])


class EpochSeededDataset(Dataset):
    """Wrap a MONAI dataset so that ``ds[(epoch, index)]`` re-seeds its random transforms first."""

    def __init__(self, dataset, seed: int = 0) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key if isinstance(key, tuple) else (0, key)
        transform = getattr(self.dataset, "transform", None)
        if transform is not None and hasattr(transform, "set_random_state"):
            transform.set_random_state(seed=sample_seed(self.seed, epoch, index))
        return self.dataset[index]
