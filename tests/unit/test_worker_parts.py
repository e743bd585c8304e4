"""The worker's parts on their own: configuration, holding, shared memory, limits, buffers."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from django_tasks_q import states
from django_tasks_q.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from django_tasks_q.request import Request
from django_tasks_q.worker import slots
from django_tasks_q.worker.config import WorkerConfig, expand_hostname
from django_tasks_q.worker.holding import Holding
from django_tasks_q.worker.intake import check_call, delivery_count
from django_tasks_q.worker.jobs import Job
from django_tasks_q.worker.ratelimits import TaskTable
from django_tasks_q.worker.resultbuffer import ResultBuffer
from django_tasks_q.worker.timelimits import AlarmLimits, limits_for


def job(eta: datetime | None = None, name: str = "t", timelimit=(None, None)) -> Job:
    task = SimpleNamespace(name=name, soft_time_limit=None, time_limit=None)
    request = Request(id=f"id-{time.monotonic_ns()}", task=name, eta=eta, timelimit=timelimit)
    return Job(raw=None, request=request, task=task, queue="q", acks_late=True)  # type: ignore[arg-type]


# -- configuration -------------------------------------------------------------------------


def test_hostname_expands_like_celery():
    import socket

    host = socket.gethostname()
    assert expand_hostname(None) == f"tasks_q@{host}"
    assert expand_hostname("images@%h") == f"images@{host}"
    assert expand_hostname("images") == f"images@{host}"
    assert expand_hostname("w@%n") == f"w@{host.partition('.')[0]}"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"pool": "gevent"}, "pool must be one of prefork, threads, solo"),
        ({"concurrency": 0}, "concurrency must be a positive integer"),
        ({"prefetch_multiplier": 0}, "prefetch_multiplier must be a positive integer"),
        ({"max_tasks_per_child": 0}, "max_tasks_per_child must be a positive integer"),
        ({"time_limit": -1}, "time_limit must be a positive number of seconds"),
        ({"autoscale": (2, 5)}, "autoscale must be (max, min)"),
        ({"queues": []}, "queues must name at least one queue"),
    ],
)
def test_bad_configuration_names_the_argument(changes, message):
    config = WorkerConfig(**{"queues": ["q"], **changes})
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config.validate()


def test_prefetch_is_per_consuming_process():
    assert WorkerConfig(queues=["q"], concurrency=8, prefetch_multiplier=4).prefetch_count == 4
    assert WorkerConfig(queues=["q"], pool="threads", concurrency=8, prefetch_multiplier=4).prefetch_count == 32


# -- holding -------------------------------------------------------------------------------


def test_holding_never_releases_a_job_before_its_eta():
    holding = Holding(limit=10)
    soon = job(eta=datetime.now(UTC) + timedelta(seconds=0.2))
    # a monotonic deadline that says "due" while the wall clock says "not yet" is held again
    holding.hold(soon, 0.0, "eta")
    assert holding.pop_due() == []
    assert len(holding) == 1
    deadline = time.monotonic() + 2
    while not (due := holding.pop_due()):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert due == [soon]
    assert datetime.now(UTC) >= soon.request.eta


def test_holding_orders_by_due_time_and_reports_its_bound():
    holding = Holding(limit=2)
    late, early = job(), job()
    holding.hold(late, 0.05, "rate")
    holding.hold(early, 0.0, "rate")
    assert holding.full
    assert holding.jobs() == [early, late]
    assert holding.take_all() == [early, late] and len(holding) == 0


# -- delivery counts and arguments ----------------------------------------------------------


def raw(headers=None, redelivered=False):
    return SimpleNamespace(headers=headers or {}, delivery_info={"redelivered": redelivered})


def test_delivery_count_reads_each_brokers_way():
    assert delivery_count(raw(), 0, amqp=False) == 1
    assert delivery_count(raw({"x-delivery-count": 3}), 0, amqp=False) == 3
    assert delivery_count(raw({"x-delivery-count": 2}), 0, amqp=True) == 3  # RabbitMQ counts earlier ones
    assert delivery_count(raw(redelivered=True), 0, amqp=True) == 2
    assert delivery_count(raw(redelivered=True), 4, amqp=True) == 5  # deaths seen by the supervisor


def test_check_call_names_the_task_and_the_problem():
    from testproject.demo.worker_tasks import two_args

    assert check_call(two_args, [1, 2], {}) is None
    assert "wt.two_args" in check_call(two_args, [1], {})
    assert "unexpected keyword" in check_call(two_args, [1, 2], {"c": 3})


# -- time limits ---------------------------------------------------------------------------


def test_limits_come_from_the_header_then_the_task_then_the_worker():
    table = TaskTable()
    assert limits_for(job(timelimit=(10, 5)), table, (None, None)) == (5.0, 10.0)  # [hard, soft]
    assert limits_for(job(), table, (3, 30)) == (3.0, 30.0)
    table.set_time_limits("t", 1, 2)
    assert limits_for(job(timelimit=(10, 5)), table, (3, 30)) == (1.0, 2.0)


def test_alarm_raises_soft_then_hard_in_the_main_thread():
    alarm = AlarmLimits(enforce_hard=True)
    alarm.install()
    try:
        alarm.arm(0.05, 0.15)
        with pytest.raises(SoftTimeLimitExceeded):
            time.sleep(1)
        with pytest.raises(TimeLimitExceeded):
            time.sleep(1)
        alarm.arm(0.05, None)
        alarm.disarm()
        time.sleep(0.1)  # disarmed: nothing fires
    finally:
        alarm.uninstall()


# -- shared memory -------------------------------------------------------------------------


def test_slot_records_what_a_child_runs_and_the_supervisor_reads_it():
    shared = slots.SharedState(2)
    slot = shared.slots[1]
    slot.set_state(slots.IDLE, pid=1234)
    slot.begin("abc", "wt.pid", acks_late=True, reject_on_worker_lost=False, hard_deadline=99.0, info={"argsrepr": "(1,)"})
    state = slot.read()
    assert state.busy and state.task_id == "abc" and state.task_name == "wt.pid" and state.pid == 1234
    assert state.acks_late and state.hard_deadline == 99.0 and state.info == {"argsrepr": "(1,)"}
    slot.end(processed=7)
    state = slot.read()
    assert not state.busy and state.processed == 7 and state.task_id == ""


def test_slot_is_shared_with_a_forked_child():
    shared = slots.SharedState(1)
    slot = shared.slots[0]
    pid = os.fork()
    if pid == 0:  # child
        slot.begin("from-child", "x", acks_late=False, reject_on_worker_lost=True, hard_deadline=0.0, info={})
        slot.keep_message("from-child", b'{"hello": 1}')
        request_id = 0
        deadline = time.monotonic() + 5
        while not request_id and time.monotonic() < deadline:
            request_id = slot.pending_report()
            time.sleep(0.01)
        slot.write_report(request_id, {"reserved": [1, 2]})
        os._exit(0)
    request_id = slot.request_report()
    deadline = time.monotonic() + 5
    report = None
    while report is None and time.monotonic() < deadline:
        report = slot.read_report(request_id)
        time.sleep(0.01)
    os.waitpid(pid, 0)
    assert report == {"reserved": [1, 2]}
    assert slot.read().task_id == "from-child"
    assert slot.kept_message("from-child") == b'{"hello": 1}'
    assert slot.kept_message("other") is None


def test_lost_registry_counts_deaths_per_task():
    shared = slots.SharedState(1)
    assert shared.lost_count("t1") == 0
    assert shared.record_lost("t1") == 1
    assert shared.record_lost("t1") == 2
    assert shared.record_lost("t2") == 1
    assert shared.lost_count("t1") == 2


def test_queue_set_is_followed_by_generation():
    shared = slots.SharedState(1)
    shared.set_queues(["b", "a"])
    gen = shared.queues_generation()
    assert shared.queues() == ["a", "b"]
    shared.set_queues(["a"])
    assert shared.queues_generation() > gen and shared.queues() == ["a"]


# -- rate limits ---------------------------------------------------------------------------


def test_rate_limit_is_one_token_bucket_shared_across_processes():
    table = TaskTable()
    table.set_rate("t", "10/s")
    assert table.rate_wait("t") == 0.0
    wait = table.rate_wait("t")
    assert 0.05 < wait <= 0.1
    assert table.rate_wait("unlimited") == 0.0
    pid = os.fork()
    if pid == 0:  # a second process sees the same bucket: no token now
        os._exit(0 if table.rate_wait("t") > 0 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    table.set_rate("t", None)
    assert table.rate_wait("t") == 0.0
    assert table.rates() == {}


def test_bad_rate_is_refused():
    with pytest.raises(ValueError, match="rate_limit must look like"):
        TaskTable().set_rate("t", "ten per minute")


# -- result buffer -------------------------------------------------------------------------


class FakeStore:
    def __init__(self):
        self.batches: list[list] = []
        self.calls: list[str] = []
        self.fail = False

    def store_many(self, items):
        if self.fail:
            raise RuntimeError("database down")
        self.batches.append([(i.task_id, i.state) for i in items])

    def mark_as_started(self, task_id, request=None):
        self.calls.append(f"started {task_id}")

    def chord_part_done(self, group_id):
        self.calls.append(f"chord {group_id} after {len(self.batches)} batch(es)")


def test_buffer_writes_in_bulk_and_acks_follow_the_write():
    store = FakeStore()
    buffer = ResultBuffer(store)
    buffer.mark_as_started("a")
    assert store.calls == ["started a"]  # STARTED is visible at once
    buffer.mark_as_done("a", 1)
    buffer.job_done("job-a")
    buffer.mark_as_failure("b", ValueError("x"))
    buffer.job_done("job-b")
    assert store.batches == []
    store.fail = True
    with pytest.raises(RuntimeError):
        buffer.take_ackable()
    assert len(buffer) == 2  # nothing acked when the write failed
    store.fail = False
    assert buffer.take_ackable() == ["job-a", "job-b"]
    assert store.batches == [[("a", states.SUCCESS), ("b", states.FAILURE)]]


def test_buffer_writes_before_anything_else_reaches_the_store():
    store = FakeStore()
    buffer = ResultBuffer(store)
    buffer.mark_as_done("part", 1)
    buffer.chord_part_done("g")
    assert store.calls == ["chord g after 1 batch(es)"]


def test_buffer_skips_ignored_results():
    store = FakeStore()
    buffer = ResultBuffer(store)
    buffer.mark_as_done("a", 1, request=SimpleNamespace(ignore_result=True))
    buffer.job_done("job")
    assert buffer.take_ackable() == ["job"] and store.batches == []
