"""Run independent jobs in worker processes with a progress bar (shared by evaluate and check-data)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from tqdm.auto import tqdm

__all__ = ["map_with_progress"]


def map_with_progress(
    fn: Callable[[Any], Any], jobs: Sequence[Any], workers: int | None = None, desc: str = "", progress: bool = True
) -> Iterable[Any]:
    """Yield ``fn(job)`` for every job, in order; ``workers`` processes (default: all cores, 1 = in this process)."""
    workers = workers or min(len(jobs), os.cpu_count() or 1) or 1
    with tqdm(total=len(jobs), desc=desc, unit="case", disable=not progress) as bar:
        if workers <= 1:
            for job in jobs:
                yield fn(job)
                bar.update()
            return
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(fn, jobs):
                yield result
                bar.update()
