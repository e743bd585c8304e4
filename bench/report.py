"""Write ``docs/benchmarks-peers.md`` (and the charts) from a results file.

``python -m bench.report [results.jsonl]`` (default: the newest in bench/results/).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from .stats import BROKER_ORDER, BROKER_TITLES, Results, Summary, latest, load
from .targets import GOALS, dbscale_rows, floor_rows, judge, p99_verdict

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DOC = REPO / "docs" / "benchmarks-peers.md"
#: the summary page, whose Targets table each run refreshes (between these markers)
SUMMARY_DOC = REPO / "docs" / "benchmarks.md"
TARGETS_BEGIN, TARGETS_END = "<!-- targets:begin -->", "<!-- targets:end -->"
IMG = REPO / "docs" / "img"
TOOLS_PYTHON = BENCH / ".peers" / "_tools" / "bin" / "python"
RESULT_TITLES = {"off": "off", "redis": "Redis", "db": "database"}


def cell(s: Summary | None, fmt: str = "{:,.0f}") -> str:
    if s is None:
        return "—"
    text = fmt.format(s.median)
    if len(s.values) > 1 and fmt.format(s.low) != fmt.format(s.high):
        text += f" ({fmt.format(s.low)}–{fmt.format(s.high)})"
    return text + (" †" if s.windowed else "")


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + [""]


def _systems(res: Results) -> list[str]:
    present = {t[0] for t in res.targets()}
    from .stats import SYSTEM_ORDER

    return [s for s in SYSTEM_ORDER if s in present]


def section_enqueue(res: Results) -> list[str]:
    rows = []
    seen: set[tuple[str, str]] = set()
    for system, broker, _ in res.targets():
        if (system, broker) in seen:
            continue
        seen.add((system, broker))
        # Every core run starts with an enqueue: pool them (results on or off) per broker.
        match = dict(system=system, broker=broker, concurrency=2)
        plain = res.summary("enqueue_rate", enqueue_mode="plain", **match)
        bulk = res.summary("enqueue_rate", enqueue_mode="bulk", **match)
        rows.append([res.title(system), BROKER_TITLES[broker], cell(plain), cell(bulk)])
    return ["## Enqueue rate", "",
            "Tasks per second sent by one process: `delay()` (or the system's equivalent) in a "
            "loop, and the bulk path where the system has one. Every run of a system on a broker "
            "(results off and on) contributes a sample.", "",
            *table(["system", "broker", "one call per task", "bulk"], rows)]  # fmt: skip


def section_throughput(res: Results) -> list[str]:
    brokers = [b for b in BROKER_ORDER if any(t[1] == b for t in res.targets())]
    rows = []
    for system in _systems(res):
        row = [res.title(system)]
        for broker in brokers:
            s = res.summary(
                "throughput", system=system, broker=broker, results="off", concurrency=2
            )
            if s is None:
                s = res.summary(
                    "throughput", system=system, broker=broker, results="db", concurrency=2
                )
                row.append(cell(s) + " ‡" if s else "—")
            else:
                row.append(cell(s))
        rows.append(row)
    on_rows = []
    for system, broker, results in res.targets():
        if results == "off":
            continue
        s = res.summary("throughput", system=system, broker=broker, results=results, concurrency=2)
        stored = res.summary("results_stored", system=system, broker=broker, results=results)
        on_rows.append([res.title(system), BROKER_TITLES[broker], RESULT_TITLES[results], cell(s),
                        cell(stored)])  # fmt: skip
    return [
        "## End-to-end throughput", "",
        "No-op tasks per second at concurrency 2, from the start of the first task to the end of "
        "the last (worker start-up excluded).", "",
        "### Results off", "",
        *table(["system", *[BROKER_TITLES[b] for b in brokers]], rows),
        "‡ this system always stores results; its figure is with results on.", "",
        "### Results on", "",
        *table(["system", "broker", "results in", "tasks/s", "results stored"], on_rows),
    ]  # fmt: skip


def section_roundtrip(res: Results) -> list[str]:
    rows = []
    for system, broker, results in res.targets():
        p50 = res.summary("rt_p50_ms", system=system, broker=broker, results=results)
        if p50 is None:
            continue
        p99 = res.summary("rt_p99_ms", system=system, broker=broker, results=results)
        n = res.summary("rt_n", system=system, broker=broker, results=results)
        rows.append([res.title(system), BROKER_TITLES[broker], RESULT_TITLES[results],
                     cell(p50, "{:,.2f}"), cell(p99, "{:,.2f}"), cell(n)])  # fmt: skip
    return ["## Round-trip latency", "",
            "Sequential `delay().get()` (or equivalent) from one client, in milliseconds.", "",
            *table(["system", "broker", "results in", "p50 ms", "p99 ms", "samples"], rows)]  # fmt: skip


def section_resources(res: Results) -> list[str]:
    rows = []
    for system, broker, results in res.targets():

        def s(metric: str, system=system, broker=broker, results=results) -> Summary | None:
            return res.summary(metric, system=system, broker=broker, results=results, concurrency=2)

        rows.append([res.title(system), BROKER_TITLES[broker], RESULT_TITLES[results],
                     cell(s("peak_rss_mb")), cell(s("peak_pss_mb")), cell(s("worker_processes")),
                     cell(s("cpu_ms_per_task"), "{:,.2f}")])  # fmt: skip
    return ["## Worker memory and CPU", "",
            "Peak of the summed RSS and PSS of all worker processes (MB, sampled every 0.25 s), "
            "and user+system CPU time of the worker processes per task (ms), concurrency 2.", "",
            *table(["system", "broker", "results", "peak RSS MB", "peak PSS MB", "processes",
                    "CPU ms/task"], rows)]  # fmt: skip


def section_scaling(res: Results) -> list[str]:
    out = ["## Scaling (Redis broker, results off, one round)", ""]
    systems = sorted(
        {r["system"] for r in res.ok if r.get("kind", "").startswith("scale")},
        key=lambda s: _systems(res).index(s) if s in _systems(res) else 99,
    )
    if not systems:
        return out + ["Not run in this mode.", ""]
    cs = sorted({r["concurrency"] for r in res.ok if r.get("kind") == "scale-c"} | {2})
    rows = []
    for system in systems:
        row, found = [res.title(system)], []
        for c in cs:
            kind = "core" if c == 2 else "scale-c"
            s = res.summary("throughput", kind=kind, system=system, broker="redis",
                            results="off", concurrency=c)  # fmt: skip
            row.append(cell(s))
            found.append(s)
        rows.append([*row, _ratio(found[0], found[-1])])
    out += ["Tasks/s by concurrency, and the throughput at the highest concurrency as a "
            "multiple of the lowest (×4 would be linear from c=1 to c=4 on 2 cores, ×2 is "
            "what the cores allow):", "",
            *table(["system", *[f"c={c}" for c in cs], f"c={cs[-1]} / c={cs[0]}"], rows)]  # fmt: skip
    core_n = res.meta.get("n")
    ns = sorted(
        {r["n"] for r in res.ok if r.get("kind") == "scale-n"} | ({core_n} if core_n else set())
    )
    rows = []
    for system in systems:
        row, found = [res.title(system)], []
        for n in ns:
            kind = "core" if n == core_n else "scale-n"
            match = dict(
                kind=kind, system=system, broker="redis", results="off", concurrency=2, n=n
            )
            s = res.summary("throughput", **match)
            found.append(s)
            text = cell(s)
            queued = res.summary("queued", **match)
            if queued is not None and queued.median < n:
                text += f" [{queued.median:,.0f} queued]"
            row.append(text)
        rows.append([*row, _ratio(found[0], found[-1])])
    out += ["Tasks/s by batch size (tasks queued before the workers start; fewer when the "
            "enqueue time box ran out first), and the rate with the largest batch as a "
            "multiple of the smallest (×1: the per-task cost does not grow with the backlog):",
            "", *table(["system", *[f"{n:,}" for n in ns], f"{ns[-1]:,} / {ns[0]:,}"], rows)]  # fmt: skip
    return out


def _ratio(first: Summary | None, last: Summary | None) -> str:
    if first is None or last is None or not first.median:
        return "—"
    return f"×{last.median / first.median:.2f}"


def _num(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    return f"{value:,.2f} {unit}" if unit == "ms" else f"{value:,.0f} {unit}"


def section_targets(res: Results) -> list[str]:
    rows = []
    for goal in GOALS:
        v = judge(res, goal)
        sign = "≥" if goal.higher_is_better else "≤"
        want = f"{sign} {goal.factor:g}× " + ("the best peer" if not goal.peers else "it")
        if not goal.higher_is_better:
            want = f"≤ {1 / goal.factor:g}× " + ("the best peer's" if not goal.peers else "its")
        peer = f"{res.title(v.peer)}: {_num(v.theirs, goal.unit)}" if v.peer else "—"
        ratio = f"{v.ratio:.2f}×" if v.ratio is not None else "—"
        met = {True: "✅ met", False: "❌ not met", None: "not measured"}[v.met]
        rows.append([goal.label, want, _num(v.ours, goal.unit), peer, ratio, met])
    p99, p50 = p99_verdict(res)
    ok = None if p99 is None or p50 is None else p99 <= 2 * p50
    rows.append(["Round-trip p99 against our own p50, Redis, results in Redis", "p99 ≤ 2× our p50",
                 _num(p99, "ms"), f"our p50: {_num(p50, 'ms')}",
                 f"{p99 / p50:.2f}×" if ok is not None else "—",
                 {True: "✅ met", False: "❌ not met", None: "not measured"}[ok]])  # fmt: skip
    return ["## Targets", "",
            "Issue 5's targets, against the best peer measured in this run (medians). The ratio "
            "is ours / the peer's where more is better and the peer's / ours where less is "
            "better, so each target needs a ratio of at least the factor shown.", "",
            *table(["target", "needs", "django-tasks-q", "best peer", "ratio", ""], rows)]  # fmt: skip


def section_floor(res: Results) -> list[str]:
    out = ["## Cost against the floor", ""]
    if not res.floor:
        return out + ["The floor (`python -m bench.floor`) was not run with this suite.", ""]
    rows = []
    for what, ours, floor, basis in floor_rows(res):
        multiple = f"{ours / floor:.1f}×" if ours and floor else "—"
        rows.append([what, _num(ours, "µs"), _num(floor, "µs"), multiple, basis])
    return out + [
        "Our per-task cost next to the physical floor on this machine (`bench/floor.py`: the "
        "same Redis or PostgreSQL operations and the protocol-v2 JSON work, with no task "
        "system around them).", "",
        *table(["per task", "django-tasks-q", "floor", "multiple", "the floor is"], rows),
    ]  # fmt: skip


def section_dbscale(res: Results) -> list[str]:
    out = ["## Database costs as the tables grow (PostgreSQL)", ""]
    if not res.dbscale:
        return out + ["Not run with this suite (`python -m bench.db_scaling`).", ""]
    sizes, rows = dbscale_rows(res)
    ops = int(res.dbscale[0].get("ops", 1000))
    header = ["operation", *[f"µs/op, {n:,} rows" for n in sizes], "growth"]
    return out + [
        "Our own code (`django://`'s claim and publish, the `django-db` result store) timed "
        "with empty tables and with the rows shown already there: queued messages in the "
        f"queue being claimed, stored results. Median of 3 passes of {ops:,} operations; "
        "\"flat\": within 25% of the empty-table cost; \"no growth\": cheaper.", "",
        *table(header, rows),
    ]  # fmt: skip


def section_setup(res: Results) -> list[str]:
    m = res.meta
    svc = m.get("services", {})
    lines = [
        "## Machine", "",
        f"- CPU: {m.get('cpu')} ({m.get('cores')} cores), {m.get('memory_gib')} GiB memory, "
        f"Linux {m.get('kernel')}, Python {m.get('python')}",
        f"- Redis {svc.get('redis')}, PostgreSQL {svc.get('postgresql')}, "
        f"RabbitMQ {svc.get('rabbitmq')}, all on loopback and shared by every system",
        "", "## Versions and configuration", "",
    ]  # fmt: skip
    rows = []
    versions = m.get("versions", {})
    for system in _systems(res):
        pins = versions.get(system, "repository working tree (.venv)")
        rows.append([res.title(system), f"`{pins}`", m.get("notes", {}).get(system, "")])
    return lines + table(["system", "installed", "how it runs"], rows)


METHOD = """## Method

