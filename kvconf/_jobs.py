"""Outcome of the server's scheduled jobs (snapshot, export), for metrics and logs.

The loops that run the jobs record each run here; the API's metrics read it
when scraped (age and outcome of the last run of each job). One process, one
table: with several API workers each worker reports its own runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

__all__ = ["JOBS", "JobStatus", "record"]


@dataclass(slots=True)
class JobStatus:
    """The last run of one scheduled job (wall-clock seconds since the epoch)."""

    last_run: float = 0.0
    last_success: float = 0.0
    ok: bool | None = None
    runs: int = 0
    failures: int = 0


#: Job name ("snapshot", "export") → its status in this process.
JOBS: dict[str, JobStatus] = {}


def record(job: str, ok: bool) -> None:
    """Note that ``job`` just ran, successfully or not."""
    status = JOBS.setdefault(job, JobStatus())
    now = time.time()
    status.last_run = now
    status.ok = ok
    status.runs += 1
    if ok:
        status.last_success = now
    else:
        status.failures += 1
