"""What a pre-empted command reports (light: the CLI imports it without Lightning)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["PREEMPTED_EXIT_STATUS", "Preempted", "preempted_exit_status"]

#: exit status of a command whose training was pre-empted (checkpoint saved, nothing else done): sysexits.h's
#: EX_TEMPFAIL, "a temporary failure: the user is invited to retry"
PREEMPTED_EXIT_STATUS = 75


class Preempted(Exception):  # noqa: N818 - an outcome, not an error
    """Training stopped on a signal after saving ``checkpoint``; nothing after training (prediction, row) ran."""

    def __init__(self, checkpoint: Path, global_rank: int = 0) -> None:
        super().__init__(f"pre-empted: training saved {checkpoint} and stopped; run the same command again to resume")
        self.checkpoint = checkpoint
        self.global_rank = global_rank


def preempted_exit_status(global_rank: int) -> int:
    """The exit status of a pre-empted process: :data:`PREEMPTED_EXIT_STATUS` on global rank 0, the process a job
    reports; 0 on the others (Lightning's own DDP launcher kills every process when one of the processes it started
    exits with a failure, which could end rank 0 before it reports)."""
    return PREEMPTED_EXIT_STATUS if global_rank == 0 else 0
