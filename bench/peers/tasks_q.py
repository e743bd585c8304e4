"""django-tasks-q itself: `manage.py runworker` from the repo's .venv on testproject."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .. import services
from .base import PEERS_DIR, REPO, SIDE, Adapter, Target

SQLITE_PATH = PEERS_DIR / "tasks_q" / "bench.sqlite3"
RESULT_QUERY = (
    "SELECT count(*) FROM tasks_q_task_result WHERE task_name = 'bench.noop' AND state = 'SUCCESS'"
)


class TasksQAdapter(Adapter):
    name = "tasks_q"
    title = "django-tasks-q"
    redis_db = 8
    pg_db = "bench_peers_tasks_q"
    table_prefixes = ("tasks_q_",)
    targets = {
        "redis": ("off", "redis", "db"),
        "amqp": ("off", "redis"),
        "postgres": ("off", "db"),
        "sqlite": ("off", "db"),
    }
    results_async = True  # DESIGN D5 allows result writes to be buffered for a few ms
    has_bulk = True
    notes = (
        "`manage.py runworker -P prefork -c N -Q bench_tq --loglevel WARNING` on testproject "
        "(repo .venv); Django database PostgreSQL (SQLite for the SQLite broker); results off "
        "= `ignore_result=True` per call; Redis results = `redis://` store; database results = "
        "`django-db`; bulk = `Task.apply_async_many` (one Redis pipeline or one transaction "
        "per 1,000 messages), called with 500 tasks at a time."
    )

    @property
    def venv(self) -> Path:
        return REPO / ".venv"

    @property
    def cwd(self) -> Path:
        return REPO

    def queue(self, target: Target) -> str:
        return "bench_tq"

    def env(self, target: Target, concurrency: int) -> dict[str, str]:
        env = super().env(target, concurrency)
        redis = services.redis_url(self.redis_db)
        broker = {"redis": redis, "amqp": services.AMQP_URL}.get(target.broker, "django://")
        env.update(
            PYTHONPATH=f"{REPO}:{SIDE}",
            DJANGO_SETTINGS_MODULE="testproject.settings",
            TQ_EXTRA_APPS="bench.tasks_q_bench",
            TQ_BROKER_URL=broker,
            TQ_RESULT_BACKEND=redis if target.results == "redis" else "django-db",
            TQ_DATABASE="sqlite" if target.broker == "sqlite" else "postgres",
            POSTGRES_DB=self.pg_db,
            SQLITE_PATH=str(SQLITE_PATH),
            REDIS_URL=redis,
            TQ_LOGLEVEL="WARNING",
            DJANGO_DEBUG="0",  # as the peers' projects: no query log
        )
        return env

    def setup(self, targets: list[Target], log=print) -> None:
        # The schema is still moving (no migrations yet): rebuild the bench databases per suite.
        if not (self.venv / "bin" / "python").exists():
            raise RuntimeError(f"{self.venv} is missing: create the repo's .venv first")
        SQLITE_PATH.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{SQLITE_PATH}{suffix}").unlink(missing_ok=True)
        with services.pg_connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.pg_db}" WITH (FORCE)')
        services.pg_create(self.pg_db)
        for broker in {"postgres", "sqlite"} & {t.broker for t in targets} | {"postgres"}:
            self.migrate(Target(self.name, broker, "db"), log)

    def migrate(self, target: Target, log=print) -> None:
        cmd = [self.python, "manage.py", "migrate", "--run-syncdb", "--noinput"]
        done = subprocess.run(
            cmd, cwd=self.cwd, env=self.env(target, 1), capture_output=True, text=True
        )
        if done.returncode:
            raise RuntimeError(f"tasks_q: migrate failed:\n{done.stderr[-3000:]}")

    def reset(self, target: Target) -> None:
        super().reset(target)
        if target.broker == "sqlite":
            services.sqlite_clear(SQLITE_PATH, self.table_prefixes)

    def worker_commands(self, target: Target, concurrency: int) -> list[list[str]]:
        return [[
            self.python, "manage.py", "runworker", "-P", "prefork", "-c", str(concurrency),
            "-Q", self.queue(target), "--loglevel", "WARNING",
        ]]  # fmt: skip

    def client_command(self, target: Target) -> list[str]:
        return [self.python, "-m", "bench.tasks_q_bench.client"]

    def count_results(self, target: Target) -> int | None:
        if target.results == "redis":
            return services.count_redis_keys(self.redis_db, "tasks_q:result:*")
        if target.results == "db":
            if target.broker == "sqlite":
                return services.sqlite_count(SQLITE_PATH, RESULT_QUERY)
            return services.pg_count(self.pg_db, RESULT_QUERY)
        return None


ADAPTER = TasksQAdapter()
