"""Issue 5's targets, our cost against the floor, and how database costs grow (stdlib only).

Every figure is a median over the runs of one configuration (see ``stats.Summary``).
A target compares our figure with the best peer's in the same run: the ratio is
ours / peer where more is better (throughput, enqueue rate) and peer / ours where
less is better (latency, memory), so a ratio of at least the target's factor meets it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .stats import Results

US = "tasks_q"


@dataclass(frozen=True)
class Goal:
    label: str
    metric: str
    match: dict[str, Any]
    factor: float  # the ratio needed
    higher_is_better: bool = True
    peers: tuple[str, ...] = ()  # () = every other system measured on the same configuration
    #: the peers' configurations, when they differ from ours (a peer's best one counts)
    peer_matches: tuple[dict[str, Any], ...] = ()
    unit: str = "tasks/s"


GOALS = (
    Goal("Enqueue rate, Redis: one `delay()` per task", "enqueue_rate",
         {"broker": "redis", "enqueue_mode": "plain"}, 1.0, unit="tasks/s"),
    Goal("Enqueue rate, Redis: bulk path (peers: their fastest way)", "enqueue_rate",
         {"broker": "redis", "enqueue_mode": "bulk"}, 1.0,
         peer_matches=({"broker": "redis", "enqueue_mode": "plain"},
                       {"broker": "redis", "enqueue_mode": "bulk"})),
    Goal("Throughput, Redis, results off", "throughput",
         {"broker": "redis", "results": "off"}, 1.5),
    Goal("Throughput, Redis broker, results in PostgreSQL (vs Celery + django-celery-results)",
         "throughput", {"broker": "redis", "results": "db"}, 2.0, peers=("celery",)),
    Goal("Throughput, Redis, results in Redis", "throughput",
         {"broker": "redis", "results": "redis"}, 1.5),
    Goal("Round-trip p50, Redis, results in Redis", "rt_p50_ms",
         {"broker": "redis", "results": "redis"}, 1.0, higher_is_better=False, unit="ms"),
    Goal("Throughput, `django://` on PostgreSQL (vs django-tasks-db, which always stores results)",
         "throughput", {"broker": "postgres", "results": "db"}, 3.0, peers=("django_tasks_db",)),
    Goal("Throughput, `django://` on PostgreSQL, results off (vs Django-Q2's ORM broker)",
         "throughput", {"broker": "postgres", "results": "off"}, 2.0, peers=("django_q2",)),
    Goal("Throughput, RabbitMQ, results off (vs Celery)", "throughput",
         {"broker": "amqp", "results": "off"}, 1.5, peers=("celery",)),
    Goal("Worker peak RSS at concurrency 2, Redis, results off (vs Celery)", "peak_rss_mb",
         {"broker": "redis", "results": "off"}, 1.0, higher_is_better=False, peers=("celery",),
         unit="MB"),
)  # fmt: skip


@dataclass
class Verdict:
    goal: Goal
    ours: float | None
    peer: str | None  # the best peer's system name
    theirs: float | None
    ratio: float | None

    @property
    def met(self) -> bool | None:
        return None if self.ratio is None else self.ratio >= self.goal.factor - 1e-9


def _median(res: Results, metric: str, system: str, match: dict[str, Any]) -> float | None:
    s = res.summary(metric, system=system, concurrency=2, **match)
    return s.median if s is not None else None


def judge(res: Results, goal: Goal) -> Verdict:
    ours = _median(res, goal.metric, US, goal.match)
    pick = max if goal.higher_is_better else min
    systems = goal.peers or tuple(sorted({r["system"] for r in res.ok} - {US}))
    figures = []
    for system in systems:
        found = [_median(res, goal.metric, system, m) for m in goal.peer_matches or (goal.match,)]
        found = [v for v in found if v is not None and v > 0]
        if found:
            figures.append((system, pick(found)))
    if not figures:
        return Verdict(goal, ours, None, None, None)
    peer, theirs = pick(figures, key=lambda f: f[1])
    ratio = None
    if ours:
        ratio = ours / theirs if goal.higher_is_better else theirs / ours
    return Verdict(goal, ours, peer, theirs, ratio)


def p99_verdict(res: Results) -> tuple[float | None, float | None]:
    """(our p99, our p50) for 'p99 <= 2x our p50', Redis broker and results."""
    match = {"broker": "redis", "results": "redis"}
    return _median(res, "rt_p99_ms", US, match), _median(res, "rt_p50_ms", US, match)


# -- the floor -----------------------------------------------------------------------
def _floor(res: Results, label: str, key: str = "us_per_op") -> float | None:
    value = res.floor.get(label, {}).get(key)
    return float(value) if value else None


def _scale(res: Results, op: str, rows: int = 0) -> float | None:
    for rec in res.dbscale:
        if rec.get("op") == op and rec.get("rows") == rows:
            return float(rec["us_per_op"])
    return None


def floor_rows(res: Results) -> list[tuple[str, float | None, float | None, str]]:
    """(what, ours in µs per task, floor in µs per task, what the floor is)."""
    envelope = _floor(res, "encode + decode inside a JSON envelope")
    lpush = _floor(res, "LPUSH, one round trip each")
    piped = _floor(res, "LPUSH, pipelined 100 per round trip")
    batch_pop = _floor(res, "RPOP count=100 (100 messages per round trip)")
    loop = _floor(res, "2 processes: LMPOP 100 per round trip", "ops_per_s")

    def plus(*parts: float | None) -> float | None:
        return None if any(p is None for p in parts) else sum(parts)  # type: ignore[misc]

    def per_task(metric: str, **match: Any) -> float | None:
        value = _median(res, metric, US, match)
        return 1e6 / value if value else None

    cpu = _median(res, "cpu_ms_per_task", US, {"broker": "redis", "results": "off"})
    return [
        ("Enqueue, Redis, one `delay()` (wall time per task)",
         per_task("enqueue_rate", broker="redis", enqueue_mode="plain"), plus(lpush, envelope),
         "one LPUSH round trip + one protocol-v2 encode+decode in a JSON envelope"),
        ("Enqueue, Redis, bulk (wall time per task)",
         per_task("enqueue_rate", broker="redis", enqueue_mode="bulk"), plus(piped, envelope),
         "LPUSH pipelined 100 per round trip + encode+decode"),
        ("Processing, Redis, results off, c=2 (wall time per task)",
         per_task("throughput", broker="redis", results="off"), 1e6 / loop if loop else None,
         "2 processes popping 100 per round trip and decoding JSON"),
        ("Processing, Redis, results off: worker CPU per task",
         cpu * 1000 if cpu else None, plus(batch_pop, envelope),
         "RPOP 100 per round trip (per message) + encode+decode"),
        ("`django://` on PostgreSQL: claim 1 + ack, per message (empty queue)",
         _scale(res, "claim 1 + ack, per message"),
         _floor(res, "[backlog 0] claim 1 + ack (DELETE), per message"),
         "the same UPDATE ... RETURNING and DELETE in raw SQL on a table of the same shape"),
        ("`django://` on PostgreSQL: publish (INSERT), per message",
         _scale(res, "publish: delay() on django:// (INSERT)"),
         _floor(res, "[backlog 0] INSERT one message"), "one raw INSERT, autocommit"),
    ]  # fmt: skip


# -- database scaling -----------------------------------------------------------------
def growth(small: float, large: float) -> str:
    ratio = large / small if small else float("inf")
    if ratio < 0.8:
        return f"no growth (×{ratio:.2f})"
    if ratio < 1.25:
        return f"flat (×{ratio:.2f})"
    return f"grows ×{ratio:.1f}"


def dbscale_rows(res: Results) -> tuple[list[int], list[list[str]]]:
    sizes = sorted({int(r["rows"]) for r in res.dbscale})
    ops = list(dict.fromkeys(r["op"] for r in res.dbscale))
    rows = []
    for op in ops:
        values = [_scale(res, op, n) for n in sizes]
        cells = [f"{v:,.0f}" if v is not None else "—" for v in values]
        verdict = "—"
        if len(sizes) > 1 and values[0] and values[-1]:
            verdict = growth(values[0], values[-1])
        rows.append([op, *cells, verdict])
    return sizes, rows