- Every system runs on this one machine, against the same Redis, RabbitMQ and PostgreSQL.
  Each has its own virtualenv, its own Redis database number and its own PostgreSQL
  database; they are emptied before every run.
- Runs are interleaved: each round runs every configuration once, systems alternating
  inside each comparison group; tables give the median and the min–max over the runs
  (the rounds; for the enqueue rate, also the runs with results on and off).
- A run: one client process enqueues the tasks (timed: the enqueue rate), then the
  workers start on the full queue. Each task body makes one Redis call that counts it and
  stamps the first start and the last finish, so worker start-up is outside the timed
  span. With results on, the harness checks that every result was stored, and waits for
  them where a system writes results after the task body.
- Time boxes keep slow systems from taking the whole budget: the client stops enqueueing
  after a few seconds, and processing is measured over at most a fixed window. A figure
  marked † was measured over such a window (tasks done in the window / its length).
- CPU per task is user+system time of all worker processes (and their reaped children)
  between the first and the last task, divided by the tasks run in between.
- Concurrency 2 means two worker processes for every system (threads are set to one).
"""


def render(res: Results, images: list[str]) -> str:
    m = res.meta
    head = [
        "# Benchmarks: django-tasks-q and its peers", "",
        f"Generated by `python -m bench.suite --{m.get('mode', '?')}` "
        f"(started {m.get('started', '?')} UTC): {m.get('rounds')} round(s), "
        f"{m.get('n'):,} tasks per run. Raw data: `bench/results/` (not committed).", "",
    ]  # fmt: skip
    body = [*section_setup(res), METHOD, *section_targets(res), *section_enqueue(res),
            *section_throughput(res), *section_roundtrip(res), *section_resources(res),
            *section_scaling(res), *section_dbscale(res), *section_floor(res)]  # fmt: skip
    if images:
        body += (
            ["## Charts", ""] + [f"![{Path(i).stem}](img/{Path(i).name})" for i in images] + [""]
        )
    problems = [f"- {r['system']}/{r['broker']}/results-{r['results']} round {r.get('round')}: "
                f"{r['error'].splitlines()[0][:300]}" for r in res.errors]  # fmt: skip
    problems += [f"- skipped {s['kind']} {s['system']} n={s['n']} c={s['concurrency']}: {s['why']}"
                 for s in res.skipped]  # fmt: skip
    if problems:
        body += ["## Failed or skipped runs", "", *problems, ""]
    return "\n".join(head + body).rstrip() + "\n"


def charts(path: Path, log: Callable[[str], None]) -> list[str]:
    if not TOOLS_PYTHON.exists():
        log("[report] no matplotlib venv (bench/.peers/_tools): charts skipped")
        return []
    done = subprocess.run(
        [str(TOOLS_PYTHON), "-m", "bench.charts", str(path), str(IMG)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        log(f"[report] charts failed:\n{done.stderr[-2000:]}")
        return []
    return [line for line in done.stdout.splitlines() if line.endswith(".png")]


def splice_targets(res: Results, doc: Path = SUMMARY_DOC) -> bool:
    """Put this run's Targets table into ``doc`` between the markers; False without them."""
    if not doc.exists():
        return False
    text = doc.read_text()
    start, end = text.find(TARGETS_BEGIN), text.find(TARGETS_END)
    if start < 0 or end < start:
        return False
    m = res.meta
    section = section_targets(res)
    section[0] = (
        f"### Targets: `make bench-{m.get('mode', '?')}` of {m.get('started', '?')} UTC "
        f"({m.get('rounds')} round(s), {m.get('n'):,} tasks per run)"
    )
    block = "\n".join([TARGETS_BEGIN, *section, "", TARGETS_END])
    doc.write_text(text[:start] + block + text[end + len(TARGETS_END) :])
    return True


def write(path: Path, log: Callable[[str], None] = print) -> Path:
    res = load(path)
    images = charts(path, log)
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(render(res, images))
    if splice_targets(res):
        log(f"[report] updated the Targets table in {SUMMARY_DOC.relative_to(REPO)}")
    log(
        f"[report] wrote {DOC.relative_to(REPO)} and {len(images)} chart(s) in {IMG.relative_to(REPO)}"
    )
    return DOC


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else latest(BENCH / "results"))
