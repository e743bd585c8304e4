"""What remote control asks of a worker: ``inspect`` answers and ``control`` actions.

:class:`~django_tasks_q.worker.Worker` mixes this in; ``control_handlers.py``
calls these methods, in the prefork supervisor (which reads its children's
shared-memory slots) or beside an in-process engine (solo, threads).
"""

from __future__ import annotations

import os
import resource
import signal
import time
from typing import TYPE_CHECKING, Any

from ..exceptions import NotRegistered
from ..messaging.connection import mask_url
from ..registry import tasks

if TYPE_CHECKING:
    from .config import WorkerConfig
    from .engine import Engine
    from .ratelimits import TaskTable


class RemoteControlled:
    """The ``inspect`` and ``control`` side of a worker (attributes set by ``Worker``)."""

    config: WorkerConfig
    hostname: str
    scheme: str
    started: float
    table: TaskTable
    pool: Any  # PreforkPool
    engine: Engine | None
    store: Any

    def queues(self) -> list[str]:
        if self.pool is not None:
            return self.pool.shared.queues()
        if self.engine is not None:
            return list(self.engine.consumer.queues)
        return list(self.config.queues)

    def concurrency(self) -> int:
        if self.pool is not None:
            return self.pool.target
        if self.engine is not None and self.engine.executor is not None:
            return self.engine.executor.size
        return 1 if self.config.pool == "solo" else self.config.concurrency

    def _reports(self) -> list[dict[str, Any]]:
        if self.pool is not None:
            return self.pool.reports()
        return [engine_report(self.engine)] if self.engine is not None else []

    def active_requests(self) -> list[dict[str, Any]]:
        if self.pool is not None:
            return self.pool.active()
        return engine_report(self.engine)["active"] if self.engine is not None else []

    def reserved_requests(self) -> list[dict[str, Any]]:
        return [item for report in self._reports() for item in report.get("reserved", [])]

    def scheduled_requests(self) -> list[dict[str, Any]]:
        return [item for report in self._reports() for item in report.get("scheduled", [])]

    def registered_tasks(self) -> list[str]:
        return sorted(tasks.keys())

    def active_queues(self) -> list[dict[str, Any]]:
        return [
            {
                "name": q,
                "exchange": {"name": q, "type": "direct"},
                "routing_key": q,
                "durable": True,
            }
            for q in self.queues()
        ]

    def brief_stats(self) -> dict[str, Any]:
        if self.pool is not None:
            processed, active = self.pool.processed(), len(self.pool.active())
        elif self.engine is not None:
            processed, active = self.engine.processed, len(self.engine.active)
        else:
            processed = active = 0
        return {
            "processed": processed,
            "active": active,
            "pool": self.config.pool,
            "pid": os.getpid(),
        }

    def stats(self) -> dict[str, Any]:
        totals: dict[str, int] = {}
        for report in self._reports():
            for name, count in report.get("totals", {}).items():
                totals[name] = totals.get(name, 0) + count
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "hostname": self.hostname,
            "pid": os.getpid(),
            "uptime": int(time.time() - self.started),
            "total": totals,
            "pool": {
                "implementation": self.config.pool,
                "max-concurrency": self.concurrency(),
                "processes": self.pool.pids() if self.pool is not None else [os.getpid()],
                "max-tasks-per-child": self.config.max_tasks_per_child,
                "max-memory-per-child": self.config.max_memory_per_child,
                "autoscale": list(self.config.autoscale) if self.config.autoscale else None,
                "timeouts": [self.config.soft_time_limit, self.config.time_limit],
            },
            "prefetch_count": self.config.prefetch_count,
            "broker": {"url": mask_url(self.config.broker_url), "transport": self.scheme},
            "queues": self.queues(),
            "rusage": {"maxrss": usage.ru_maxrss, "utime": usage.ru_utime, "stime": usage.ru_stime},
        }

    def terminate_task(self, task_id: str, signal_name: str | int = "SIGTERM") -> bool:
        signum = (
            int(getattr(signal, str(signal_name), signal_name))
            if not isinstance(signal_name, int)
            else signal_name
        )
        if self.pool is not None:
            return self.pool.terminate(task_id, signum)
        executor = self.engine.executor if self.engine is not None else None
        if executor is not None and task_id in executor.running:
            self.store.mark_as_revoked(task_id, reason="terminated")
            return executor.terminate(task_id)
        if self.engine is not None and task_id in self.engine.active:
            raise NotImplementedError(
                "the solo pool cannot stop the task it is running; use prefork"
            )
        return False

    def set_rate_limit(self, task_name: str, rate: Any) -> None:
        if task_name not in tasks:
            raise NotRegistered(task_name)
        self.table.set_rate(task_name, rate)

    def set_time_limit(self, task_name: str, soft: float | None, hard: float | None) -> None:
        if task_name not in tasks:
            raise NotRegistered(task_name)
        self.table.set_time_limits(task_name, soft, hard)

    def pool_grow(self, n: int = 1) -> None:
        self._resize(n)

    def pool_shrink(self, n: int = 1) -> None:
        self._resize(-n)

    def _resize(self, delta: int) -> None:
        if self.pool is not None:
            self.pool.resize(self.pool.target + delta)
        elif self.engine is not None and self.engine.executor is not None:
            self.engine.executor.resize(self.engine.executor.size + delta)
        else:
            raise NotImplementedError(
                "the solo pool has one process and no threads; use prefork or threads"
            )

    def add_consumer(self, queue: str) -> None:
        if self.pool is not None:
            self.pool.shared.set_queues(list(dict.fromkeys([*self.pool.shared.queues(), queue])))
        elif self.engine is not None:
            self.engine.post(lambda engine: engine.follow_queues([*engine.consumer.queues, queue]))

    def cancel_consumer(self, queue: str) -> None:
        if self.pool is not None:
            self.pool.shared.set_queues([q for q in self.pool.shared.queues() if q != queue])
        elif self.engine is not None:
            self.engine.post(
                lambda engine: engine.follow_queues(
                    [q for q in engine.consumer.queues if q != queue]
                )
            )


def engine_report(engine: Engine) -> dict[str, Any]:
    """What one consuming process runs, holds and waits on (safe from any thread)."""
    active = list(engine.active.values())
    ready = list(engine.ready)
    return {
        "pid": os.getpid(),
        "active": [{**j.summary(), "worker_pid": os.getpid()} for j in active],
        "reserved": [j.summary() for j in ready + engine.holding.jobs("rate")],
        "scheduled": [
            {
                "eta": j.request.eta.isoformat() if j.request.eta else None,
                "priority": j.request.delivery_info.get("priority"),
                "request": j.summary(),
            }
            for j in engine.holding.jobs("eta")
        ],
        "processed": engine.processed,
        "totals": dict(engine.totals),
        "queues": list(engine.consumer.queues),
    }
