"""What the worker does with each kind of task outcome and message, on every broker.

These drive ``Worker(pool="solo"|"threads", burst=True)`` in the test process: it
consumes a test's own queue until it is empty, then returns. (The prefork pool and
the crash scenarios run real ``runworker`` processes: test_worker_processes.py and
test_worker_scenarios.py.)
"""

from __future__ import annotations

import io
import os
import pickle
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.test import override_settings
from kombu import Connection, Producer

from django_tasks_q import signals, states
from django_tasks_q.results import get_store
from django_tasks_q.results.database import DatabaseStore
from django_tasks_q.worker import Worker
from django_tasks_q.worker.consumer import queue_entities
from testproject.demo import worker_tasks as wt
from tests.integration.workerproc import (  # noqa: F401  (fixtures)
    broker_fixture,
    delete_amqp_queues,
    settings_for,
)

# method="thread": the solo pool uses SIGALRM for soft time limits, as pytest-timeout would
pytestmark = pytest.mark.timeout(120, method="thread")


@pytest.fixture
def queue(broker):
    name = broker.queue()
    yield name
    delete_amqp_queues(broker, [name])


def burst(broker, queue, **options) -> Worker:
    options.setdefault("pool", "solo")
    worker = Worker(
        queues=[queue], burst=True, broker_url=broker.url, stdout=io.StringIO(),
        without_heartbeat=True, **options,
    )  # fmt: skip
    assert worker.run() == 0
    return worker


def meta(task_id: str) -> dict:
    return get_store().get_task_meta(task_id)


def dead_letters(queue: str) -> dict[str, str]:
    from django_tasks_q.models import DeadLetter

    return dict(DeadLetter.objects.filter(queue=queue).values_list("reason", "task_id"))


@pytest.fixture
def written_states(monkeypatch):
    """Every state the database store writes, in order, per task id."""
    seen: dict[str, list[str]] = {}
    original = DatabaseStore.write_records

    def spy(self, records):
        for record in records:
            seen.setdefault(record["task_id"], []).append(record["status"])
        return original(self, records)

    monkeypatch.setattr(DatabaseStore, "write_records", spy)
    return seen


def publish_raw(broker, queue: str, body, headers: dict, content_type="application/json") -> None:
    exchange, kqueue = queue_entities(queue)
    with Connection(broker.url, transport=_transport(broker)) as conn:
        Producer(conn.channel()).publish(
            body, exchange=exchange, routing_key=queue, headers=headers, declare=[kqueue],
            content_type=content_type, content_encoding="utf-8" if isinstance(body, str) else "binary",
        )  # fmt: skip


def _transport(broker):
    from django_tasks_q.messaging.connection import _resolve, transport_for

    return _resolve(transport_for(broker.url))


# -- outcomes ----------------------------------------------------------------------------


def test_success_is_stored_and_acked(broker, queue, tmp_path):
    path = str(tmp_path / "runs")
    ids = [wt.record.apply_async((path, str(i)), queue=queue).id for i in range(5)]
    burst(broker, queue)
    assert {meta(i)["status"] for i in ids} == {states.SUCCESS}
    assert len(wt.lines(path, "start")) == 5


def test_retries_go_started_retry_started_success(broker, queue, tmp_path, written_states):
    path = str(tmp_path / "runs")
    result = wt.retrying.apply_async((path, "k", 2), queue=queue)
    burst(broker, queue)
    assert meta(result.id)["status"] == states.SUCCESS
    assert meta(result.id)["result"] == 2
    sequence = [s for s in written_states[result.id]]
    assert sequence == ["STARTED", "RETRY", "STARTED", "RETRY", "STARTED", "SUCCESS"]
    assert len(wt.lines(path, "start")) == 3


def test_reject_with_requeue_runs_again(broker, queue, tmp_path):
    path = str(tmp_path / "runs")
    result = wt.reject_once.apply_async((path, "k"), queue=queue)
    burst(broker, queue)
    assert meta(result.id)["status"] == states.SUCCESS
    assert meta(result.id)["result"] == "second time"
    starts = wt.lines(path, "start")
    assert len(starts) == 2
    assert starts[1][3] == "1"  # the second run was a redelivery


def test_reject_without_requeue_is_dead_lettered(broker, queue):
    result = wt.reject_drop.apply_async(queue=queue)
    burst(broker, queue)
    assert dead_letters(queue) == {"rejected": result.id}
    assert meta(result.id)["status"] == states.PENDING


def test_ignore_acks_and_stores_nothing(broker, queue):
    result = wt.ignored.apply_async(queue=queue)
    burst(broker, queue)
    assert meta(result.id)["status"] == states.PENDING
    assert dead_letters(queue) == {}


