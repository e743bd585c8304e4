"""The start-up banner: what this worker consumes, with which settings (no passwords)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import __version__
from ..conf import settings
from ..messaging.connection import mask_url
from ..registry import tasks

if TYPE_CHECKING:
    from .worker import Worker


def text(worker: Worker) -> str:
    config = worker.config
    backend = settings.RESULT_BACKEND
    if isinstance(backend, str):
        backend = mask_url(backend)
    if config.pool == "prefork":
        processes = f"{config.concurrency} processes (prefork)"
        if config.autoscale:
            processes += f", autoscale {config.autoscale[1]}..{config.autoscale[0]}"
    elif config.pool == "threads":
        processes = f"{config.concurrency} threads (threads)"
    else:
        processes = "1 (solo)"
    limits = []
    if config.max_tasks_per_child:
        limits.append(f"max {config.max_tasks_per_child} tasks")
    if config.max_memory_per_child:
        limits.append(f"max {config.max_memory_per_child} KiB")
    if config.soft_time_limit or config.time_limit:
        limits.append(f"time limits soft={config.soft_time_limit} hard={config.time_limit}")
    names = tasks.names()
    lines = [
        f"django-tasks-q {__version__} worker {worker.hostname}",
        f"  broker:       {mask_url(config.broker_url)}",
        f"  results:      {backend}",
        f"  concurrency:  {processes}",
        f"  prefetch:     {config.prefetch_count} per consumer",
        f"  queues:       {', '.join(config.queues)}",
        f"  events:       {'on' if config.events else 'off'}",
    ]
    if limits:
        lines.append(f"  limits:       {', '.join(limits)}")
    if config.burst:
        lines.append("  mode:         burst (exits when the queues are empty)")
    lines.append(f"  tasks ({len(names)}):")
    lines.extend(f"    . {name}" for name in names)
    return "\n".join(lines)


def show(worker: Worker) -> None:
    print(text(worker), file=worker.stdout, flush=True)
