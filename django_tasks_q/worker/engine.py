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
from datetime import UTC, datetime
from queue import Empty, SimpleQueue
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from django.db import close_old_connections

from .. import states
from ..conf import settings
from ..events import EventDispatcher
from ..execution import Outcome, execute
from ..results import get_store
from ..serialization import accepted_types
from . import delayed, intake, outcomes, slots
from .consumer import BrokerConsumer
from .holding import Holding, seconds_until
from .jobs import Job
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


class ColdShutdown(BaseException):
    """Raised in the main thread of a solo worker on the second stop signal."""


class TaskTerminated(BaseException):
    """Raised in a pool thread by ``terminate``: the task stops, its state is REVOKED."""


def encode_raw(raw: Any, queue: str) -> bytes:
    """A raw message as JSON bytes (what a supervisor needs to rebuild its request)."""
    import base64
    import json

    body = raw.body
    encoding = "utf-8"
    if isinstance(body, bytes | bytearray | memoryview):
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            body, encoding = base64.b64encode(bytes(body)).decode("ascii"), "base64"
    properties = raw.properties or {}
    return json.dumps(
        {
            "body": body,
            "body_encoding": encoding,
            "content_type": raw.content_type,
            "content_encoding": raw.content_encoding,
            "headers": raw.headers or {},
            "properties": {k: properties.get(k) for k in ("correlation_id", "reply_to", "priority")},
            "queue": queue,
        },
        default=str,
    ).encode()


