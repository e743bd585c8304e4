"""django-tasks (the backport of Django's tasks framework) with django-tasks-db."""

from __future__ import annotations

from .. import services
from .base import Adapter, Target


class DjangoTasksDBAdapter(Adapter):
    name = "django_tasks_db"
    title = "django-tasks-db"
    redis_db = 14
    pg_db = "bench_dtdb"
    table_prefixes = ("django_tasks_database_",)
    # The result row is the queue entry: results are always stored.
    targets = {"postgres": ("db",)}
    notes = (
        "N `db_worker --no-startup-delay` processes (default `--interval 1`: a worker that "
        "finds no task sleeps 1 s); the task row is also its result; round trip polls "
        "`result.refresh()` every 5 ms (there is no blocking wait)."
    )

    def env(self, target: Target, concurrency: int) -> dict[str, str]:
        return {**super().env(target, concurrency), "DJANGO_SETTINGS_MODULE": "dtdb_side.settings"}

    def migrate(self, target: Target, log=print) -> None:
        self.django(target, "migrate", "--noinput", log=log)

    def worker_commands(self, target: Target, concurrency: int) -> list[list[str]]:
        return [
            [
                self.python,
                "-m",
                "django",
                "db_worker",
                "--no-startup-delay",
                "--worker-id",
                f"bench-{i}",
            ]
            for i in range(concurrency)
        ]

    def client_command(self, target: Target) -> list[str]:
        return [self.python, "-m", "dtdb_side.client"]

    def count_results(self, target: Target) -> int | None:
        return services.pg_count(
            self.pg_db,
            "SELECT count(*) FROM django_tasks_database_dbtaskresult "
            "WHERE status = 'SUCCESSFUL' AND task_path = 'dtdb_side.tasks.noop'",
        )


ADAPTER = DjangoTasksDBAdapter()
