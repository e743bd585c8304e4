"""Messages a process holds in memory until a moment: near ETAs and rate-limited tasks.

Held messages stay unacknowledged, so a crash gives them back to the broker. The
number held is bounded (``max_held``); a worker that would hold more sends far
ETAs to the durable delayed store instead (DESIGN D4).
"""

from __future__ import annotations

import heapq
import itertools
import time
from datetime import UTC, datetime

from .jobs import Job


def seconds_until(when: datetime) -> float:
    return (when - datetime.now(UTC)).total_seconds()


class Holding:
    """A heap of ``(monotonic due time, job)``; ``pop_due`` never returns a job early."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._heap: list[tuple[float, int, Job]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    @property
    def full(self) -> bool:
        return len(self._heap) >= self.limit

    def hold(self, job: Job, delay: float, reason: str) -> None:
        job.held_reason = reason
        heapq.heappush(self._heap, (time.monotonic() + max(0.0, delay), next(self._seq), job))

    def next_due(self) -> float | None:
        """Seconds until the first held job is due (None when nothing is held)."""
        if not self._heap:
            return None
        return max(0.0, self._heap[0][0] - time.monotonic())

    def pop_due(self) -> list[Job]:
        due: list[Job] = []
        now = time.monotonic()
        while self._heap and self._heap[0][0] <= now:
            _, _, job = heapq.heappop(self._heap)
            eta = job.request.eta
            if job.held_reason == "eta" and eta is not None:
                left = seconds_until(eta)
                if left > 0:  # the wall clock says not yet: never run early
                    self.hold(job, left, "eta")
                    continue
            job.held_reason = None
            due.append(job)
        return due

    def take_all(self) -> list[Job]:
        jobs = [job for _, _, job in sorted(self._heap)]
        self._heap.clear()
        for job in jobs:
            job.held_reason = None
        return jobs

    def jobs(self, reason: str | None = None) -> list[Job]:
        return [j for _, _, j in sorted(self._heap) if reason is None or j.held_reason == reason]
