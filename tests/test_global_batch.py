"""The batch under several processes: nnU-Net v2 splits its plan's (global) batch over the GPUs and sets each GPU's
foreground oversampling from its samples' positions in the global batch; research-contributions and nnU-Net v1 keep
the batch per GPU. amos-zoo does what each protocol's source does, and refuses a split it cannot honour."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from amos_zoo.data.datamodule import SegmentationDataModule
from amos_zoo.data.resumable import EpochSeededSampler
from amos_zoo.protocols import get_protocol


def _nnunet_v2_rank(global_batch: int, world: int, rank: int, monkeypatch) -> tuple[int, list[bool]]:
    """nnU-Net v2's own per-rank batch and forced-foreground samples (nnUNetTrainer._set_batch_size_and_oversample
    and nnUNetDataLoader._oversample_last_XX_percent)."""
    from nnunetv2.training.nnUNetTrainer import nnUNetTrainer as trainer_module

    monkeypatch.setattr(trainer_module.dist, "get_world_size", lambda: world)
    monkeypatch.setattr(trainer_module.dist, "get_rank", lambda: rank)
    fake = SimpleNamespace(
        is_ddp=True, configuration_manager=SimpleNamespace(batch_size=global_batch), oversample_foreground_percent=0.33
    )
    trainer_module.nnUNetTrainer._set_batch_size_and_oversample(fake)
    b, p = fake.batch_size, fake.oversample_foreground_percent
    return b, [not j < round(b * (1 - p)) for j in range(b)]


@pytest.mark.parametrize(("global_batch", "world"), [(2, 1), (2, 2), (4, 2), (6, 3), (8, 4), (12, 4)])
def test_split_global_batch_equals_nnunet_v2_per_rank(global_batch, world, monkeypatch, capsys):
    for rank in range(world):
        batch, forced = _nnunet_v2_rank(global_batch, world, rank, monkeypatch)
        sampler = EpochSeededSampler(list(range(5)), batch_size=batch, epoch_iterations=2, global_slots=True)
        sampler.num_replicas, sampler.rank = world, rank  # this process's view of a `world`-process run
        slots = [key[3] for key in sampler][:batch]
        # amos-zoo's nnU-Net sampling forces slot s of the global batch B when s >= round(B * (1 - 0.33))
        ours = [not s < round(global_batch * (1 - 0.33)) for s in slots]
        assert ours == forced, (rank, slots)
    capsys.readouterr()  # nnU-Net prints each worker's settings


def test_global_batch_not_divisible_by_the_processes_is_refused(synth_root):
    dm = SegmentationDataModule(str(synth_root), recipe="tiny", batch_size=3, global_batch=True)
    assert dm.batch_layout(1) == (3, 3) and dm.batch_layout(3) == (1, 3)
    with pytest.raises(ValueError, match="batch_size 3 is the global batch .* 2 processes cannot share it evenly"):
        dm.batch_layout(2)
    per_process = SegmentationDataModule(str(synth_root), recipe="tiny", batch_size=3)
    assert per_process.batch_layout(2) == (3, 6)


def test_protocol_cards_follow_their_sources_on_several_gpus():
    assert get_protocol("nnunet-v2").setting("data.global_batch").value is True
    assert get_protocol("amos-paper").setting("data.global_batch").value is False
    assert get_protocol("btcv").setting("data.global_batch").value is False
