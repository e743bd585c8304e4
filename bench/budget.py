"""How long ``make bench-full`` should take, estimated from a quick run's results.

``python -m bench.budget [bench/results/<stamp>-quick.jsonl]`` (default: the newest
quick results).  Each run of the full plan is estimated from the quick run of the same
configuration: its fixed cost (reset, client and worker start-up, stop) plus the work
scaled to the full mode's task count and cut at the full mode's time boxes, the way
the suite's own budget check (``suite.estimate``) does for the scaling runs.  The
floor and the database timings are scaled from their quick durations.  The scaling
runs are added in order until the budget is spent, as the suite skips the rest.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .plan import FULL, QUICK, Mode, Run, core_targets, round_runs, scaling_runs
from .stats import latest, load

#: seconds for setup (venv checks, rebuilding our bench databases) and the report
FIXED_SECONDS = 45.0


def _timing(records: list[dict], name: str) -> float | None:
    for rec in records:
        if rec.get("type") == "timing" and rec.get("name") == name:
            return float(rec["seconds"])
    return None


def run_seconds(run: Run, quick: dict, mode: Mode) -> float:
    """One full-mode run, from the quick record of the same configuration."""
    enq_q = quick["queued"] / quick["enqueue_rate"]
    rt_q = quick.get("rt_n", 0) * quick.get("rt_mean_ms", 0) / 1000
    overhead = max(0.0, quick["seconds"] - enq_q - quick["span_s"] - rt_q)
    lim = run.limits
    queued = min(run.n, quick["enqueue_rate"] * lim.enqueue_seconds)
    work = min(run.n / quick["enqueue_rate"], lim.enqueue_seconds)
    work += min(queued / quick["throughput"], lim.window_seconds)
    if run.roundtrips:
        mean = quick.get("rt_mean_ms", 10.0) / 1000
        work += min(run.roundtrips * mean, lim.roundtrip_seconds)
        if queued / quick["throughput"] > lim.window_seconds:
            work += overhead / 2  # round trips then run on freshly started workers
    return overhead + work


def estimate(path: Path, mode: Mode = FULL) -> dict:
    res = load(path)
    records = [*res.runs, *res.skipped]
    with_raw = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    by_target = {(r["system"], r["broker"], r["results"]): r for r in res.ok if r["kind"] == "core"}
    systems = tuple(sorted({r["system"] for r in records}))
    targets = [t for t in core_targets(systems) if (t.system, t.broker, t.results) in by_target]
    core = (
        sum(
            run_seconds(
                run, by_target[(run.target.system, run.target.broker, run.target.results)], mode
            )
            for run in round_runs(mode, targets)
        )
        * mode.rounds
    )
    missing = [t.key for t in core_targets(systems) if t not in targets]
    floor_q = _timing(with_raw, "floor")
    floor = (floor_q or 30.0) * (3.0 if mode.floor_full else 1.0) + (60.0 if mode.floor_full else 0)
    db_q = _timing(with_raw, "db_scaling")
    quick_rows = max(QUICK.db_rows or (1,))
    full_rows = max(mode.db_rows or (1,))
    load_q = max((r.get("load_s", 0.0) for r in res.dbscale), default=10.0)
    ops_q = max((int(r.get("ops", QUICK.db_ops)) for r in res.dbscale), default=QUICK.db_ops)
    timed_q = max(0.0, (db_q or 60.0) - load_q)  # set-up and the timed operations
    db = load_q * full_rows / quick_rows + timed_q * mode.db_ops / ops_q
    budget = 60 * mode.budget_minutes
    used = FIXED_SECONDS + core + floor + db
    scaling_done, scaling_skipped = [], []
    for run in scaling_runs(mode, systems):
        quick = by_target.get((run.target.system, "redis", "off"))
        if quick is None:
            scaling_skipped.append(run)
            continue
        seconds = run_seconds(run, quick, mode)
        if used + seconds <= budget:
            used += seconds
            scaling_done.append((run, seconds))
        else:
            scaling_skipped.append(run)
    return {
        "core_s": core, "floor_s": floor, "db_scaling_s": db, "fixed_s": FIXED_SECONDS,
        "scaling_s": sum(s for _, s in scaling_done), "scaling_runs": len(scaling_done),
        "scaling_skipped": [f"{r.kind} {r.target.system} n={r.n} c={r.concurrency}"
                            for r in scaling_skipped],
        "total_s": used, "budget_s": budget, "missing_quick_targets": missing,
        "quick_total_s": _timing(with_raw, "suite"),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0]) if argv else latest_quick()
    est = estimate(path)
    print(f"From {path}:")
    if est["quick_total_s"]:
        print(f"  the quick run itself took {est['quick_total_s'] / 60:.1f} min")
    for key, label in (("fixed_s", "setup and report"), ("core_s", "core runs (3 rounds)"),
                       ("floor_s", "floor"), ("db_scaling_s", "database scaling (1,000,000 rows)"),
                       ("scaling_s", f"scaling curves ({est['scaling_runs']} runs that fit)")):  # fmt: skip
        print(f"  {label:<40} {est[key] / 60:6.1f} min")
    print(f"  {'estimated total':<40} {est['total_s'] / 60:6.1f} min "
          f"(budget {est['budget_s'] / 60:.0f} min)")  # fmt: skip
    for item in est["scaling_skipped"]:
        print(f"  would be skipped by the budget: {item}")
    for key in est["missing_quick_targets"]:
        print(f"  no quick figure for {key} (failed run?): not counted")
    return 0


def latest_quick() -> Path:
    from .suite import RESULTS_DIR

    quick = sorted(RESULTS_DIR.glob("*-quick.jsonl"))
    return quick[-1] if quick else latest(RESULTS_DIR)


if __name__ == "__main__":
    raise SystemExit(main())
