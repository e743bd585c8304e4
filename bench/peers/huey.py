"""Huey 3 with RedisHuey and process workers."""

from __future__ import annotations

from .. import services
from .base import Adapter, Target


class HueyAdapter(Adapter):
    name = "huey"
    title = "Huey"
    redis_db = 12
    targets = {"redis": ("off", "redis")}
    notes = (
        "`huey_consumer -k process -w N -q`; `RedisHuey(blocking=True)` (default); "
        "results off = `results=False`; `notify_result=True` so a blocking `get()` waits on "
        "BLPOP instead of sleeping 50 ms and more."
    )

    def worker_commands(self, target: Target, concurrency: int) -> list[list[str]]:
        return [[
            self.python, str(self.venv / "bin" / "huey_consumer"), "huey_side.tasks.huey",
            "-k", "process", "-w", str(concurrency), "-q",
        ]]  # fmt: skip

    def client_command(self, target: Target) -> list[str]:
        return [self.python, "-m", "huey_side.client"]

    def count_results(self, target: Target) -> int | None:
        if target.results == "redis":
            return int(services.redis_client(self.redis_db).hlen("huey.results.bench"))
        return None


ADAPTER = HueyAdapter()
