"""Celery 5 (prefork) inside a Django project; django-celery-results for database results."""

from __future__ import annotations

from .. import services
from .base import Adapter, Target


class CeleryAdapter(Adapter):
    name = "celery"
    title = "Celery (prefork)"
    redis_db = 9
    pg_db = "bench_celery"
    table_prefixes = ("django_celery_results_",)
    targets = {"redis": ("off", "redis", "db"), "amqp": ("off", "redis")}
    notes = (
        "`celery worker -P prefork -c N`, defaults otherwise (prefetch multiplier 4, early ack); "
        "Django project with the Django fix-up active; results off = `task_ignore_result`; "
        "database results = django-celery-results (`django-db`)."
    )

    def env(self, target: Target, concurrency: int) -> dict[str, str]:
        return {
            **super().env(target, concurrency),
            "DJANGO_SETTINGS_MODULE": "celery_side.settings",
        }

    def migrate(self, target: Target, log=print) -> None:
        self.django(Target(self.name, "redis", "db"), "migrate", "--noinput", log=log)

    def worker_commands(self, target: Target, concurrency: int) -> list[list[str]]:
        return [[
            self.python, "-m", "celery", "-A", "celery_side.celery_app", "worker",
            "-P", "prefork", "-c", str(concurrency), "-Q", self.queue(target),
            "--loglevel", "WARNING", "-n", f"bench-{self.name}@%h",
        ]]  # fmt: skip

    def client_command(self, target: Target) -> list[str]:
        return [self.python, "-m", "celery_side.client"]

    def amqp_queues(self, target: Target) -> tuple[str, ...]:
        return (self.queue(target),)

    def count_results(self, target: Target) -> int | None:
        if target.results == "redis":
            return services.count_redis_keys(self.redis_db, "celery-task-meta-*")
        if target.results == "db":
            return services.pg_count(
                self.pg_db, "SELECT count(*) FROM django_celery_results_taskresult"
            )
        return None


ADAPTER = CeleryAdapter()
