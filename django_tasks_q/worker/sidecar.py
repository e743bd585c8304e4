"""The sidecar thread of an inline engine (prefork child, solo): acts while a task runs.

The consuming thread runs tasks itself, so while a task runs nobody would look
at the broker connection. Every :data:`INTERVAL` the sidecar:

* answers the supervisor's report requests (``inspect reserved/scheduled``) and
  follows its stop and cold-stop requests (prefork);
* writes buffered results and acks their messages when the running task takes
  longer than a moment;
* when the running task has run ``release_after`` seconds (or a stop was asked),
  stops receiving and hands the messages waiting in this process back to the
  broker, so other processes run them: prefetch never starves behind a long task.

It takes the engine's lock, which the consuming thread does not hold while a
task body runs, so the broker connection is never used by two threads at once.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import TYPE_CHECKING

from django.db import connections

from . import handback, slots
from .inspection import engine_report

if TYPE_CHECKING:
    from .engine import Engine

logger = logging.getLogger("django_tasks_q.worker")

INTERVAL = 0.2


class Sidecar(threading.Thread):
    def __init__(self, engine: Engine) -> None:
        super().__init__(name="tasks_q-sidecar", daemon=True)
        self.engine = engine

    def run(self) -> None:
        while not self.engine.finished.wait(INTERVAL):
            try:
                self.tick()
            except Exception:
                logger.exception("Worker sidecar failed; continuing")
            finally:
                connections.close_all()  # this thread's own database connections

    def tick(self) -> None:
        engine = self.engine
        slot = engine.slot
        if slot is not None:
            if slot.kill_signal() == slots.COLD:
                cold_exit(engine)
            request_id = slot.pending_report()
            if request_id:
                slot.write_report(request_id, engine_report(engine))
            if slot.stop_requested() and not engine.stopping:
                engine.request_stop()
        since = engine.busy_since
        if since is None:
            return
        long_task = time.monotonic() - since >= engine.config.release_after
        if not (long_task or engine.stopping or len(engine.buffer)):
            return
        if not engine.lock.acquire(timeout=0.5):
            return
        try:
            if engine.busy_since is None:
                return
            engine.flush()
            if long_task or engine.stopping:
                if not engine.consumer.paused:
                    engine.consumer.pause()
                    engine.consumer.drain(0.05)  # deliveries already on the wire
                handback.give_back_waiting(engine)
        finally:
            engine.lock.release()


def cold_exit(engine: Engine) -> None:
    """Cold stop: requeue the running (acks_late) and waiting messages, and exit now."""
    got = engine.lock.acquire(timeout=1.0)
    try:
        if got:
            jobs = list(engine.active.values()) + list(engine.ready) + engine.holding.take_all()
            for job in jobs:
                if not job.acked:
                    engine.consumer.requeue(job.raw)
            engine.consumer.close()
    except Exception:
        logger.debug("Cold stop could not requeue every message", exc_info=True)
    finally:
        if engine.slot is not None:
            engine.slot.set_state(slots.EXITING, exit_reason=slots.EXIT_STOP)
        os._exit(0)
