"""One measured run: enqueue N tasks, start the workers, time them until done.

The order inside a run:

1. reset the system's Redis database, tables and queues;
2. the client (in the peer's venv) enqueues N counting no-ops, timed: the
   enqueue rate (``--bulk`` where the system has a bulk path);
3. the workers start on the full queue; every task body INCRs a Redis counter
   (``side/benchcounter.py``), which also records the start of the first task
   and the end of the last one, so worker start-up is outside the timed span;
4. CPU time of the worker process tree is read when the first task has run
   and when the last has, and memory (RSS and PSS) is sampled all along;
5. with results on, the harness checks that N results were stored (waiting for
   them when a system may write them after the task body), then the client
   times sequential round trips;
6. the workers stop (SIGTERM, then SIGKILL after a grace period).
"""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from . import services
from .peers.base import Adapter, Target

FIRST_TASK_TIMEOUT = 90.0  # seconds for the workers to start and run one task
STALL_TIMEOUT = 30.0  # seconds without progress before a run is declared stuck
STOP_GRACE = 5.0  # then SIGKILL: the measurement is over, a slow warm shutdown costs budget


class RunError(RuntimeError):
    """A run that could not complete; the message says what and where to look."""


class WorkerGroup:
    """The worker processes of one run, each in its own session."""

    def __init__(
        self, commands: list[list[str]], env: dict[str, str], cwd: Path, log: Path
    ) -> None:
        self.commands = commands
        self.env = env
        self.cwd = cwd
        self.log_path = log
        self.procs: list[subprocess.Popen] = []
        self._seen: dict[int, psutil.Process] = {}

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        self._log = log
        for cmd in self.commands:
            self.procs.append(
                subprocess.Popen(
                    cmd, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True,
                )
            )  # fmt: skip

    def processes(self) -> list[psutil.Process]:
        """Every live process of the group (roots and all their descendants)."""
        found: list[psutil.Process] = []
        for proc in self.procs:
            try:
                root = self._seen.setdefault(proc.pid, psutil.Process(proc.pid))
                found.append(root)
                for child in root.children(recursive=True):
                    found.append(self._seen.setdefault(child.pid, child))
            except psutil.NoSuchProcess:
                continue
        return found

    def alive(self) -> bool:
        return any(p.poll() is None for p in self.procs)

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + STOP_GRACE
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self.procs:
            # Whatever is left of the session (a stuck parent, orphaned children) goes now.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
        for p in self._seen.values():
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    p.kill()
            except psutil.NoSuchProcess:
                pass
        self._log.close()


def cpu_seconds(procs: list[psutil.Process]) -> float:
    """user+system of these processes and of their children already reaped."""
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


