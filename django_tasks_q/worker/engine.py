"""One process's consume-and-execute loop: where a worker process spends its life.

An :class:`Engine` owns one broker connection (``consumer.py``), receives raw
messages (``intake.py``), holds near ETAs and rate-limited tasks (``holding.py``),
runs each task through the tracer ``execution.execute`` — the one place a task
function is called — and settles the message (``outcomes.py``).

``mode="inline"`` runs tasks in this thread (a prefork child, the solo pool);
``mode="threads"`` runs them on a thread pool (``pools/threads.py``) while this
thread consumes and acks. The engine's lock guards the broker connection and
its in-memory queues; the executing thread does not hold it while a task runs,
so the sidecar thread can hand waiting messages to other processes when a task
runs long (no starving behind a long task), answer the supervisor, and write
buffered results.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from queue import Empty, SimpleQueue
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from django.db import close_old_connections

from .. import states
from ..conf import settings
from ..events import EventDispatcher
from ..exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from ..execution import Outcome, execute
from ..results import get_store
from ..serialization import accepted_types
from . import handback, intake, keptmessage, outcomes, slots
from .consumer import BrokerConsumer
from .holding import Holding
from .jobs import Job
from .recycle import recycle_reason
from .resultbuffer import ResultBuffer
from .timelimits import AlarmLimits, limits_for

if TYPE_CHECKING:
    from .config import WorkerConfig
    from .ratelimits import TaskTable

logger = logging.getLogger("django_tasks_q.worker")

AMQP_SCHEMES = frozenset({"amqp", "amqps", "pyamqp"})
#: longest a consuming thread blocks on the broker before looking around
IDLE_WAIT = 1.0
#: the same in burst mode, which checks the queues whenever nothing arrived
BURST_IDLE_WAIT = 0.25
#: after a delivery, how long to wait for the next one already claimed or on the wire
GREEDY_WAIT = 0.0005


class ColdShutdown(BaseException):
    """Raised in the main thread of a solo worker on the second stop signal."""


class TaskTerminated(BaseException):
    """Raised in a pool thread by ``terminate``: the task stops, its state is REVOKED."""


class Engine:
    def __init__(
        self,
        config: WorkerConfig,
        *,
        hostname: str,
        table: TaskTable,
        mode: str = "inline",
        shared: slots.SharedState | None = None,
        slot: slots.Slot | None = None,
        executor: Any = None,
        on_ready: Any = None,
    ) -> None:
        self.config = config
        self.hostname = hostname
        self.table = table
        self.mode = mode
        self.shared = shared
        self.slot = slot
        self.executor = executor
        self.on_ready = on_ready
        #: called with the engine after each (re)connection
        self.on_connect: Callable[[Engine], None] | None = None
        self.scheme = urlparse(config.broker_url).scheme
        self.amqp = self.scheme in AMQP_SCHEMES
        self.accept = accepted_types(settings.ACCEPT_CONTENT)
        self.max_deliveries = int(settings.MAX_DELIVERIES)
        self.eta_horizon = float(settings.ETA_HORIZON)
        self.store = get_store()
        self.buffer = ResultBuffer(self.store)
        self.consumer = BrokerConsumer(
            config.broker_url, config.queues, config.prefetch_count, partial(intake.route, self)
        )
        self.events = EventDispatcher(None, hostname, enabled=False)
        self.ready: deque[Job] = deque()
        self.holding = Holding(config.max_held)
        self.active: dict[str, Job] = {}
        self.lock = threading.RLock()
        self.commands: SimpleQueue = SimpleQueue()
        self.debug = logger.isEnabledFor(logging.DEBUG)
        self.processed = 0
        self.totals: dict[str, int] = {}
        self.exit_reason = slots.EXIT_NONE
        self.stopping = False
        self.finished = threading.Event()
        self.busy_since: float | None = None
        self._qos = config.prefetch_count
        self._queues_gen = shared.queues_generation() if shared is not None else 0
        self._alarm = AlarmLimits(enforce_hard=slot is None) if mode == "inline" else None
        self._limit_defaults = (config.soft_time_limit, config.time_limit)
        self._write_retry_at = 0.0
        self.idle_wait = BURST_IDLE_WAIT if config.burst else IDLE_WAIT
        self.backoff = 0.5

    # -- the interface intake.py and outcomes.py use -----------------------------------
    def refuse(self, raw: Any, queue: str, reason: str, detail: str, task_id: Any = None,
               task_name: Any = None, exc: Any = None, request: Any = None) -> None:  # fmt: skip
        outcomes.refuse(self, raw, queue, reason, detail, task_id, task_name, exc, request)

    def settle_without_running(self, job: Job, state: str, exc: BaseException) -> None:
        outcomes.settle_without_running(self, job, state, exc)

    def lost_count(self, task_id: str) -> int:
        return self.shared.lost_count(task_id) if self.shared is not None else 0

    def already_done(self, task_id: str) -> bool:
        try:
            return self.store.get_task_meta(task_id)["status"] in states.READY_STATES
        except Exception:
            logger.warning(
                "Could not read the state of redelivered task %s; running it",
                task_id,
                exc_info=True,
            )
            return False

    def ack(self, job: Job) -> None:
        if not job.acked:
            self.consumer.ack(job.raw)
            job.acked = True

    # -- running -----------------------------------------------------------------------
    def next_job(self) -> Job | None:
        for job in self.holding.pop_due():
            self.ready.append(job)
        while self.ready:
            job = self.ready.popleft()
            if intake.admit(self, job):
                return job
        return None

    def begin(self, job: Job) -> tuple[float | None, float | None]:
        """Bookkeeping before ``job`` runs (lock held); returns its (soft, hard) limits."""
        job.started = time.monotonic()
        self.active[job.id] = job
        if not job.acks_late:
            self.ack(job)
        soft, hard = limits_for(job, self.table, self._limit_defaults)
        if self.slot is not None:
            self.slot.begin(
                job.id, job.name, acks_late=job.acks_late,
                reject_on_worker_lost=bool(job.task.reject_on_worker_lost),
                hard_deadline=(job.started + hard) if hard else 0.0, info=job.slot_info(),
            )  # fmt: skip
            if hard or job.request.errbacks or job.request.chord:
                self.slot.keep_message(job.id, keptmessage.encode(job.raw, job.queue))
        self.events.send("task-started", uuid=job.id, pid=os.getpid())
        return soft, hard

    def run_task(self, job: Job, store: Any = None) -> Outcome:
        """Run ``job`` through the tracer in this thread (no engine lock held)."""
        store = self.buffer if store is None else store
        close_old_connections()
        try:
            return execute(job.task, job.request, store)
        except (ColdShutdown, TaskTerminated):
            raise
        except BaseException as exc:  # a limit that fired after the body, SystemExit...
            return outcomes.escaped(job, exc, store)
        finally:
            close_old_connections()

    def finish(self, job: Job, outcome: Outcome) -> None:
        """Bookkeeping after ``job`` ran (lock held)."""
        self.active.pop(job.id, None)
        self.processed += 1
        self.totals[job.name] = self.totals.get(job.name, 0) + 1
        if self.slot is not None:
            self.slot.end(self.processed)
        outcomes.dispose(self, job, outcome)
        self._check_recycle()

    def _run_inline(self, job: Job) -> None:
        soft, hard = self.begin(job)
        self.busy_since = time.monotonic()
        self.lock.release()
        try:
            if self._alarm is not None:
                self._alarm.arm(soft, hard)
            try:
                outcome = self.run_task(job)
            except (SoftTimeLimitExceeded, TimeLimitExceeded) as exc:  # landed in its finally
                outcome = outcomes.escaped(job, exc, self.buffer)
            finally:
                if self._alarm is not None:
                    self._alarm.disarm()
        finally:
            self.lock.acquire()
            self.busy_since = None
        self.finish(job, outcome)
        if self.consumer.paused and not self.stopping:
            self.consumer.resume()

    def _check_recycle(self) -> None:
        if self.slot is None or self.stopping:
            return
        reason = recycle_reason(self.config, self.processed)
        if reason is not None:
            self.request_stop(reason)

    # -- writes and acks ---------------------------------------------------------------
    def flush(self) -> None:
        """Write buffered results, then ack their messages (lock held).

        On ``django://`` with results in the same database, the writes and the acks
        commit in one transaction: both happen, or neither (the messages are then
        redelivered).
        """
        if not len(self.buffer) or time.monotonic() < self._write_retry_at:
            return
        alias = self.consumer.transaction_alias
        together = alias if alias is not None and alias == self.buffer.alias else None
        # The consuming thread, with nothing left to run, polls next: claim with the acks.
        polls_next = (
            not self.ready
            and self.busy_since is None
            and self.executor is None
            and not self.stopping
        )
        pending: list[Job] = []
        try:
            with self.buffer.settle(atomic_with=together) as jobs:
                pending = [job for job in jobs if not job.acked]
                self.consumer.ack_many([job.raw for job in pending], claim_next=polls_next)
        except self.consumer.errors:
            raise  # the broker (or, with ``together``, its database): reconnect
        except Exception:
            logger.exception(
                "Could not write task results; retrying in 1s (their messages stay unacked)"
            )
            self._write_retry_at = time.monotonic() + 1.0
            return
        for job in pending:
            job.acked = True

    # -- control -----------------------------------------------------------------------
    def request_stop(self, reason: int = slots.EXIT_STOP) -> None:
        """Warm stop: take no more messages, give back waiting ones, finish running tasks."""
        if self.exit_reason == slots.EXIT_NONE:
            self.exit_reason = reason
        self.stopping = True

    def post(self, command: Any) -> None:
        """Run ``command(engine)`` on the consuming thread (from a control thread)."""
        self.commands.put(command)

    def _housekeeping(self) -> None:
        while True:
            try:
                command = self.commands.get_nowait()
            except Empty:
                break
            try:
                command(self)
            except Exception:
                logger.exception("Worker command %r failed", command)
        if self.shared is not None:
            gen = self.shared.queues_generation()
            if gen != self._queues_gen and not gen % 2:
                self._queues_gen = gen
                self.follow_queues(self.shared.queues())
        if self.slot is not None and self.slot.stop_requested() and not self.stopping:
            self.request_stop()
        wanted = self.config.prefetch_count + len(self.holding)
        if wanted != self._qos:
            self._qos = wanted
            self.consumer.set_prefetch(wanted)

    def follow_queues(self, wanted: list[str]) -> None:
        for queue in wanted:
            if self.consumer.add_queue(queue):
                logger.info("Now consuming from queue %r", queue)
        for queue in list(self.consumer.queues):
            if queue not in wanted and self.consumer.cancel_queue(queue):
                logger.info("No longer consuming from queue %r", queue)

    # -- the loop ----------------------------------------------------------------------
    def connect(self) -> None:
        self.consumer.connect()
        self.events = EventDispatcher(
            self.consumer.connection, self.hostname, enabled=self.config.events
        )
        if self.on_connect is not None:
            self.on_connect(self)

    def run(self) -> int:
        """Consume until stopped (or idle in burst mode); return the exit reason."""
        with self.lock:
            self.connect()
            if self._alarm is not None:
                self._alarm.install()
            if self.slot is not None:
                self.slot.set_state(slots.IDLE, pid=os.getpid())
            if self.on_ready is not None:
                self.on_ready()
            try:
                while True:
                    try:
                        if self._loop():
                            break
                    except self.consumer.errors as exc:
                        handback.reconnect(self, exc)
            except ColdShutdown:
                handback.cold_stop(self)
            finally:
                handback.close(self)
        return self.exit_reason

    def uninstall_alarm(self) -> None:
        if self._alarm is not None:
            self._alarm.uninstall()

    def _loop(self) -> bool:
        """One pass; True when the engine should exit."""
        self._housekeeping()
        if self.stopping:
            if not self.consumer.paused:
                self.consumer.pause()
            handback.give_back_waiting(self)
            if self.executor is not None:
                self.executor.collect(self, block=bool(self.active))
            self.flush()
            return not self.active
        if self.executor is not None:
            return self.executor.step(self)
        job = self.next_job()
        if job is not None:
            self.backoff = 0.5
            self._run_inline(job)
            if not self.ready or self.buffer.due():
                self.flush()
            return False
        self.flush()
        wait = self.holding.next_due()
        got = self.consumer.drain(self.idle_wait if wait is None else min(wait, self.idle_wait))
        if got:
            self._take_waiting()
        return not got and self.burst_done()

    def _take_waiting(self) -> None:
        """After one delivery, take what else is already claimed or on the wire (up to prefetch).

        Only what is there now: waiting for more would add a claim and a blocking read
        to every task's latency when the queue is nearly empty.

        The batch's results are then written in one call and its acks sent together.
        """
        limit = self.config.prefetch_count
        consumer = self.consumer
        while (
            not self.stopping
            and len(self.ready) < limit
            and consumer.has_waiting()
            and consumer.drain(GREEDY_WAIT)
        ):
            pass

    def burst_done(self) -> bool:
        if (
            not self.config.burst
            or self.ready
            or len(self.holding)
            or self.active
            or len(self.buffer)
        ):
            return False
        if any(self.consumer.message_count(q) for q in self.consumer.queues):
            return False
        logger.info("Queues %s are empty: burst run done", ", ".join(self.consumer.queues))
        self.exit_reason = slots.EXIT_BURST
        return True
