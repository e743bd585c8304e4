"""Run django-tasks-q and its peers side by side: ``python -m bench.suite --quick|--full``.

Writes raw JSON lines to ``bench/results/<stamp>-<mode>.jsonl``, then the
markdown report (``docs/benchmarks-peers.md``) and the charts (``docs/img/``).
See bench/README.md for the method.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from dataclasses import replace
from datetime import UTC, datetime

from . import db_scaling, floor, machine
from .harness import measure
from .peers import ORDER, adapters
from .peers.base import BENCH, ensure_venv
from .plan import BROKER_ORDER, FULL, QUICK, Mode, Run, core_targets, round_runs, scaling_runs

RESULTS_DIR = BENCH / "results"


def log(msg: str) -> None:
    print(msg, flush=True)


def _csv(value: str | None, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    if not value:
        return allowed
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    unknown = [v for v in items if v not in allowed]
    if unknown:
        raise SystemExit(f"unknown {what} {unknown}; choose from {', '.join(allowed)}")
    return items


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.suite", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--quick", action="store_true", help="1 round of 1,000 tasks (under 5 minutes)"
    )
    mode.add_argument(
        "--full",
        action="store_true",
        help="3 rounds of 10,000 tasks and the scaling curves (under 30 minutes)",
    )
    mode.add_argument(
        "--setup-only",
        action="store_true",
        help="install the peers' venvs and prepare their databases, then stop",
    )
    p.add_argument("--systems", help=f"comma-separated subset of {','.join(ORDER)}")
    p.add_argument("--brokers", help=f"comma-separated subset of {','.join(BROKER_ORDER)}")
    p.add_argument("--rounds", type=int, help="override the mode's number of rounds")
    p.add_argument("--n", type=int, help="override the mode's tasks per run")
    p.add_argument("--no-scaling", action="store_true", help="skip the scaling curves")
    p.add_argument("--no-floor", action="store_true", help="skip the floor (bench.floor)")
    p.add_argument(
        "--no-db-scaling",
        action="store_true",
        help="skip the database claim / result-write timings at 0 and N rows (bench.db_scaling)",
    )
    p.add_argument("--budget-minutes", type=float, help="skip scaling runs that would pass this")
    p.add_argument(
        "--no-report",
        action="store_true",
        help="do not write docs/benchmarks-peers.md and the charts",
    )
    return p.parse_args(argv)


def setup(systems: tuple[str, ...], brokers: tuple[str, ...]) -> None:
    table = adapters()
    targets = core_targets(systems, brokers)
    for name in systems:
        mine = [t for t in targets if t.system == name]
        if mine:
            table[name].setup(mine, log=log)
    ensure_venv("_tools", log)


def estimate(run: Run, done: list[dict]) -> float | None:
    """Seconds a run should take, from a finished run of the same target; None if unknown."""
    for rec in done:
        t = run.target
        if (rec.get("system"), rec.get("broker"), rec.get("results")) != (
            t.system,
            t.broker,
            t.results,
        ):
            continue
        if "error" in rec or not rec.get("throughput"):
            continue
        work = rec["queued"] / rec["enqueue_rate"] + rec["span_s"]
        overhead = max(0.0, rec["seconds"] - work)
        lim = run.limits
        return (overhead + min(run.n / rec["enqueue_rate"], lim.enqueue_seconds)
                + min(run.n / rec["throughput"], lim.window_seconds))  # fmt: skip
    return None


def execute(run: Run, rnd: int, table: dict, log_dir) -> dict:
    t = run.target
    t0 = time.monotonic()
    try:
        rec = measure(table[t.system], t, n=run.n, concurrency=run.concurrency, bulk=run.bulk,
                      roundtrips=run.roundtrips, limits=run.limits, log_dir=log_dir)  # fmt: skip
    except Exception as exc:  # one broken system must not stop the others
        rec = {"system": t.system, "broker": t.broker, "results": t.results, "n": run.n,
               "concurrency": run.concurrency, "error": f"{type(exc).__name__}: {exc}"}  # fmt: skip
        if not isinstance(exc, RuntimeError):
            rec["traceback"] = traceback.format_exc()[-2000:]
    rec.update(type="run", kind=run.kind, round=rnd, seconds=time.monotonic() - t0)
    return rec


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    systems = _csv(args.systems, ORDER, "systems")
    brokers = _csv(args.brokers, BROKER_ORDER, "brokers")
    started = time.monotonic()
    setup(systems, brokers)
    if args.setup_only:
        log("[setup] done")
        return 0
    mode: Mode = QUICK if args.quick else FULL
    if args.rounds:
        mode = replace(mode, rounds=args.rounds)
    if args.n:
        mode = replace(mode, n=args.n)
    budget = 60 * (args.budget_minutes or mode.budget_minutes)
    table = adapters()
    targets = core_targets(systems, brokers)

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_path = RESULTS_DIR / f"{stamp}-{mode.name}.jsonl"
    log_dir = RESULTS_DIR / "logs" / stamp
    meta = {"type": "meta", "mode": mode.name, "rounds": mode.rounds, "n": mode.n,
            "started": stamp, "limits": vars(mode.limits), **machine.describe(table)}  # fmt: skip

    schedule: list[tuple[int, Run]] = []
    for r in range(1, mode.rounds + 1):
        schedule += [(r, run) for run in round_runs(mode, targets)]
    scaling = [] if args.no_scaling else [(1, run) for run in scaling_runs(mode, systems)]
    log(f"[suite] {mode.name}: {len(schedule) + len(scaling)} runs, {mode.rounds} round(s) "
        f"-> {out_path}")  # fmt: skip

    done: list[dict] = []
    total = len(schedule) + len(scaling)
    with open(out_path, "w") as out:
        out.write(json.dumps(meta) + "\n")
        round_started = time.monotonic()
        for i, (rnd, run) in enumerate(schedule, 1):
            record(out, done, execute(run, rnd, table, log_dir), f"[{i}/{total}]", run, rnd)
            last_of_round = i == len(schedule) or schedule[i][0] != rnd
            if last_of_round:
                took = time.monotonic() - round_started
                round_started = time.monotonic()
                out.write(json.dumps({"type": "timing", "name": f"round-{rnd}", "seconds": took}))
                out.write("\n")
                projected = time.monotonic() - started + took * (mode.rounds - rnd)
                if rnd < mode.rounds and projected > budget:
                    log(f"[suite] WARNING: round {rnd} took {took / 60:.1f} min; the core rounds "
                        f"alone will end at ~{projected / 60:.0f} min, past the "
                        f"{budget / 60:.0f}-minute budget (is the machine busy?)")  # fmt: skip
        if not args.no_floor:
            n, pg_n = mode.floor_ops
            figures = lambda: floor.run(mode.floor_full, n=n, pg_n=pg_n)  # noqa: E731
            extra(out, "floor", lambda: [{"type": "floor", "results": figures()}])
        if not args.no_db_scaling and mode.db_rows and "postgres" in brokers:
            rows = list(mode.db_rows)
            extra(out, "db_scaling", lambda: db_scaling.run_in_subprocess(rows, mode.db_ops))
        for i, (rnd, run) in enumerate(scaling, len(schedule) + 1):
            label = (
                f"[{i}/{total}] {run.kind} r{rnd} {run.target.key} n={run.n} c={run.concurrency}"
            )
            guess = estimate(run, done)
            left = budget - (time.monotonic() - started)
            if guess is None or guess > left:
                why = "no estimate" if guess is None else f"needs ~{guess:.0f} s, {left:.0f} s left"
                rec = {"type": "skipped", "kind": run.kind, "system": run.target.system,
                       "n": run.n, "concurrency": run.concurrency, "why": why}  # fmt: skip
                out.write(json.dumps(rec) + "\n")
                log(f"{label}: skipped ({why})")
                continue
            record(out, done, execute(run, rnd, table, log_dir), f"[{i}/{total}]", run, rnd)
        minutes = (time.monotonic() - started) / 60
        out.write(json.dumps({"type": "timing", "name": "suite", "seconds": 60 * minutes}) + "\n")
    failures = sum(1 for r in done if "error" in r)
    log(f"[suite] done in {minutes:.1f} min, {failures} failed run(s); raw data: {out_path}")
    if not args.no_report:
        from . import report

        report.write(out_path, log=log)
    return 1 if failures else 0


def record(out, done: list[dict], rec: dict, prefix: str, run: Run, rnd: int) -> None:
    done.append(rec)
    out.write(json.dumps(rec) + "\n")
    out.flush()
    label = f"{run.kind} r{rnd} {run.target.key} n={run.n} c={run.concurrency}"
    log(f"{prefix} {label}: {summary(rec)} ({rec['seconds']:.1f} s)")


def extra(out, name: str, produce) -> None:
    """Run one of the non-peer measurements; a failure is recorded, not fatal."""
    log(f"[suite] {name} ...")
    t0 = time.monotonic()
    try:
        records = produce()
    except Exception as exc:
        records = [{"type": "extra-error", "name": name, "error": f"{type(exc).__name__}: {exc}"}]
        log(f"[suite] {name} failed: {records[0]['error'][:500]}")
    seconds = time.monotonic() - t0
    for rec in records:
        out.write(json.dumps(rec) + "\n")
    out.write(json.dumps({"type": "timing", "name": name, "seconds": seconds}) + "\n")
    out.flush()
    log(f"[suite] {name}: {len(records)} record(s) in {seconds:.1f} s")


def summary(rec: dict) -> str:
    if "error" in rec:
        return "ERROR " + rec["error"].splitlines()[0][:300]
    parts = [
        f"enqueue {rec['enqueue_rate']:,.0f}/s ({rec['enqueue_mode']})",
        f"{rec['throughput']:,.0f} tasks/s over {rec['completed']:,}"
        + ("" if rec["complete"] else f" of {rec['queued']:,} (window)"),
        f"cpu {rec['cpu_ms_per_task']:.2f} ms/task",
        f"rss {rec['peak_rss_mb']:.0f} MB pss {rec['peak_pss_mb']:.0f} MB",
    ]
    if "rt_p50_ms" in rec:
        parts.append(
            f"rt p50 {rec['rt_p50_ms']:.2f} p99 {rec['rt_p99_ms']:.2f} ms (n={rec['rt_n']})"
        )
    if rec.get("executed", rec["queued"]) != rec["queued"]:
        parts.append(f"EXECUTED {rec['executed']} of {rec['queued']}")
    if (
        "results_stored" in rec
        and rec["results_stored"] is not None
        and rec["complete"]
        and rec["results_stored"] < rec["queued"]
    ):
        parts.append(f"ONLY {rec['results_stored']} RESULTS STORED")
    return ", ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