class MemorySampler(threading.Thread):
    """Peak of the summed RSS and PSS of a worker group, sampled every ``interval``."""

    def __init__(self, group: WorkerGroup, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.group = group
        self.interval = interval
        self.peak_rss = 0
        self.peak_pss = 0
        self.peak_procs = 0
        self._halt = threading.Event()

    def sample(self) -> None:
        rss = pss = 0
        procs = self.group.processes()
        for p in procs:
            try:
                mem = p.memory_full_info()
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
            rss += mem.rss
            pss += getattr(mem, "pss", 0)
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_pss = max(self.peak_pss, pss)
        self.peak_procs = max(self.peak_procs, len(procs))

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


class Counter:
    """Reads the counter the bench tasks INCR (``side/benchcounter.py``)."""

    def __init__(self, db: int) -> None:
        self.client = services.redis_client(db)

    def count(self) -> int:
        return int(self.client.get("bench:n") or 0)

    def snapshot(self) -> tuple[int, float, float]:
        """(tasks done, start of the first, end of the latest): one consistent read."""
        n, first, last = self.client.mget("bench:n", "bench:first", "bench:last")
        if n is None or first is None or last is None:
            raise RunError("the counter has no tasks or no timestamps")
        return int(n), float(first), float(last)

    def wait_for(
        self, target: int, group: WorkerGroup, first_timeout: float, window: float | None = None
    ) -> bool:
        """Wait until ``target`` tasks ran (True) or ``window`` seconds passed (False).

        Fails when the workers die, when no task runs within ``first_timeout``,
        or when the count stalls for STALL_TIMEOUT.
        """
        last_n, last_change = -1, time.monotonic()
        started = time.monotonic()
        while True:
            n = self.count()
            now = time.monotonic()
            if n >= target:
                return True
            if window is not None and now - started > window:
                return False
            if n != last_n:
                last_n, last_change = n, now
            if not group.alive():
                raise RunError(f"workers exited after {n}/{target} tasks:\n{group.log_tail()}")
            limit = first_timeout if n == 0 else STALL_TIMEOUT
            if now - (started if n == 0 else last_change) > limit:
                raise RunError(
                    f"no progress for {limit:.0f} s at {n}/{target} tasks:\n{group.log_tail()}"
                )
            time.sleep(0.005 if n == 0 else 0.02)


def run_client(adapter: Adapter, target: Target, args: list[str], timeout: float) -> dict[str, Any]:
    """Run the peer's client (in its venv) and return its BENCH-RESULT JSON."""
    cmd = adapter.client_command(target) + args
    try:
        done = subprocess.run(
            cmd, cwd=adapter.cwd, env=adapter.env(target, 1), capture_output=True, text=True,
            timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise RunError(f"client {' '.join(args)} timed out after {timeout:.0f} s") from exc
    for line in done.stdout.splitlines():
        if line.startswith("BENCH-RESULT "):
            return json.loads(line.split(" ", 1)[1])
    lines = done.stderr.strip().splitlines() or ["(no output)"]
    raise RunError(
        f"client {' '.join(args)} failed (exit {done.returncode}): {lines[-1]}\n"
        + "\n".join(lines[-40:])
    )


def wait_results(
    adapter: Adapter, target: Target, n: int, timeout: float
) -> tuple[int, float | None]:
    """Wait (up to ``timeout``) until ``n`` results are stored.

    Returns (stored, when it was seen), the time being None when the first look
    already found them all (they were then stored by the time the last task ended,
    give or take one write).
    """
    deadline = time.monotonic() + timeout
    first_look = True
    while True:
        stored = adapter.count_results(target) or 0
        seen = time.time()
        if stored >= n:
            return stored, None if first_look else seen
        if time.monotonic() > deadline:
            return stored, seen
        first_look = False
        time.sleep(0.05)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass(frozen=True)
class Limits:
    """Time boxes that keep a run short whatever the system's speed."""

    enqueue_seconds: float = 10.0  # the client stops enqueueing after this
    window_seconds: float = 15.0  # processing is measured at most this long
    roundtrip_seconds: float = 10.0


def measure(
    adapter: Adapter,
    target: Target,
    *,
    n: int,
    concurrency: int,
    bulk: bool = False,
    roundtrips: int = 0,
    limits: Limits = Limits(),  # noqa: B008 (frozen)
    log_dir: Path,
) -> dict[str, Any]:
    """One run; returns a flat record. Raises RunError when the run failed."""
    rec: dict[str, Any] = {
        "system": target.system, "broker": target.broker, "results": target.results,
        "n": n, "concurrency": concurrency,
    }  # fmt: skip
    phases: dict[str, float] = {}
    rec["phases"] = phases  # seconds per step, for the budget estimate (bench/budget.py)
    mark = time.monotonic()

    def lap(name: str) -> None:
        nonlocal mark
        now = time.monotonic()
        phases[name] = phases.get(name, 0.0) + now - mark
        mark = now

    adapter.reset(target)
    lap("reset")
    counter = Counter(adapter.redis_db)
    args = ["enqueue", "--n", str(n), "--max-seconds", str(limits.enqueue_seconds)]
    enq = run_client(
        adapter, target, args + (["--bulk"] if bulk else []), timeout=limits.enqueue_seconds + 120
    )
    lap("enqueue_client")
    queued = int(enq["n"])
    rec.update(queued=queued, enqueue_rate=enq["rate"], enqueue_mode=enq["mode"])
    if counter.count():
        raise RunError("tasks ran before the workers started: another worker is consuming")

    log = log_dir / f"{target.system}-{target.broker}-{target.results}-c{concurrency}.log"
    group = WorkerGroup(
        adapter.worker_commands(target, concurrency),
        adapter.env(target, concurrency),
        adapter.cwd,
        log,
    )
    sampler = MemorySampler(group)
    group.start()
    sampler.start()
    try:
        counter.wait_for(1, group, FIRST_TASK_TIMEOUT)
        lap("start_to_first_task")
        cpu0, done0 = cpu_seconds(group.processes()), counter.count()
        complete = counter.wait_for(queued, group, FIRST_TASK_TIMEOUT, limits.window_seconds)
        lap("processing")
        done, first, last = counter.snapshot()
        completed, end = done, last
        if target.results != "off":
            if adapter.results_async:
                # Results may land after the task body: count what is stored, when it is.
                grace = limits.window_seconds if complete else 0.0
                completed, seen = wait_results(adapter, target, done, grace)
                end = last if seen is None else max(seen, last)
                rec["results_stored"] = completed
                # Results still being written when the grace ran out: a windowed figure.
                complete = complete and completed >= done
            else:
                rec["results_stored"] = adapter.count_results(target)
        # CPU is read after the results settled, so late result writes are counted too.
        cpu1, done1 = cpu_seconds(group.processes()), counter.count()
        rec.update(
            complete=complete,
            completed=completed,
            throughput=completed / (end - first),
            span_s=end - first,
            cpu_ms_per_task=1000 * (cpu1 - cpu0) / max(1, done1 - done0),
        )
        if complete:
            rec["executed"] = counter.count()  # more than queued would mean duplicates
        lap("results")
        # With a backlog of tasks or of results left, round trips run on fresh workers (below).
        if roundtrips and target.results != "off" and complete:
            rec.update(roundtrip(adapter, target, roundtrips, limits))
            lap("roundtrips")
    finally:
        try:
            sampler.sample()
            sampler.stop()
        finally:
            group.stop()
            lap("stop")
    rec.update(
        peak_rss_mb=sampler.peak_rss / 2**20,
        peak_pss_mb=sampler.peak_pss / 2**20,
        worker_processes=sampler.peak_procs,
    )
    if roundtrips and target.results != "off" and not complete:
        # A backlog is left: time the round trips on fresh workers and an empty queue.
        adapter.reset(target)
        fresh = WorkerGroup(
            adapter.worker_commands(target, concurrency),
            adapter.env(target, concurrency),
            adapter.cwd,
            log,
        )
        fresh.start()
        try:
            rec.update(roundtrip(adapter, target, roundtrips, limits))
            lap("roundtrips_fresh_workers")
        finally:
            fresh.stop()
            lap("stop")
    return rec


def roundtrip(adapter: Adapter, target: Target, count: int, limits: Limits) -> dict[str, Any]:
    """Sequential send-and-wait latencies, timed by the client (its first one untimed)."""
    args = ["roundtrip", "--n", str(count), "--max-seconds", str(limits.roundtrip_seconds)]
    rt = run_client(adapter, target, args, timeout=limits.roundtrip_seconds + 120)
    lat = sorted(rt["latencies"])
    return {
        "rt_n": len(lat),
        "rt_p50_ms": 1000 * statistics.median(lat),
        "rt_p99_ms": 1000 * percentile(lat, 0.99),
        "rt_mean_ms": 1000 * statistics.fmean(lat),
    }
