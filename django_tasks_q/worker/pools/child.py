"""Life of one prefork child: set up after fork, consume and run tasks, exit.

A child is a full consumer: its own broker connection, prefetch and batch
claims, running each task in its main thread (no pipe to a parent per task).
It tells the supervisor what it runs through its shared-memory slot.

Signals: SIGINT is the supervisor's business (Ctrl-C reaches the whole process
group); SIGTERM means "finish the running task and exit" — unless the supervisor
flagged the slot for a kill (``control.terminate``), in which case the child
dies of it at once.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

from ... import signals
from .. import leases, slots
from ..engine import Engine
from ..sidecar import Sidecar

if TYPE_CHECKING:
    from ..worker import Worker

logger = logging.getLogger("django_tasks_q.worker")


def _after_fork() -> None:
    """Forget what belongs to the parent: its wakeup fd, its signal handlers, its sockets."""
    try:
        signal.set_wakeup_fd(-1)
    except ValueError:
        pass
    for signum in (
        signal.SIGCHLD,
        signal.SIGQUIT,
        signal.SIGHUP,
        signal.SIGUSR1,
        signal.SIGUSR2,
        signal.SIGALRM,
    ):
        signal.signal(signum, signal.SIG_DFL)
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        conn.connection = None  # closed before the fork; never close a socket the parent shares
    from ... import results

    results.reset()


def _install_signals(engine: Engine, slot: slots.Slot) -> None:
    def on_stop_signal(signum: int, frame: Any) -> None:
        if slot.kill_signal() == signum:  # control.terminate: die of it
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if signum == signal.SIGTERM:
            engine.request_stop()

    signal.signal(signal.SIGTERM, on_stop_signal)
    signal.signal(signal.SIGINT, on_stop_signal)


def child_main(worker: Worker, index: int) -> None:
    """Run in the forked child; never returns."""
    code = 0
    slot = worker.pool.shared.slots[index]
    try:
        _after_fork()
        engine = Engine(
            worker.config, hostname=worker.hostname, table=worker.table, mode="inline",
            shared=worker.pool.shared, slot=slot,
        )  # fmt: skip
        if leases.applies_to(worker.config.broker_url):
            leases.share(slot, engine)  # the supervisor keeps our heartbeats alive too
        _install_signals(engine, slot)
        signals.worker_process_init.send(sender=worker)
        Sidecar(engine).start()
        engine.run()
    except BaseException:
        logger.exception("Worker process %d (slot %d) failed", os.getpid(), index)
        try:
            slot.set_state(slots.EXITING, exit_reason=slots.EXIT_ERROR)
        except Exception:
            pass
        code = 1
    finally:
        for handler in logging.getLogger().handlers + logging.getLogger("django_tasks_q").handlers:
            try:
                handler.flush()
            except Exception:
                pass
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