def test_expired_task_is_revoked_not_run(broker, queue, tmp_path):
    path = str(tmp_path / "runs")
    received = []

    def on_revoked(sender, request, terminated, signum, expired, **kwargs):
        received.append((request.id, expired))

    signals.task_revoked.connect(on_revoked)
    try:
        result = wt.record.apply_async(
            (path, "k"), queue=queue, expires=datetime.now(UTC) - timedelta(seconds=1)
        )
        burst(broker, queue)
    finally:
        signals.task_revoked.disconnect(on_revoked)
    assert meta(result.id)["status"] == states.REVOKED
    assert wt.lines(path) == []
    assert received == [(result.id, True)]


def test_revoked_task_is_not_run_even_by_a_worker_started_later(broker, queue, tmp_path):
    from django_tasks_q import revocation

    path = str(tmp_path / "runs")
    task_id = str(uuid.uuid4())
    revocation.persist([task_id])
    revocation.reset_cache()  # as a worker started now: it reads the stored revokes
    wt.record.apply_async((path, "k"), queue=queue, task_id=task_id)
    kept = wt.record.apply_async((path, "other"), queue=queue)
    burst(broker, queue)
    assert meta(task_id)["status"] == states.REVOKED
    assert meta(kept.id)["status"] == states.SUCCESS
    assert [r[1] for r in wt.lines(path, "start")] == ["other"]


def test_soft_time_limit_raises_in_the_task(broker, queue):
    result = wt.soft_limited.apply_async(queue=queue)
    burst(broker, queue)
    assert meta(result.id)["result"] == "cleaned up"


def test_soft_time_limit_reaches_a_pool_thread(broker, queue):
    result = wt.spin.apply_async((5,), queue=queue)
    burst(broker, queue, pool="threads", concurrency=2)
    assert meta(result.id)["result"] == "cleaned up"


def test_async_task_runs_on_an_event_loop(broker, queue):
    results = [wt.async_add.apply_async((i, 1), queue=queue) for i in range(3)]
    burst(broker, queue, pool="threads", concurrency=2)
    assert [meta(r.id)["result"] for r in results] == [1, 2, 3]


def test_rate_limit_spaces_runs_without_holding_back_other_tasks(broker, queue, tmp_path):
    path = str(tmp_path / "runs")
    for i in range(6):
        wt.rate_limited.apply_async((path, f"r{i}"), queue=queue)
        wt.record.apply_async((path, f"o{i}"), queue=queue)
    burst(broker, queue)
    limited = sorted(float(r[4]) for r in wt.lines(path, "ran"))
    others = sorted(float(r[4]) for r in wt.lines(path, "start"))
    assert len(limited) == 6 and len(others) == 6
    # rate "4/s", one token at most: six runs span at least 5/4 s
    assert limited[-1] - limited[0] >= 1.2
    gaps = [b - a for a, b in zip(limited, limited[1:], strict=False)]
    assert min(gaps) >= 0.2
    # the unlimited tasks did not wait behind the limited ones
    assert others[-1] < limited[-1] - 0.5


def test_threads_pool_runs_many_tasks(broker, queue, tmp_path):
    path = str(tmp_path / "runs")
    ids = [wt.record.apply_async((path, str(i)), queue=queue).id for i in range(50)]
    burst(broker, queue, pool="threads", concurrency=4)
    assert {meta(i)["status"] for i in ids} == {states.SUCCESS}
    assert sorted(int(r[1]) for r in wt.lines(path, "start")) == list(range(50))


def test_worker_signals_and_what_inspect_reads(broker, queue):
    seen: list[str] = []

    def on(name):
        def receiver(sender, **kwargs):
            seen.append(name)
            if name == "worker_ready":
                assert (
                    sender.registered_tasks() and sender.stats()["pool"]["implementation"] == "solo"
                )

        return receiver

    receivers = {
        signals.worker_ready: on("worker_ready"),
        signals.task_received: on("task_received"),
        signals.worker_shutdown: on("worker_shutdown"),
    }
    for signal_, receiver in receivers.items():
        signal_.connect(receiver)
    try:
        wt.two_args.apply_async((1, 2), queue=queue)
        worker = burst(broker, queue)
    finally:
        for signal_, receiver in receivers.items():
            signal_.disconnect(receiver)
    assert seen == ["worker_ready", "task_received", "worker_shutdown"]
    assert worker.active_requests() == [] and worker.reserved_requests() == []
    with pytest.raises(NotImplementedError, match="solo pool"):
        worker.pool_grow(1)


# -- ETAs --------------------------------------------------------------------------------


def test_near_eta_is_held_and_never_runs_early(broker, queue, tmp_path):
    path = str(tmp_path / "runs")
    eta = time.time() + 1.5
    result = wt.on_time.apply_async((path, "k", eta), countdown=1.5, queue=queue)
    burst(broker, queue)
    assert meta(result.id)["status"] == states.SUCCESS
    [(key, late)] = [r[1].split(":") for r in wt.lines(path, "ran")]
    assert 0 <= float(late) < 1.0


