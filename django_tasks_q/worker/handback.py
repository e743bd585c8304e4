"""Messages a process holds but will not run now go back to the broker.

A consuming process reserves messages ahead (prefetch) and holds near ETAs and
rate-limited tasks. None of them may be lost or wait behind something else:

* a task runs long, or a warm stop began: the waiting ones are given back
  (re-published, so the hand-back does not count as a delivery), see
  :func:`give_back_waiting`;
* cold stop: the running ones (acks late) are requeued too, :func:`cold_stop`;
* the broker connection is lost: the broker already has them back,
  :func:`reconnect`;
* the engine exits: results are written and acked, the rest given back, :func:`close`.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from .. import states
from . import slots

if TYPE_CHECKING:
    from .engine import Engine
    from .jobs import Job

logger = logging.getLogger("django_tasks_q.worker")


def give_back(engine: Engine, job: Job) -> None:
    """Return a message that did not start, without counting it as a delivery."""
    if job.acked:
        return
    engine.consumer.republish(job.raw, job.queue)
    engine.ack(job)


def give_back_waiting(engine: Engine) -> int:
    """Hand every held and ready message back to the broker (engine lock held)."""
    jobs = list(engine.ready) + engine.holding.take_all()
    engine.ready.clear()
    for job in jobs:
        give_back(engine, job)
    if jobs:
        logger.debug("Gave %d waiting message(s) back to the broker", len(jobs))
    return len(jobs)


def cold_stop(engine: Engine) -> None:
    """Cold stop in this process: requeue what runs (acks late), record what is lost."""
    from ..exceptions import WorkerLostError

    engine.exit_reason = slots.EXIT_STOP
    for job in list(engine.active.values()):
        if not job.acked:
            engine.consumer.requeue(job.raw)
            job.acked = True
        else:
            exc = WorkerLostError(
                f"Cold shutdown interrupted task {job.name}[{job.id}] (acked early)"
            )
            engine.store.store_result(job.id, exc, states.LOST, request=job.request)
    engine.active.clear()


def reconnect(engine: Engine, exc: BaseException) -> None:
    """The connection is gone, and its unacked messages with it: forget them, connect again."""
    logger.error(
        "Lost the broker connection (%r); reconnecting. Unacked messages return to their queues.",
        exc,
    )
    engine.ready.clear()
    engine.holding.take_all()
    try:
        engine.buffer.take_ackable()  # results are written; their acks died with the channel
    except Exception:
        logger.exception("Could not write task results after losing the broker")
    engine.consumer.close()
    time.sleep(engine.backoff)
    engine.backoff = min(engine.backoff * 2, 5.0)
    engine.connect()


def close(engine: Engine) -> None:
    """The engine exits: write and ack what ran, give back what waits, close the connection."""
    try:
        engine.flush()
        give_back_waiting(engine)
    except Exception:
        logger.exception("Could not settle every message before exiting")
    engine.events.close()
    engine.consumer.close()
    engine.uninstall_alarm()
    if engine.slot is not None:
        engine.slot.set_state(slots.EXITING, exit_reason=engine.exit_reason)
    engine.finished.set()
