"""The client half of every adapter: enqueue N tasks or time N round trips.

A peer's ``client.py`` calls :func:`main` with three callables and this module
does the timing, so every system is timed by the same code. It prints one JSON
line on stdout, which the harness reads.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

BULK_CHUNK = 500  # tasks per bulk call


def _enqueue(
    one: Callable[[], object],
    bulk: Callable[[int], object] | None,
    n: int,
    use_bulk: bool,
    max_seconds: float,
) -> dict:
    """Enqueue up to ``n`` tasks, stopping early once ``max_seconds`` have passed."""
    # The first call is untimed: it opens connections and imports lazily loaded code.
    one()
    rest, done = n - 1, 0
    mode = "bulk" if use_bulk and bulk is not None else "plain"
    started = time.perf_counter()
    deadline = started + max_seconds
    if mode == "bulk":
        while done < rest and time.perf_counter() < deadline:
            step = min(BULK_CHUNK, rest - done)
            bulk(step)
            done += step
    else:
        clock = time.perf_counter
        while done < rest and clock() < deadline:  # a clock read costs ~0.1% of a call
            one()
            done += 1
    seconds = time.perf_counter() - started
    rate = done / seconds if done else 0.0
    return {"n": done + 1, "timed": done, "seconds": seconds, "mode": mode, "rate": rate}


def _roundtrip(rt: Callable[[], object], n: int, max_seconds: float) -> dict:
    rt()  # warm-up, untimed
    latencies: list[float] = []
    deadline = time.monotonic() + max_seconds
    for _ in range(n):
        started = time.perf_counter()
        rt()
        latencies.append(time.perf_counter() - started)
        if time.monotonic() > deadline:
            break
    return {"n": len(latencies), "latencies": latencies}


def main(
    one: Callable[[], object],
    roundtrip: Callable[[], object] | None = None,
    bulk: Callable[[int], object] | None = None,
    argv: list[str] | None = None,
) -> None:
    parser = argparse.ArgumentParser(description="bench client")
    sub = parser.add_subparsers(dest="command", required=True)
    enq = sub.add_parser("enqueue")
    enq.add_argument("--n", type=int, required=True)
    enq.add_argument("--bulk", action="store_true")
    enq.add_argument("--max-seconds", type=float, default=3600.0)
    rtp = sub.add_parser("roundtrip")
    rtp.add_argument("--n", type=int, required=True)
    rtp.add_argument("--max-seconds", type=float, default=60.0)
    args = parser.parse_args(argv)
    if args.command == "enqueue":
        out = _enqueue(one, bulk, args.n, args.bulk, args.max_seconds)
    else:
        if roundtrip is None:
            raise SystemExit("this system has no round-trip path")
        out = _roundtrip(roundtrip, args.n, args.max_seconds)
    sys.stdout.write("BENCH-RESULT " + json.dumps(out) + "\n")
    sys.stdout.flush()
