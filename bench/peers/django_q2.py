"""Django-Q2: `qcluster` with a Redis broker or the ORM broker on PostgreSQL."""

from __future__ import annotations

from .. import services
from .base import Adapter, Target


class DjangoQ2Adapter(Adapter):
    name = "django_q2"
    title = "Django-Q2"
    redis_db = 13
    pg_db = "bench_djq"
    table_prefixes = ("django_q_",)
    # Django-Q2 keeps results in the Django database whatever the broker.
    targets = {"redis": ("off", "db"), "postgres": ("off", "db")}
    results_async = True  # the monitor process saves results after the worker ran the task
    notes = (
        "`qcluster` with `workers=N` (plus its sentinel, pusher and monitor processes); "
        "Redis broker or ORM broker (`orm='default'`, poll 0.2 s by default) on PostgreSQL; "
        "results go to the ORM (`save_limit=0`), off = `save_limit=-1`; `log_level=WARNING`; "
        "round trip = `result(id, wait=...)`, which polls the database every 10 ms."
    )

    def setup(self, targets: list[Target], log=print) -> None:
        # Results always live in PostgreSQL here, whichever broker.
        super().setup([Target(self.name, "postgres", "db")], log)

    def env(self, target: Target, concurrency: int) -> dict[str, str]:
        return {**super().env(target, concurrency), "DJANGO_SETTINGS_MODULE": "djq_side.settings"}

    def migrate(self, target: Target, log=print) -> None:
        self.django(target, "migrate", "--noinput", log=log)

    def worker_commands(self, target: Target, concurrency: int) -> list[list[str]]:
        return [[self.python, "-m", "django", "qcluster"]]

    def client_command(self, target: Target) -> list[str]:
        return [self.python, "-m", "djq_side.client"]

    def count_results(self, target: Target) -> int | None:
        if target.results == "db":
            return services.pg_count(
                self.pg_db, "SELECT count(*) FROM django_q_task WHERE func = 'djq_side.tasks.noop'"
            )
        return None


ADAPTER = DjangoQ2Adapter()
