"""What a pre-empted command reports (light: the CLI imports it without Lightning)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["PREEMPTED_EXIT_STATUS", "Preempted"]

#: exit status of a command whose training was pre-empted (checkpoint saved, nothing else done): sysexits.h's
#: EX_TEMPFAIL, "a temporary failure: the user is invited to retry"
PREEMPTED_EXIT_STATUS = 75


class Preempted(Exception):  # noqa: N818 - an outcome, not an error
    """Training stopped on a signal after saving ``checkpoint``; nothing after training (prediction, row) ran."""

    def __init__(self, checkpoint: Path) -> None:
        super().__init__(f"pre-empted: training saved {checkpoint} and stopped; run the same command again to resume")
        self.checkpoint = checkpoint
