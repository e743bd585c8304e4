"""``Worker``: plain constructor arguments, ``run()``, and what remote control asks of it.

    Worker(queues=["default"], concurrency=4, pool="prefork").run()   # -> exit code

``runworker`` is a thin command around this class; tests drive it directly too
(``burst=True`` returns once the queues are empty). What ``inspect`` and
``control`` ask of it is in ``inspection.py``. The pools:

* ``prefork`` (default): a supervisor and N child processes that each consume
  and execute (``pools/prefork.py``);
* ``threads``: one process, one consumer, N threads (``pools/threads.py``);
* ``solo``: one process running one task at a time in its main thread.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from typing import Any, TextIO
from urllib.parse import urlparse

from .. import revocation, signals
from ..conf import settings
from ..events import EventDispatcher
from ..messaging.connection import broker_connection
from ..registry import tasks
from ..routing import queue_names
from ..serialization import accepted_types
from . import banner, embedbeat
from .config import WorkerConfig, default_concurrency, expand_hostname
from .engine import ColdShutdown, Engine
from .inspection import RemoteControlled
from .logs import setup_logging
from .pidfile import Pidfile
from .ratelimits import TaskTable
from .services import Services, ServiceThread

logger = logging.getLogger("django_tasks_q.worker")

#: the supervisor looks at its children (and drains control messages) this often
SUPERVISE_EVERY = 0.2


class Worker(RemoteControlled):
    def __init__(
        self,
        *,
        queues: list[str] | str | None = None,
        concurrency: int | None = None,
        pool: str = "prefork",
        hostname: str | None = None,
        prefetch_multiplier: int | None = None,
        max_tasks_per_child: int | None = None,
        max_memory_per_child: int | None = None,
        autoscale: tuple[int, int] | None = None,
        time_limit: float | None = None,
        soft_time_limit: float | None = None,
        burst: bool = False,
        events: bool = False,
        without_heartbeat: bool = False,
        shutdown_timeout: float = 60.0,
        broker_url: str | None = None,
        purge: bool = False,
        loglevel: str | int | None = None,
        logfile: str | None = None,
        pidfile: str | None = None,
        release_after: float = 1.0,
        beat: bool = False,
        stdout: TextIO | None = None,
    ) -> None:
        if isinstance(queues, str):
            queues = [q.strip() for q in queues.split(",") if q.strip()]
        if concurrency is None:
            concurrency = max(1, autoscale[1]) if autoscale else default_concurrency()
        self.config = WorkerConfig(
            queues=list(queues or queue_names()),
            concurrency=concurrency,
            pool=pool,
            hostname=expand_hostname(hostname),
            prefetch_multiplier=prefetch_multiplier or int(settings.PREFETCH_MULTIPLIER),
            max_tasks_per_child=max_tasks_per_child,
            max_memory_per_child=max_memory_per_child,
            autoscale=tuple(autoscale) if autoscale else None,  # type: ignore[arg-type]
            time_limit=time_limit,
            soft_time_limit=soft_time_limit,
            burst=burst,
            events=events,
            without_heartbeat=without_heartbeat,
            shutdown_timeout=shutdown_timeout,
            broker_url=broker_url or settings.BROKER_URL,
            purge=purge,
            release_after=release_after,
        )
        self.config.validate()
        if beat:
            embedbeat.check()
        self.hostname = self.config.hostname
        self.scheme = urlparse(self.config.broker_url).scheme
        self.loglevel, self.logfile, self.pidfile = loglevel, logfile, pidfile
        self.beat = beat
        self.stdout = stdout or sys.stdout
        self.accept = accepted_types(settings.ACCEPT_CONTENT)
        self.max_deliveries = int(settings.MAX_DELIVERIES)
        self.table = TaskTable()
        self.events = EventDispatcher(
            broker_connection(self.config.broker_url), self.hostname, events
        )
        self.pool: Any = None  # PreforkPool
        self.engine: Engine | None = None  # solo / threads
        self.started = time.time()
        self._stop_signals = 0
        self._cold = False
        self._control: Any = None
        self._control_retry_at = 0.0
        self._ready = threading.Event()
        self._previous_handlers: dict[int, Any] = {}
        self._shutdown_timer: threading.Timer | None = None

    @property
    def store(self) -> Any:
        from ..results import get_store

        return get_store()

    # -- running -----------------------------------------------------------------------
    def run(self) -> int:
        """Run until stopped; return the process exit code (0: warm stop or burst done)."""
        setup_logging(self.loglevel, self.logfile)
        pidfile = Pidfile(self.pidfile) if self.pidfile else None
        if pidfile is not None:
            pidfile.acquire()
        beat = None
        try:
            self._prepare()
            banner.show(self)
            if self.beat:
                beat = embedbeat.start()
            if self.config.pool == "prefork":
                return self._run_prefork()
            return self._run_in_process()
        finally:
            if beat is not None:
                embedbeat.stop(beat)
            self._restore_signals()
            signals.worker_shutdown.send(sender=self)
            self.events.close()
            if pidfile is not None:
                pidfile.release()

    def _prepare(self) -> None:
        for name, task in tasks.items():
            if task.rate_limit:
                self.table.set_rate(name, task.rate_limit)
        try:
            revocation.preload()
        except Exception as exc:
            logger.warning("Could not load revoked task ids (%r); will retry while running", exc)
        if self.config.purge:
            from .consumer import BrokerConsumer

            consumer = BrokerConsumer(
                self.config.broker_url, self.config.queues, 1, lambda q, m: None
            )
            consumer.connect(max_retries=3)
            try:
                count = consumer.purge()
            finally:
                consumer.close()
            self._print(f"Purged {count} message(s) from {', '.join(self.config.queues)}.")

    def _install_signals(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            self._previous_handlers[signum] = signal.signal(signum, self._on_stop_signal)

    def _restore_signals(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        self._stop_signals += 1
        if signum == signal.SIGQUIT or self._stop_signals > 1:
            self.cold_stop()
        else:
            self.shutdown()

    def _run_prefork(self) -> int:
        from .pools.prefork import PreforkPool

        self.pool = PreforkPool(self)
        self._install_signals()
        self.pool.start()
        services = Services(self)
        try:
            while not self.pool.tick():
                try:
                    services.tick()
                except Exception:
                    logger.exception("Worker services failed; continuing")
                self._control_wait(SUPERVISE_EVERY)
        finally:
            self._control_close()
            services.stop()
            self.pool.close()
        return 1 if self.pool.cold else 0

    def _run_in_process(self) -> int:
        from .control_handlers import ControlDispatcher, ControlThread
        from .pools.threads import ThreadExecutor
        from .sidecar import Sidecar

        executor = None
        if self.config.pool == "threads":
            executor = ThreadExecutor(self.config.concurrency, self.config.autoscale)
        self.engine = Engine(
            self.config, hostname=self.hostname, table=self.table,
            mode="threads" if executor else "inline", executor=executor, on_ready=self._announce_ready,
        )  # fmt: skip
        self._install_signals()
        control = ControlThread(ControlDispatcher(self), url=self.config.broker_url, poll=0.25)
        control.start()
        services = ServiceThread(Services(self))
        services.start()
        if executor is None:
            Sidecar(self.engine).start()
        try:
            self.engine.run()
        finally:
            if self._shutdown_timer is not None:
                self._shutdown_timer.cancel()
            control.stop()
            services.stop()
            services.services.stop()
            if executor is not None:
                executor.stop()
        return 1 if self._cold else 0

    def on_pool_ready(self) -> None:
        self._announce_ready()

    def _announce_ready(self) -> None:
        if self._ready.is_set():
            return
        self._ready.set()
        self._print(f"{self.hostname} ready.")
        logger.info(
            "%s ready: %s pool, concurrency %d", self.hostname, self.config.pool, self.concurrency()
        )
        signals.worker_ready.send(sender=self)

    def _print(self, text: str) -> None:
        print(text, file=self.stdout, flush=True)

    # -- the prefork supervisor's control channel --------------------------------------
    def _control_wait(self, timeout: float) -> None:
        if self._control is None and time.monotonic() >= self._control_retry_at:
            self._control_open()
        if self._control is None:
            time.sleep(timeout)
            return
        conn = self._control[0]
        try:
            conn.drain_events(timeout=timeout)
        except TimeoutError:
            pass
        except Exception as exc:
            logger.warning("Remote control channel failed (%r); reopening in 5s", exc)
            self._control_close()
            self._control_retry_at = time.monotonic() + 5.0

    def _control_open(self) -> None:
        from .control_handlers import ControlDispatcher

        conn = broker_connection(self.config.broker_url)
        try:
            conn.ensure_connection(max_retries=1)
            dispatcher = ControlDispatcher(self)
            dispatcher.consumer(conn.channel())
        except Exception as exc:
            logger.warning("Remote control is unavailable for now (%r); retrying in 5s", exc)
            try:
                conn.release()
            except Exception:
                pass
            self._control_retry_at = time.monotonic() + 5.0
            return
        self._control = (conn, dispatcher)

    def _control_close(self) -> None:
        control, self._control = self._control, None
        if control is None:
            return
        conn, dispatcher = control
        dispatcher.cancel()
        try:
            conn.release()
        except Exception:
            pass

    # -- stopping ----------------------------------------------------------------------
    def shutdown(self) -> None:
        """Warm stop: take no new tasks, let running ones finish (up to ``shutdown_timeout``)."""
        logger.warning(
            "Warm shutdown: finishing running tasks (up to %gs). Stop again for a cold shutdown.",
            self.config.shutdown_timeout,
        )
        if self.pool is not None:
            self.pool.warm_stop(self.config.shutdown_timeout)
        elif self.engine is not None:
            self.engine.request_stop()
            if self._shutdown_timer is None:  # past the timeout: a cold stop, as a second signal
                self._shutdown_timer = threading.Timer(
                    self.config.shutdown_timeout, os.kill, (os.getpid(), signal.SIGQUIT)
                )
                self._shutdown_timer.daemon = True
                self._shutdown_timer.start()

    def cold_stop(self) -> None:
        """Cold stop: requeue what runs and waits, exit now."""
        logger.warning(
            "Cold shutdown: interrupting running tasks; their messages go back to the queue"
        )
        self._cold = True
        if self.pool is not None:
            self.pool.cold_stop()
        elif self.engine is not None and threading.current_thread() is threading.main_thread():
            raise ColdShutdown()
