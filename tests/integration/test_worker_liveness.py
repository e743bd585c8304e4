"""Liveness: a busy worker is never taken for dead, and long-dead ones are forgotten.

The worker tests run with a 2 s heartbeat timeout (``workerproc.FAST_LIVENESS``),
and every ``WorkerProcess`` fails its test if a live Redis consumer logged that
its heartbeat had expired.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from django_tasks_q import states
from testproject.demo import worker_tasks as wt
from tests.integration.workerproc import (  # noqa: F401  (fixtures)
    WorkerProcess,
    broker_fixture,
    delete_amqp_queues,
    flush_redis,
    make_broker,
    settings_for,
    wait_until,
)

pytestmark = pytest.mark.timeout(300)

#: how long each task holds the GIL: well past the 2 s heartbeat timeout
HOLD_SECONDS = 6.0


def gil_loop_size(seconds: float) -> int:
    """``n`` such that ``sum(range(n))`` holds the GIL about ``seconds`` on this machine."""
    n = 20_000_000
    started = time.perf_counter()
    sum(range(n))
    return int(n * seconds / max(time.perf_counter() - started, 1e-6))


def test_a_task_holding_the_gil_past_the_heartbeat_timeout_runs_once(broker, tmp_path):
    # Given a prefork worker whose processes beat every 0.5 s and are dead after 2 s of silence
    from django_tasks_q.models import TaskResult

    queue, path = broker.queue(), str(tmp_path / "runs")
    n = gil_loop_size(HOLD_SECONDS)
    try:
        with WorkerProcess(broker.url, "-Q", queue, "-c", "2", env=broker.env) as worker:
            worker.wait_ready()
            # When each process runs tasks that keep every other thread of theirs from running
            ids = [wt.hold_gil.apply_async((path, str(i), n), queue=queue).id for i in range(3)]
            wait_until(
                lambda: TaskResult.objects.filter(task_id__in=ids, state=states.SUCCESS).count() == 3,
                120, "the GIL-holding tasks",
            )  # fmt: skip
        # Then each ran exactly once, although their own heartbeat threads were silenced
        starts = Counter(row[1] for row in wt.lines(path, "start"))
        assert starts == Counter({"0": 1, "1": 1, "2": 1}), worker.output()
        begun = {row[1]: float(row[4]) for row in wt.lines(path, "start")}
        held = [float(row[4]) - begun[row[1]] for row in wt.lines(path, "end")]
        assert max(held) > 3.0, f"the tasks held the GIL only {held}s: the test proves nothing"
    finally:
        delete_amqp_queues(broker, [queue])


@pytest.mark.redis
def test_the_supervisor_vouches_only_for_children_it_has_not_reaped(transactional_db):
    import redis

    from django_tasks_q.worker.leases import LeaseKeeper
    from django_tasks_q.worker.slots import SharedState

    # Given a child's slot listing two owners: one alive, one that already gave its messages back
    broker = make_broker("redis")
    flush_redis(broker.url)
    client = redis.Redis.from_url(broker.url)
    client.set("tasks_q:owner:alive", "alive", px=2000)
    slot = SharedState(1).slots[0]
    slot.set_leases([("alive", 2000), ("released", 2000)])
    with override_settings(TASKS_Q=settings_for(broker)):
        keeper = LeaseKeeper(broker.url)
        keeper.watch(slot)
        keeper.start()
        try:
            # When the supervisor keeps it for three heartbeat timeouts
            deadline = time.monotonic() + 6.0
            while time.monotonic() < deadline:
                assert client.pttl("tasks_q:owner:alive") > 0, "a vouched-for owner expired"
                time.sleep(0.1)
            # Then the live owner lived on, and the released one was never revived
            assert not client.exists("tasks_q:owner:released")

            # And once the child is reaped, its owner is left to expire
            keeper.forget(0)
            wait_until(lambda: not client.exists("tasks_q:owner:alive"), 5, "the owner to expire")
        finally:
            keeper.stop()
            client.close()
            flush_redis(broker.url)


def test_heartbeat_rows_of_long_dead_owners_are_pruned_by_the_sweep(transactional_db):
    # Given the rows of a live owner, a dead one, and one dead for more than ten timeouts
    from django_tasks_q.messaging.database_owner import release_dead_owners
    from django_tasks_q.models import WorkerHeartbeat

    timeout = 2.0
    stamp = timezone.now()
    for owner, age in [("live", 0.5), ("dead", 3 * timeout), ("long-dead", 11 * timeout)]:
        WorkerHeartbeat.objects.create(
            owner=owner, hostname="h", last_seen=stamp - timedelta(seconds=age)
        )

    # When a consumer runs its sweep for dead owners
    release_dead_owners(timeout=timeout)

    # Then only the long-dead owner's row is gone (a merely dead one still explains its rows)
    assert set(WorkerHeartbeat.objects.values_list("owner", flat=True)) == {"live", "dead"}


def test_a_time_limit_landing_after_the_task_never_strands_its_job():
    # A limit is raised in a pool thread asynchronously, so one on its way when the task
    # ends can land after the tracer's own handlers. The engine must still get an outcome
    # for the job (a burst run waits for every running job) and the thread must live on.
    from types import SimpleNamespace

    from django_tasks_q.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
    from django_tasks_q.execution import Outcome
    from django_tasks_q.worker.pools.threads import ThreadExecutor

    class Engine:
        store = SimpleNamespace(mark_as_failure=lambda *args, **kwargs: None)

        def run_task(self, job, store=None):
            try:
                return Outcome(states.SUCCESS)
            finally:
                if job.id == "late":
                    raise SoftTimeLimitExceeded("landed after the body")

    class InterruptedOnce:
        """A watchdog whose first disarm is interrupted by the hard limit."""

        def __init__(self, watchdog):
            self.watchdog, self.interrupted = watchdog, False

        def arm(self, *args):
            self.watchdog.arm(*args)

        def disarm(self):
            if not self.interrupted:
                self.interrupted = True
                raise TimeLimitExceeded("landed in disarm")
            self.watchdog.disarm()

        def stop(self):
            self.watchdog.stop()

    def job(key):
        return SimpleNamespace(id=key, name="t", request=SimpleNamespace())

    executor = ThreadExecutor(1)
    executor.watchdog = InterruptedOnce(executor.watchdog)
    try:
        for key in ("late", "next"):
            executor.work.put((Engine(), job(key), None, None))
        first, second = executor.done.get(timeout=10), executor.done.get(timeout=10)
    finally:
        executor.stop()
    assert (first[0].id, first[1].state) == ("late", states.FAILURE)
    assert (second[0].id, second[1].state) == ("next", states.SUCCESS)
    assert executor.running == {}