def rss_kib() -> int:
    """This process's resident memory in KiB."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except (OSError, ValueError, IndexError):
        import psutil

        return psutil.Process().memory_info().rss // 1024


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
        self.scheme = urlparse(config.broker_url).scheme
        self.amqp = self.scheme in AMQP_SCHEMES
        self.accept = accepted_types(settings.ACCEPT_CONTENT)
        self.max_deliveries = int(settings.MAX_DELIVERIES)
        self.eta_horizon = float(settings.ETA_HORIZON)
        self.store = get_store()
        self.buffer = ResultBuffer(self.store)
        self.consumer = BrokerConsumer(config.broker_url, config.queues, config.prefetch_count, self._on_message)
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
        self._backoff = 0.5

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
            logger.warning("Could not read the state of redelivered task %s; running it", task_id, exc_info=True)
            return False

    def ack(self, job: Job) -> None:
        if not job.acked:
            self.consumer.ack(job.raw)
            job.acked = True

    # -- receiving ---------------------------------------------------------------------
    def _on_message(self, queue: str, raw: Any) -> None:
        job = intake.receive(self, queue, raw)
        if job is None:
            return
        if self.stopping:
            self._give_back(job)
            return
        eta = job.request.eta
        if eta is not None:
            left = seconds_until(eta)
            if left > 0:
                if left <= self.eta_horizon and not self.holding.full:
                    self.holding.hold(job, left, "eta")
                else:
                    self._defer(job)
                return
        self.ready.append(job)

    def _defer(self, job: Job) -> None:
        """A far ETA (or too many held): into the durable delayed store, then ack."""
        try:
            if delayed.has_own_store(self.scheme):
                self.consumer.republish(job.raw, job.queue)
            else:
                delayed.store_row(job.raw, job.queue, job.id, job.name, job.request.eta)
        except self.consumer.errors:
            raise
        except Exception:
            logger.exception("Could not move task %s[%s] to the delayed store; holding it", job.name, job.id)
            self.holding.hold(job, seconds_until(job.request.eta), "eta")
            return
        logger.debug("Task %s[%s] (eta %s) moved to the delayed store", job.name, job.id, job.request.eta)
        self.ack(job)

    def _give_back(self, job: Job) -> None:
        """Return a message that did not start, without counting it as a delivery."""
        if job.acked:
            return
        self.consumer.republish(job.raw, job.queue)
        self.ack(job)

    def give_back_waiting(self) -> int:
        """Hand every held and ready message back to the broker (lock held)."""
        jobs = list(self.ready) + self.holding.take_all()
        self.ready.clear()
        for job in jobs:
            self._give_back(job)
        if jobs:
            logger.debug("Gave %d waiting message(s) back to the broker", len(jobs))
        return len(jobs)

    # -- running -----------------------------------------------------------------------
    def _admit(self, job: Job) -> bool:
        """Checks at the moment a job would start: revoked, expired, rate limit."""
        from ..revocation import is_revoked

        if is_revoked(job.id):
            outcomes.revoked(self, job)
            return False
        expires = job.request.expires
        if expires is not None and expires <= datetime.now(UTC):
            outcomes.revoked(self, job, expired=True)
            return False
        wait = self.table.rate_wait(job.task.name)
        if wait > 0:
            self.holding.hold(job, wait, "rate")
            return False
        return True

    def next_job(self) -> Job | None:
        for job in self.holding.pop_due():
            self.ready.append(job)
        while self.ready:
            job = self.ready.popleft()
            if self._admit(job):
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
            message = job.request.message
            self.slot.begin(
                job.id, job.name, acks_late=job.acks_late,
                reject_on_worker_lost=bool(job.task.reject_on_worker_lost),
                hard_deadline=(job.started + hard) if hard else 0.0,
                info={
                    "argsrepr": (getattr(message, "argsrepr", None) or repr(job.request.args))[:300],
                    "kwargsrepr": (getattr(message, "kwargsrepr", None) or repr(job.request.kwargs))[:300],
                    "routing_key": job.request.delivery_info.get("routing_key"),
                    "redelivered": job.request.redelivered,
                },
            )  # fmt: skip
            if hard or job.request.errbacks or job.request.chord:
                self.slot.keep_message(job.id, encode_raw(job.raw, job.queue))
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
        limit = self.config.max_tasks_per_child
        if limit and self.processed >= limit:
            logger.info("Process %d ran %d tasks (max-tasks-per-child): recycling", os.getpid(), self.processed)
            self.request_stop(slots.EXIT_MAX_TASKS)
            return
        memory = self.config.max_memory_per_child
        if memory:
            used = rss_kib()
            if used > memory:
                logger.info(
                    "Process %d uses %d KiB, over max-memory-per-child=%d: recycling", os.getpid(), used, memory
                )
                self.request_stop(slots.EXIT_MAX_MEMORY)

    # -- writes and acks ---------------------------------------------------------------
    def flush(self) -> None:
        """Write buffered results, then ack their messages (lock held)."""
        if not len(self.buffer) or time.monotonic() < self._write_retry_at:
            return
        try:
            jobs = self.buffer.take_ackable()
        except Exception:
            logger.exception("Could not write task results; retrying in 1s (their messages stay unacked)")
            self._write_retry_at = time.monotonic() + 1.0
            return
        for job in jobs:
            self.ack(job)

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

    def snapshot(self) -> dict[str, Any]:
        """What this process runs, holds and waits on (safe from any thread)."""
        active = list(self.active.values())
        ready = list(self.ready)
        return {
            "pid": os.getpid(),
            "active": [{**j.summary(), "worker_pid": os.getpid()} for j in active],
            "reserved": [j.summary() for j in ready + self.holding.jobs("rate")],
            "scheduled": [
                {
                    "eta": j.request.eta.isoformat() if j.request.eta else None,
                    "priority": j.request.delivery_info.get("priority"),
                    "request": j.summary(),
                }
                for j in self.holding.jobs("eta")
            ],
            "processed": self.processed,
            "totals": dict(self.totals),
            "queues": list(self.consumer.queues),
        }

    # -- the loop ----------------------------------------------------------------------
    def connect(self) -> None:
        self.consumer.connect()
        self.events = EventDispatcher(self.consumer.connection, self.hostname, enabled=self.config.events)

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
                        self._reconnect(exc)
            except ColdShutdown:
                self._cold()
            finally:
                self._close()
        return self.exit_reason

    def _cold(self) -> None:
        """Cold stop in this process: requeue what runs (acks late), record what is lost."""
        from ..exceptions import WorkerLostError

        self.exit_reason = slots.EXIT_STOP
        for job in list(self.active.values()):
            if not job.acked:
                self.consumer.requeue(job.raw)
                job.acked = True
            else:
                exc = WorkerLostError(f"Cold shutdown interrupted task {job.name}[{job.id}] (acked early)")
                self.store.store_result(job.id, exc, states.LOST, request=job.request)
        self.active.clear()

    def _loop(self) -> bool:
        """One pass; True when the engine should exit."""
        self._housekeeping()
        if self.stopping:
            if not self.consumer.paused:
                self.consumer.pause()
            self.give_back_waiting()
            if self.executor is not None:
                self.executor.collect(self, block=bool(self.active))
            self.flush()
            return not self.active
        if self.executor is not None:
            return self.executor.step(self)
        job = self.next_job()
        if job is not None:
            self._backoff = 0.5
            self._run_inline(job)
            if not self.ready or self.buffer.due():
                self.flush()
            return False
        self.flush()
        wait = self.holding.next_due()
        got = self.consumer.drain(self.idle_wait if wait is None else min(wait, self.idle_wait))
        return not got and self.burst_done()

    def burst_done(self) -> bool:
        if not self.config.burst or self.ready or len(self.holding) or self.active or len(self.buffer):
            return False
        if any(self.consumer.message_count(q) for q in self.consumer.queues):
            return False
        logger.info("Queues %s are empty: burst run done", ", ".join(self.consumer.queues))
        self.exit_reason = slots.EXIT_BURST
        return True

    def _reconnect(self, exc: BaseException) -> None:
        logger.error("Lost the broker connection (%r); reconnecting. Unacked messages return to their queues.", exc)
        self.ready.clear()
        self.holding.take_all()
        try:
            self.buffer.take_ackable()  # results are written; their acks died with the channel
        except Exception:
            logger.exception("Could not write task results after losing the broker")
        self.consumer.close()
        time.sleep(self._backoff)
        self._backoff = min(self._backoff * 2, 5.0)
        self.connect()

    def _close(self) -> None:
        try:
            self.flush()
            self.give_back_waiting()
        except Exception:
            logger.exception("Could not settle every message before exiting")
        self.events.close()
        self.consumer.close()
        if self._alarm is not None:
            self._alarm.uninstall()
        if self.slot is not None:
            self.slot.set_state(slots.EXITING, exit_reason=self.exit_reason)
        self.finished.set()
