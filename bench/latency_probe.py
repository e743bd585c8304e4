"""Round-trip latency of ``delay().get()`` on a warm worker, with a breakdown.

    .venv/bin/python bench/latency_probe.py                      # Redis broker + Redis results
    .venv/bin/python bench/latency_probe.py --broker amqp        # RabbitMQ broker + Redis results
    .venv/bin/python bench/latency_probe.py --results cache      # cache://redis (django-redis)
    .venv/bin/python bench/latency_probe.py --runs 3 -n 500      # median of 3 runs, fresh worker each
    .venv/bin/python bench/latency_probe.py --trace              # + where the time goes
    .venv/bin/python bench/latency_probe.py --root /tmp/copy     # the code of another checkout

Starts ``manage.py runworker -c 2 -Q <queue>`` on testproject (Redis DB 7 by default,
``--db``), waits until it is ready, warms it up, then times ``-n`` sequential
``latency.noop.delay().get()`` calls from this process and prints p50/p90/p99 and
the client CPU time per call (``delay()`` and ``get()`` separately).

``--trace`` runs ``latency.stamp`` instead, with the timing hooks of
``bench/latency_app/tasks.py`` in the worker and counters on this process's Redis
connections, and prints the median of each step: client publish; publish to the
worker's wake-up (its blocking read returning, with the handed message or a poke);
the claim, when there is one; decoding the message; the task start; the result write; the client waking; the client returning. It also
reports what each worker process does after a task until it blocks again, and the
wake-ups of the process that lost the race for the message. The hooks cost a few
microseconds per event, so ``--trace`` figures run slightly above plain ones.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def environment(args: argparse.Namespace) -> dict[str, str]:
    redis_url = f"redis://127.0.0.1:6379/{args.db}"
    amqp = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
    results = {"redis": redis_url, "cache": "cache://redis"}[args.results]
    return {
        "DJANGO_SETTINGS_MODULE": "testproject.settings",
        "TQ_DATABASE": "sqlite",
        "SQLITE_PATH": args.sqlite,
        "REDIS_URL": redis_url,
        "TQ_BROKER_URL": redis_url if args.broker == "redis" else amqp,
        "TQ_RESULT_BACKEND": results,
        "TQ_EXTRA_APPS": "bench.latency_app",
        "LATENCY_QUEUE": args.queue,
    }


class Worker:
    """``runworker`` in its own session; stopped by its pid (and its group if it hangs)."""

    def __init__(self, args: argparse.Namespace, env: dict[str, str]) -> None:
        self.log = tempfile.NamedTemporaryFile(
            prefix="h5-latency-worker-", suffix=".log", delete=False
        )
        command = [
            sys.executable, "manage.py", "runworker", "-Q", args.queue, "-c", str(args.concurrency),
            "-P", args.pool, "--without-heartbeat", "--purge", "-l", "WARNING",
        ]  # fmt: skip
        worker_env = {
            **os.environ,
            **env,
            "LATENCY_TRACE": "1" if args.trace else "0",
            "LATENCY_EXPERIMENT": args.experiment,
        }
        self.proc = subprocess.Popen(
            command, cwd=args.root, env=worker_env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def wait_ready(self, task: Any) -> None:
        # The banner's "ready." line is written before the children connect: a first
        # round trip proves the worker consumes.
        deadline = time.monotonic() + 60
        while " ready." not in Path(self.log.name).read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(Path(self.log.name).read_text())
            time.sleep(0.05)
        task.delay().get(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        os.unlink(self.log.name)


# -- client-side counters -----------------------------------------------------------------

CLIENT: list[tuple[float, str]] = []


def trace_client() -> None:
    """Record when this process sends to Redis and when a reply has been read."""
    from redis.connection import AbstractConnection

    send, read = AbstractConnection.send_packed_command, AbstractConnection.read_response

    def send_packed_command(self: Any, *args: Any, **kwargs: Any) -> Any:
        CLIENT.append((time.time(), "send"))
        return send(self, *args, **kwargs)

    def read_response(self: Any, *args: Any, **kwargs: Any) -> Any:
        reply = read(self, *args, **kwargs)
        CLIENT.append((time.time(), "read"))
        return reply

    AbstractConnection.send_packed_command = send_packed_command
    AbstractConnection.read_response = read_response


# -- one run -----------------------------------------------------------------------------


def run(args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    from bench.latency_app import tasks as lt

    task = lt.stamp if args.trace else lt.noop
    worker = Worker(args, env)
    samples: list[dict[str, Any]] = []
    try:
        worker.wait_ready(task)
        for _ in range(args.warmup):
            task.delay().get(timeout=30)
        CLIENT.clear()
        for _ in range(args.n):
            mark = len(CLIENT)
            c0, t0 = time.process_time(), time.time()
            result = task.delay()
            c1, t1 = time.process_time(), time.time()
            value = result.get(timeout=30)
            c2, t2 = time.process_time(), time.time()
            samples.append({
                "id": result.id, "t0": t0, "t1": t1, "t2": t2, "cpu_delay": c1 - c0,
                "cpu_get": c2 - c1, "value": value, "client": CLIENT[mark:],
            })  # fmt: skip
    finally:
        worker.stop()
    totals = sorted((s["t2"] - s["t0"]) * 1000 for s in samples)
    summary = {
        "p50": statistics.median(totals),
        "p90": totals[int(len(totals) * 0.90)],
        "p99": totals[min(len(totals) - 1, int(len(totals) * 0.99))],
        "max": totals[-1],
        "cpu_delay_us": statistics.mean(s["cpu_delay"] for s in samples) * 1e6,
        "cpu_get_us": statistics.mean(s["cpu_get"] for s in samples) * 1e6,
    }
    if args.trace:
        summary["breakdown"] = breakdown(samples)
    return summary


# -- the breakdown -----------------------------------------------------------------------


def _last(
    events: list[tuple], name: str, before: float, after: float, detail: Any = ...
) -> float | None:
    found = None
    for t, event, value in events:
        if t > before:
            break
        if event == name and t >= after and (detail is ... or detail(value)):
            found = t
    return found


def _first(events: list[tuple], name: str, after: float, detail: Any = ...) -> float | None:
    for t, event, value in events:
        if t >= after and event == name and (detail is ... or detail(value)):
            return t
    return None


def breakdown(samples: list[dict[str, Any]]) -> dict[str, Any]:
    timelines: dict[int, list[tuple]] = {}
    for s in samples:
        timelines.setdefault(s["value"]["pid"], []).extend(tuple(e) for e in s["value"]["events"])
    for events in timelines.values():
        events.sort(key=lambda e: e[0])
    steps: dict[str, list[float]] = {}
    after_task: dict[str, list[float]] = {"claims": [], "hdels": [], "rearm_ms": []}
    loser = {"wakeups": 0, "empty_claims": 0}
    client = {"sends": [], "reads": []}

    per_sample: list[dict[str, float]] = []

    def add(name: str, start: float | None, end: float | None) -> None:
        if start is not None and end is not None:
            steps.setdefault(name, []).append((end - start) * 1000)
            per_sample[-1][name] = (end - start) * 1000

    for s in samples:
        per_sample.append({})
        pid, tid = s["value"]["pid"], s["id"]
        events = timelines[pid]
        body = s["value"]["body"]
        received = _last(events, "received", body, s["t0"], lambda v, tid=tid: v == tid)
        wake = _last(events, "xread_reply", received or body, s["t0"])
        claim = _last(events, "claim_reply", received or body, s["t0"], lambda n: n)
        stored = _first(events, "store_reply", body, lambda ids, tid=tid: tid in ids)
        store_send = _first(events, "store_send", body, lambda ids, tid=tid: tid in ids)
        flush = _last(events, "flush_begin", store_send or 0, body)
        reads = [t for t, kind in s["client"] if kind == "read"]
        woke = reads[-1] if reads else None
        add("1 client delay() (publish)", s["t0"], s["t1"])
        add("2 publish -> worker blocking read returns", s["t1"], wake)
        add("2b publish -> worker received (decoded)", s["t1"], received)
        add("3 claim script", wake, claim)
        add("4 claimed -> received (decode, checks)", claim, received)
        add("5 received -> task body", received, body)
        add("6 body -> flush starts", body, flush)
        add("7 flush -> store_many sent", flush, store_send)
        add("8 store_many call (seen by the worker)", store_send, stored)
        add("9 store_many sent -> client's last read returns", store_send, woke)
        add("10 client's last read -> get() returns", woke, s["t2"])
        add("total", s["t0"], s["t2"])
        client["sends"].append(sum(1 for _, k in s["client"] if k == "send"))
        client["reads"].append(sum(1 for _, k in s["client"] if k == "read"))
        if stored is not None:
            rearm = _first(events, "xread_sent", stored)
            if rearm is not None:
                window = [e for e in events if stored <= e[0] <= rearm]
                after_task["claims"].append(sum(1 for e in window if e[1] == "claim_reply"))
                after_task["hdels"].append(sum(1 for e in window if e[1] == "hdel_reply"))
                after_task["rearm_ms"].append((rearm - stored) * 1000)
        for other, other_events in timelines.items():
            if other == pid:
                continue
            for t, event, value in other_events:
                if s["t1"] <= t <= s["t2"]:
                    loser["wakeups"] += event == "xread_reply"
                    loser["empty_claims"] += event == "claim_reply" and value == 0
    med = {
        name: round(statistics.median(v), 3) for name, v in sorted(steps.items(), key=_step_order)
    }
    totals = sorted(sample.get("total", 0.0) for sample in per_sample)
    p99 = totals[int(0.99 * (len(totals) - 1))] if totals else 0.0
    slow = [sample for sample in per_sample if sample.get("total", 0.0) >= p99]
    slow_steps = {name: [x[name] for x in slow if name in x] for name in steps}
    return {
        "steps_ms_median": med,
        # where the slowest 1% of round trips spent their time (median over them)
        "slowest_1pct_steps_ms_median": {
            name: round(statistics.median(v), 3)
            for name, v in sorted(slow_steps.items(), key=_step_order)
            if v
        },
        "steps_samples": {name: len(v) for name, v in steps.items()},
        "client_commands_per_call": {k: statistics.median(v) for k, v in client.items()},
        "worker_after_task": {
            k: round(statistics.median(v), 3) if v else None for k, v in after_task.items()
        },
        "other_process_per_call": {k: round(v / len(samples), 2) for k, v in loser.items()},
    }


def _step_order(item: tuple[str, Any]) -> tuple[int, str]:
    digits = re.match(r"\d+", item[0])
    return (int(digits.group()) if digits else 99, item[0])


# -- main --------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=500, help="timed round trips per run (default 500)")
    parser.add_argument(
        "--runs", type=int, default=1, help="runs, each with a fresh worker (default 1)"
    )
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--broker", choices=("redis", "amqp"), default="redis")
    parser.add_argument("--results", choices=("redis", "cache"), default="redis")
    parser.add_argument("--concurrency", "-c", type=int, default=2)
    parser.add_argument("--pool", "-P", default="prefork")
    parser.add_argument("--queue", default="h5-latency")
    parser.add_argument("--db", type=int, default=7, help="Redis database number (default 7)")
    parser.add_argument("--sqlite", default="/tmp/h5-latency.sqlite3")
    parser.add_argument("--trace", action="store_true", help="break each round trip down")
    parser.add_argument("--json", action="store_true", help="print one JSON line per run")
    parser.add_argument(
        "--experiment",
        default="",
        help="worker-side experiments of bench/latency_app/tasks.py (e.g. take_waiting)",
    )
    parser.add_argument(
        "--root", default=str(ROOT), help="run the code of this copy of the repository (A/B runs)"
    )
    args = parser.parse_args()

    env = environment(args)
    os.environ.update(env)
    sys.path.insert(0, args.root)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    if args.trace:
        trace_client()
    label = f"broker={args.broker} results={args.results} -c {args.concurrency} -P {args.pool}"
    if args.experiment:
        label += f" experiment={args.experiment}"
    runs = []
    for number in range(args.runs):
        summary = run(args, env)
        runs.append(summary)
        if args.json:
            print(json.dumps({"label": label, **summary}), flush=True)
            continue
        print(
            f"run {number + 1}: {label}, n={args.n}: p50 {summary['p50']:.2f} ms, p90 {summary['p90']:.2f}, "
            f"p99 {summary['p99']:.2f}, max {summary['max']:.2f}; client CPU/call: delay() "
            f"{summary['cpu_delay_us']:.0f} us, get() {summary['cpu_get_us']:.0f} us",
            flush=True,
        )
        if args.trace:
            print(json.dumps(summary["breakdown"], indent=2), flush=True)
    if len(runs) > 1 and not args.json:
        keys = ("p50", "p90", "p99", "cpu_delay_us", "cpu_get_us")
        median = {k: statistics.median(r[k] for r in runs) for k in keys}
        print(
            f"median of {len(runs)} runs: p50 {median['p50']:.2f} ms, p90 {median['p90']:.2f}, "
            f"p99 {median['p99']:.2f}; client CPU/call: delay() {median['cpu_delay_us']:.0f} us, "
            f"get() {median['cpu_get_us']:.0f} us"
        )


if __name__ == "__main__":
    main()
