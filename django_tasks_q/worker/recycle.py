"""When a prefork child should make way for a fresh one: too many tasks, too much memory."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from . import slots

if TYPE_CHECKING:
    from .config import WorkerConfig

logger = logging.getLogger("django_tasks_q.worker")


def rss_kib() -> int:
    """This process's resident memory in KiB."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except (OSError, ValueError, IndexError):
        import psutil

        return psutil.Process().memory_info().rss // 1024


def recycle_reason(config: WorkerConfig, processed: int) -> int | None:
    """The exit reason if this process should be replaced now, else None (between tasks)."""
    if config.max_tasks_per_child and processed >= config.max_tasks_per_child:
        logger.info(
            "Process %d ran %d tasks (max-tasks-per-child): recycling", os.getpid(), processed
        )
        return slots.EXIT_MAX_TASKS
    if config.max_memory_per_child:
        used = rss_kib()
        if used > config.max_memory_per_child:
            logger.info(
                "Process %d uses %d KiB, over max-memory-per-child=%d: recycling",
                os.getpid(), used, config.max_memory_per_child,
            )  # fmt: skip
            return slots.EXIT_MAX_MEMORY
    return None
