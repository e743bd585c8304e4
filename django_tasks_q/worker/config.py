"""What a worker was asked to do: its constructor arguments, checked and completed."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

POOLS = ("prefork", "threads", "solo")
DEFAULT_NODE_NAME = "tasks_q@%h"


def default_concurrency() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def expand_hostname(template: str | None) -> str:
    """``name@%h`` -> ``name@host.example.com``; ``%n`` host part, ``%d`` domain, ``%p`` pid."""
    template = template or DEFAULT_NODE_NAME
    if "@" not in template:
        template = f"{template}@%h"
    fqdn = socket.gethostname()
    short, _, domain = fqdn.partition(".")
    return (
        template.replace("%h", fqdn)
        .replace("%n", short)
        .replace("%d", domain)
        .replace("%p", str(os.getpid()))
    )


@dataclass
class WorkerConfig:
    """Everything a worker runs with; ``None`` fields fall back to ``TASKS_Q``."""

    queues: list[str] = field(default_factory=list)
    concurrency: int = 1
    pool: str = "prefork"
    hostname: str = ""
    prefetch_multiplier: int = 16
    max_tasks_per_child: int | None = None
    max_memory_per_child: int | None = None  # KiB of resident memory
    autoscale: tuple[int, int] | None = None  # (max, min)
    time_limit: float | None = None
    soft_time_limit: float | None = None
    burst: bool = False
    events: bool = False
    without_heartbeat: bool = False
    shutdown_timeout: float = 60.0
    broker_url: str = ""
    purge: bool = False
    #: a task running longer than this hands its process's waiting messages to other processes
    release_after: float = 1.0
    #: most near-ETA / rate-limited messages one process holds in memory
    max_held: int = 1000

    @property
    def prefetch_count(self) -> int:
        """Messages one consuming process may hold unacknowledged beyond those it holds for ETAs."""
        per_process = 1 if self.pool in ("prefork", "solo") else self.concurrency
        return max(1, self.prefetch_multiplier * per_process)

    @property
    def max_processes(self) -> int:
        return max(self.concurrency, self.autoscale[0] if self.autoscale else 0)

    def validate(self) -> None:
        """Raise ValueError naming the argument that cannot work, and what would."""
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {', '.join(POOLS)}; got {self.pool!r}")
        if not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise ValueError(f"concurrency must be a positive integer, got {self.concurrency!r}")
        if not isinstance(self.prefetch_multiplier, int) or self.prefetch_multiplier < 1:
            raise ValueError(
                f"prefetch_multiplier must be a positive integer, got {self.prefetch_multiplier!r}"
            )
        for name in ("max_tasks_per_child", "max_memory_per_child"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        for name in ("time_limit", "soft_time_limit"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int | float) or value <= 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if self.autoscale is not None:
            high, low = self.autoscale
            if not (isinstance(high, int) and isinstance(low, int) and 0 <= low <= high and high >= 1):
                raise ValueError(
                    f"autoscale must be (max, min) with max >= min >= 0 and max >= 1, got {self.autoscale!r}"
                )
        if not self.queues:
            raise ValueError("queues must name at least one queue")
        if self.shutdown_timeout < 0:
            raise ValueError(f"shutdown_timeout must be >= 0 seconds, got {self.shutdown_timeout!r}")
