"""Reading a results file and summarising runs across rounds (stdlib only).

Both the markdown report and the charts (which run in the matplotlib venv)
use this module, so it must not import anything outside the standard library.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SYSTEM_ORDER = ("tasks_q", "celery", "dramatiq", "rq", "huey", "django_q2", "django_tasks_db")
BROKER_ORDER = ("redis", "amqp", "postgres", "sqlite")
WINDOWED = frozenset({"throughput", "cpu_ms_per_task", "completed"})
BROKER_TITLES = {"redis": "Redis", "amqp": "RabbitMQ", "postgres": "PostgreSQL", "sqlite": "SQLite"}


@dataclass
class Summary:
    """One metric of one configuration over the rounds."""

    values: list[float] = field(default_factory=list)
    windowed: bool = False  # some run hit its time box before the queue was empty

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)


@dataclass
class Results:
    meta: dict[str, Any]
    runs: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    #: ``bench.floor`` figures (label -> {"us_per_op", "ops_per_s"}), if the suite ran it
    floor: dict[str, dict[str, float]] = field(default_factory=dict)
    #: ``bench.db_scaling`` records: {"op", "rows", "us_per_op", ...}
    dbscale: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> list[dict[str, Any]]:
        return [r for r in self.runs if "error" not in r]

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [r for r in self.runs if "error" in r]

    def title(self, system: str) -> str:
        return self.meta.get("titles", {}).get(system, system)

    def summary(
        self, metric: str, *, kind: str = "core", when=None, **match: Any
    ) -> Summary | None:
        """Median/min/max of ``metric`` over the runs matching ``match`` (and ``when``)."""
        out = Summary()
        for rec in self.ok:
            if rec.get("kind") != kind or any(rec.get(k) != v for k, v in match.items()):
                continue
            if when is not None and not when(rec):
                continue
            value = rec.get(metric)
            if value is None:
                continue
            out.values.append(float(value))
            out.windowed |= metric in WINDOWED and not rec.get("complete", True)
        return out if out.values else None

    def targets(self, kind: str = "core") -> list[tuple[str, str, str]]:
        """(system, broker, results) of the runs of ``kind``, in report order."""
        seen = {
            (r["system"], r["broker"], r["results"]) for r in self.runs if r.get("kind") == kind
        }

        def order(t: tuple[str, str, str]) -> tuple[int, int, int]:
            return (
                BROKER_ORDER.index(t[1]) if t[1] in BROKER_ORDER else 9,
                ("off", "redis", "db").index(t[2]) if t[2] in ("off", "redis", "db") else 9,
                SYSTEM_ORDER.index(t[0]) if t[0] in SYSTEM_ORDER else 99,
            )

        return sorted(seen, key=order)


def load(path: Path) -> Results:
    res = Results({}, [], [])
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        kind = rec.get("type")
        if kind == "meta":
            res.meta = rec
        elif kind == "run":
            res.runs.append(rec)
        elif kind == "skipped":
            res.skipped.append(rec)
        elif kind == "floor":
            res.floor.update(rec.get("results") or {})
        elif kind == "dbscale":
            res.dbscale.append(rec)
    return res


def latest(results_dir: Path) -> Path:
    files = sorted(results_dir.glob("*.jsonl"))
    if not files:
        raise SystemExit(f"no results in {results_dir}: run python -m bench.suite --quick first")
    return files[-1]
