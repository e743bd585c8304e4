"""Which runs a suite makes, in which order.

A round runs every comparison group once, and inside a group the systems
alternate (A B C ... then the next group), so slow drift of the machine hits
every system alike. Rounds repeat the whole sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

from .harness import Limits
from .peers import ORDER, Target, adapters

BROKER_ORDER = ("redis", "amqp", "postgres", "sqlite")
RESULT_ORDER = ("off", "redis", "db")


@dataclass(frozen=True)
class Run:
    kind: str  # core | scale-c | scale-n
    target: Target
    n: int
    concurrency: int
    bulk: bool
    roundtrips: int
    limits: Limits


@dataclass(frozen=True)
class Mode:
    name: str
    rounds: int
    n: int
    roundtrips: int
    limits: Limits
    budget_minutes: float
    scale_concurrency: tuple[int, ...] = ()
    scale_n: tuple[int, ...] = ()
    scale_systems: tuple[str, ...] = ()
    scale_limits: Limits = Limits()
    #: table sizes for bench.db_scaling (our claim and result write, 0 and N rows)
    db_rows: tuple[int, ...] = ()
    #: bench.floor with its long variant (20,000 operations, the 1,000,000-row claim)
    floor_full: bool = False
    #: operations per figure: floor (Redis/JSON, PostgreSQL) and db_scaling (per pass)
    floor_ops: tuple[int, int] = (5_000, 2_000)
    db_ops: int = 1_000


QUICK = Mode(
    "quick", rounds=1, n=1_000, roundtrips=100, budget_minutes=5,
    limits=Limits(enqueue_seconds=3, window_seconds=5, roundtrip_seconds=3),
    db_rows=(0, 100_000), floor_ops=(2_000, 300), db_ops=300,
)  # fmt: skip
FULL = Mode(
    "full", rounds=3, n=10_000, roundtrips=500, budget_minutes=30,
    limits=Limits(enqueue_seconds=5, window_seconds=8, roundtrip_seconds=5),
    scale_concurrency=(1, 4), scale_n=(1_000, 100_000),
    scale_systems=("tasks_q", "celery", "huey", "dramatiq"),
    scale_limits=Limits(enqueue_seconds=20, window_seconds=20, roundtrip_seconds=0),
    db_rows=(0, 1_000_000), floor_full=True, floor_ops=(20_000, 2_000),
)  # fmt: skip


def core_targets(
    systems: tuple[str, ...] = ORDER, brokers: tuple[str, ...] = BROKER_ORDER
) -> list[Target]:
    """Every (system, broker, results) combination, grouped for comparison."""
    table = adapters()
    found = []
    for broker in BROKER_ORDER:
        if broker not in brokers:
            continue
        for results in RESULT_ORDER:
            for system in ORDER:
                if system in systems and results in table[system].targets.get(broker, ()):
                    found.append(Target(system, broker, results))
    return found


def round_runs(mode: Mode, targets: list[Target], n: int | None = None) -> list[Run]:
    """The core runs of one round."""
    table = adapters()
    n = n or mode.n
    return [
        Run("core", t, n, 2, bulk=t.results != "off" and table[t.system].has_bulk,
            roundtrips=mode.roundtrips if t.results != "off" else 0, limits=mode.limits)
        for t in targets
    ]  # fmt: skip


def scaling_runs(mode: Mode, systems: tuple[str, ...]) -> list[Run]:
    """Concurrency and batch-size curves on Redis, results off (one round).

    Grouped by system, ours first: when the budget runs out (the suite skips the runs
    that would pass it), our own curves are complete and the peers' are cut.
    """
    chosen = [s for s in (mode.scale_systems or ()) if s in systems]
    runs = []
    for s in chosen:
        runs += [Run("scale-c", Target(s, "redis", "off"), mode.n, c, False, 0, mode.limits)
                 for c in mode.scale_concurrency]  # fmt: skip
        runs += [Run("scale-n", Target(s, "redis", "off"), n, 2, False, 0, mode.scale_limits)
                 for n in mode.scale_n]  # fmt: skip
    return runs
