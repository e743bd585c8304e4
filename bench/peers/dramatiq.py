"""Dramatiq 2 on Redis or RabbitMQ; results through the Results middleware on Redis."""

from __future__ import annotations

from .. import services
from .base import Adapter, Target


class DramatiqAdapter(Adapter):
    name = "dramatiq"
    title = "Dramatiq"
    redis_db = 10
    targets = {"redis": ("off", "redis"), "amqp": ("off", "redis")}
    notes = (
        "`dramatiq --processes N --threads 1` (N processes of one worker thread, so that "
        "concurrency means the same as for the others); default middleware; results = "
        "`Results(RedisBackend)` with `store_results=True`."
    )

    def worker_commands(self, target: Target, concurrency: int) -> list[list[str]]:
        return [[
            self.python, "-m", "dramatiq", "dramatiq_side.tasks",
            "--processes", str(concurrency), "--threads", "1", "-Q", self.queue(target),
        ]]  # fmt: skip

    def client_command(self, target: Target) -> list[str]:
        return [self.python, "-m", "dramatiq_side.client"]

    def amqp_queues(self, target: Target) -> tuple[str, ...]:
        q = self.queue(target)
        return (q, f"{q}.DQ", f"{q}.XQ")

    def count_results(self, target: Target) -> int | None:
        if target.results == "redis":
            # Result keys are md5 hex digests: 32 characters, unlike the broker's keys.
            return services.count_redis_keys(self.redis_db, "?" * 32)
        return None


ADAPTER = DramatiqAdapter()
