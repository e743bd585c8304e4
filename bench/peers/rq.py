"""RQ 2: N `rq worker` processes (each forks a work horse per job, RQ's default)."""

from __future__ import annotations

from .. import services
from .base import Adapter, Target


class RQAdapter(Adapter):
    name = "rq"
    title = "RQ"
    redis_db = 11
    targets = {"redis": ("off", "redis")}
    has_bulk = True
    notes = (
        "N separate `rq worker` processes (the default `Worker`, which forks a work horse per "
        "job), `--logging_level WARNING`; results off = `result_ttl=0`; bulk = `enqueue_many` "
        "in chunks of 1,000; round trip = `job.latest_result(timeout=...)` (blocking XREAD)."
    )

    def worker_commands(self, target: Target, concurrency: int) -> list[list[str]]:
        rq = str(self.venv / "bin" / "rq")
        return [
            [rq, "worker", "-u", services.redis_url(self.redis_db), "--logging_level", "WARNING",
             "-n", f"bench-rq-{i}", self.queue(target)]
            for i in range(concurrency)
        ]  # fmt: skip

    def client_command(self, target: Target) -> list[str]:
        return [self.python, "-m", "rq_side.client"]

    def count_results(self, target: Target) -> int | None:
        if target.results == "redis":
            return services.count_redis_keys(self.redis_db, "rq:results:*")
        return None


ADAPTER = RQAdapter()