# -- bad input ---------------------------------------------------------------------------


class _Boom:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_bad_messages_are_dead_lettered_and_the_worker_stays_up(broker, queue, tmp_path):
    from django_tasks_q.models import DeadLetter

    def headers(task: str, task_id: str) -> dict:
        return {"lang": "py", "task": task, "id": task_id, "root_id": task_id, "retries": 0}

    ids = {k: str(uuid.uuid4()) for k in ("unknown", "undecodable", "pickle", "shape", "args")}
    canary = tmp_path / "unpickled"
    publish_raw(broker, queue, "[[1, 2], {}, {}]", headers("no.such.task", ids["unknown"]))
    publish_raw(broker, queue, "{not json", headers("wt.pid", ids["undecodable"]))
    publish_raw(
        broker, queue, pickle.dumps(([_Boom(str(canary))], {}, {})), headers("wt.pid", ids["pickle"]),
        content_type="application/x-python-serialize",
    )  # fmt: skip
    publish_raw(broker, queue, '{"a": 1}', headers("wt.pid", ids["shape"]))
    publish_raw(
        broker, queue, "[[], {}, {}]", {"lang": "py", "id": str(uuid.uuid4())}
    )  # no task header
    publish_raw(broker, queue, "[[1], {}, {}]", headers("wt.two_args", ids["args"]))
    after = wt.two_args.apply_async((1, 2), queue=queue)
    burst(broker, queue)

    reasons = dict(DeadLetter.objects.filter(queue=queue).values_list("task_id", "reason"))
    assert reasons[ids["unknown"]] == "unknown_task"
    assert reasons[ids["undecodable"]] == "undecodable"
    assert reasons[ids["pickle"]] == "content_disallowed"
    assert reasons[ids["shape"]] == "invalid_message"
    assert reasons[ids["args"]] == "bad_arguments"
    assert (
        sorted(reasons.values()).count("invalid_message") == 2
    )  # and the one without a task header
    assert not canary.exists(), "a pickle body was unpickled"
    for key in ("unknown", "undecodable", "pickle", "shape", "args"):
        assert meta(ids[key])["status"] == states.FAILURE, key
    assert meta(ids["unknown"])["result"]["exc_type"] == "NotRegistered"
    assert "wrong arguments" in str(meta(ids["args"])["result"]["exc_message"])
    assert meta(after.id)["result"] == 3


def test_too_many_deliveries_go_to_the_dead_letters(broker, queue, tmp_path):
    path = str(tmp_path / "runs")
    with override_settings(TASKS_Q=settings_for(broker, MAX_DELIVERIES=1)):
        result = wt.reject_once.apply_async((path, "k"), queue=queue)
        burst(broker, queue)
    assert dead_letters(queue) == {"worker_lost": result.id}
    assert meta(result.id)["status"] == states.FAILURE
    assert meta(result.id)["result"]["exc_type"] == "WorkerLostError"
    assert len(wt.lines(path, "start")) == 1


# -- events ------------------------------------------------------------------------------


def test_events_follow_celerys_format(broker, queue):
    import threading

    from kombu import Consumer, Queue

    from django_tasks_q.events import EventDispatcher, event_exchange

    seen: list[dict] = []
    stop = threading.Event()

    def listen() -> None:
        # events are transient (and a fanout on Redis): the listener must be there first
        with Connection(broker.url, transport=_transport(broker)) as conn:
            channel = conn.channel()
            listen = Queue(f"ev-{queue}", event_exchange(conn), routing_key="#", auto_delete=True)
            consumer = Consumer(
                channel, [listen], callbacks=[lambda body, m: (seen.append(body), m.ack())]
            )
            consumer.consume()
            while not stop.is_set():
                try:
                    conn.drain_events(timeout=0.1)
                except TimeoutError:
                    pass
            consumer.cancel()

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    try:
        with Connection(broker.url, transport=_transport(broker)) as conn:
            probe = EventDispatcher(conn, "probe@test")
            deadline = time.monotonic() + 10
            while not any(e.get("type") == "probe" for e in seen):
                assert time.monotonic() < deadline, "the event listener never got ready"
                probe.send("probe")
                time.sleep(0.1)
            probe.close()
        result = wt.two_args.apply_async((1, 2), queue=queue)
        burst(broker, queue, events=True)
        deadline = time.monotonic() + 10
        while "task-succeeded" not in {e["type"] for e in seen if e.get("uuid") == result.id}:
            assert time.monotonic() < deadline, f"no task-succeeded event among {seen}"
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(5)
    ours = [e for e in seen if e.get("uuid") == result.id]
    assert [e["type"] for e in ours] == ["task-received", "task-started", "task-succeeded"]
    for event in ours:
        assert {"hostname", "timestamp", "utcoffset", "pid", "clock"} <= set(event)
    assert ours[0]["name"] == "wt.two_args"
