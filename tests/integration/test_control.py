"""Remote control over real brokers: a FakeWorker's pidbox node in a thread, our client here.

Runs on memory://, django:// (SQLite; PostgreSQL with TQ_DATABASE=postgres),
redis:// and amqp://. Commands that change a worker always name a destination,
so workers of other test runs sharing the broker are never touched.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from django.test import override_settings

from django_tasks_q import revocation
from django_tasks_q.calling import send_task
from django_tasks_q.control import ControlError, control
from django_tasks_q.models import RevokedTask
from tests.control_fakes import (
    BROKERS,
    FakeWorker,
    broker_url,
    drop_queues,
    isolated_broker,
    running_node,
    task_info,
    tasks_q_settings,
    wait_for,
)


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest, transactional_db: None) -> Iterator[str]:
    url = broker_url(request.param)
    with isolated_broker(url):
        yield url


@pytest.fixture
def worker(broker: str) -> Iterator[FakeWorker]:
    fake = FakeWorker(active=[task_info("t-active")], reserved=[task_info("t-reserved")])
    with running_node(fake):
        yield fake


def test_ping_round_trip(worker: FakeWorker) -> None:
    # When we ping the worker by name
    replies = control.ping(destination=[worker.hostname], timeout=5)
    # Then it answers pong, in Celery's shape
    assert replies == [{worker.hostname: {"ok": "pong"}}]


def test_inspect_returns_replies_by_hostname(worker: FakeWorker) -> None:
    inspect = control.inspect(destination=[worker.hostname], timeout=5)

    assert inspect.ping() == {worker.hostname: {"ok": "pong"}}
    assert inspect.active() == {worker.hostname: [task_info("t-active")]}
    assert inspect.reserved() == {worker.hostname: [task_info("t-reserved")]}
    assert inspect.scheduled() == {worker.hostname: []}
    assert inspect.registered() == {worker.hostname: ["demo.add", "demo.mul"]}
    assert inspect.stats()[worker.hostname]["pid"] == 4242


def test_broadcast_reaches_every_worker(broker: str) -> None:
    # Given two workers
    first, second = FakeWorker(), FakeWorker()
    with running_node(first), running_node(second):
        # When we ask everyone (no destination)
        replies = control.broadcast("ping", reply=True, timeout=3)
    # Then both answered (workers of other runs on a shared broker may answer too)
    assert {first.hostname: {"ok": "pong"}} in replies
    assert {second.hostname: {"ok": "pong"}} in replies


def test_destination_reaches_only_the_named_worker(broker: str) -> None:
    first, second = FakeWorker(), FakeWorker()
    with running_node(first), running_node(second):
        replies = control.rate_limit(
            "demo.add", "10/m", destination=[first.hostname], reply=True, timeout=5
        )
        assert replies == [{first.hostname: {"ok": "new rate limit set successfully"}}]
        # the other worker is still answering, and was not changed
        assert control.ping(destination=[second.hostname], timeout=5)
    assert first.rate_limits == {"demo.add": "10/m"}
    assert second.rate_limits == {}


def test_control_commands_call_the_worker(worker: FakeWorker) -> None:
    to = {"destination": [worker.hostname], "reply": True, "timeout": 5}

    assert control.time_limit("demo.add", soft=5, hard=10, **to) == [
        {worker.hostname: {"ok": "time limits set successfully"}}
    ]
    assert control.pool_grow(2, **to) == [{worker.hostname: {"ok": "pool will grow"}}]
    assert control.pool_shrink(1, **to) == [{worker.hostname: {"ok": "pool will shrink"}}]
    assert control.add_consumer("extra", **to) == [{worker.hostname: {"ok": "add consumer extra"}}]
    assert control.cancel_consumer("extra", **to) == [
        {worker.hostname: {"ok": "no longer consuming from extra"}}
    ]
    assert control.rate_limit("demo.mul", 0, **to) == [
        {worker.hostname: {"ok": "rate limit disabled successfully"}}
    ]

    assert worker.time_limits == {"demo.add": (5.0, 10.0)}
    assert worker.concurrency == 3
    assert worker.queues == ["default"]
    assert ("add_consumer", ("extra",)) in worker.calls
    assert worker.rate_limits == {"demo.mul": 0}


def test_errors_come_back_as_replies_and_the_node_survives(worker: FakeWorker) -> None:
    to = {"destination": [worker.hostname], "reply": True, "timeout": 5}

    unknown = control.broadcast("no_such_command", **to)[0][worker.hostname]
    assert "unknown control command 'no_such_command'" in unknown["error"]
    missing = control.broadcast("rate_limit", {"rate_limit": "1/s"}, **to)[0][worker.hostname]
    assert "bad arguments for 'rate_limit'" in missing["error"] and "task_name" in missing["error"]
    bad_rate = control.broadcast(
        "rate_limit", {"task_name": "demo.add", "rate_limit": "fast"}, **to
    )[0]
    assert "Invalid rate limit" in bad_rate[worker.hostname]["error"]
    unknown_task = control.rate_limit("nope.task", "1/s", **to)[0][worker.hostname]
    assert unknown_task == {"error": "rate_limit: unknown 'nope.task'"}
    too_small = control.pool_shrink(5, **to)[0][worker.hostname]
    assert "cannot shrink a pool of 2 by 5" in too_small["error"]

    assert control.ping(destination=[worker.hostname], timeout=5) == [
        {worker.hostname: {"ok": "pong"}}
    ]


def test_cast_without_reply_is_delivered(worker: FakeWorker) -> None:
    # When we send without waiting for replies
    assert control.shutdown(destination=[worker.hostname]) is None
    # Then the worker still gets it
    assert worker.stopped.wait(10)


def test_revoke_persists_broadcasts_and_terminates(worker: FakeWorker) -> None:
    # When the running task is revoked with terminate
    replies = control.revoke(
        "t-active",
        destination=[worker.hostname],
        terminate=True,
        signal="KILL",
        reply=True,
        timeout=5,
    )

    # Then the worker signalled it, the revoke is stored, and inspect lists it
    assert replies == [{worker.hostname: {"ok": "terminate: t-active"}}]
    assert worker.terminated == [("t-active", "SIGKILL")]
    row = RevokedTask.objects.get(task_id="t-active")
    assert (row.terminate, row.signal) == (True, "SIGKILL")
    assert (
        "t-active"
        in control.inspect(destination=[worker.hostname], timeout=5).revoked()[worker.hostname]
    )
    assert revocation.RevokedCache().is_revoked("t-active")


def test_revoke_of_unknown_task_is_flagged(worker: FakeWorker) -> None:
    task_id = str(uuid.uuid4())
    replies = control.revoke([task_id], destination=[worker.hostname], reply=True, timeout=5)
    assert replies == [{worker.hostname: {"ok": f"tasks {task_id} flagged as revoked"}}]
    assert worker.terminated == []


def test_purge_counts_and_empties_the_configured_queues(broker: str) -> None:
    from django.conf import settings

    default, images = settings.TASKS_Q["QUEUES"]
    for i in range(3):
        send_task("demo.add", [i, i], queue=default)
    for i in range(2):
        send_task("demo.add", [i, i], queue=images)

    def all_five() -> dict | None:
        sizes = control.queue_sizes()
        return sizes if sum(n or 0 for n in sizes.values()) == 5 else None

    assert wait_for(all_five) == {default: 3, images: 2}
    assert control.purge() == 5
    assert control.queue_sizes() == {default: 0, images: 0}


def test_purge_of_named_queues_leaves_the_others(broker: str) -> None:
    from django.conf import settings

    default, images = settings.TASKS_Q["QUEUES"]
    send_task("demo.add", [1, 1], queue=default)
    send_task("demo.add", [1, 1], queue=images)
    wait_for(lambda: control.queue_sizes([images])[images] == 1)

    assert control.purge([images]) == 1
    assert control.queue_sizes() == {default: 1, images: 0}


def test_unreachable_broker_raises_a_clear_error_without_the_password(
    transactional_db: None,
) -> None:
    url = "amqp://guest:s3cret@127.0.0.1:1//"
    with override_settings(
        TASKS_Q=tasks_q_settings(
            url, BROKER_CONNECTION_TIMEOUT=0.5, PUBLISH_RETRY_POLICY={"max_retries": 0}
        )
    ):
        with pytest.raises(ControlError) as info:
            control.ping(timeout=0.5)
    message = str(info.value)
    assert "Could not send control command 'ping'" in message
    assert "amqp://guest:**@127.0.0.1:1//" in message
    assert "s3cret" not in message


def test_revoke_is_stored_even_when_the_broker_is_down(
    transactional_db: None, caplog: pytest.LogCaptureFixture
) -> None:
    url = "amqp://guest:guest@127.0.0.1:1//"
    with override_settings(
        TASKS_Q=tasks_q_settings(
            url, BROKER_CONNECTION_TIMEOUT=0.5, PUBLISH_RETRY_POLICY={"max_retries": 0}
        )
    ):
        assert control.revoke("down-1") is None
    assert RevokedTask.objects.filter(task_id="down-1").exists()
    assert "broadcast failed" in caplog.text


def test_a_channel_error_does_not_break_later_commands(
    amqp_url: str, transactional_db: None
) -> None:
    from kombu import Queue

    from django_tasks_q.messaging.connection import broker_connection

    with isolated_broker(amqp_url):
        # Given a queue that exists with other arguments than ours (not durable)
        name = f"ctl-mismatch-{uuid.uuid4().hex[:8]}"
        conn = broker_connection()
        try:
            Queue(name, durable=False, auto_delete=True)(conn.default_channel).declare()
            # When purging it fails on the broker (PRECONDITION_FAILED)
            with pytest.raises(ControlError, match="Could not send control command 'purge'"):
                control.purge([name])
            # Then the next commands work on a fresh connection
            worker = FakeWorker()
            with running_node(worker):
                assert control.ping(destination=[worker.hostname], timeout=5) == [
                    {worker.hostname: {"ok": "pong"}}
                ]
        finally:
            conn.release()
            drop_queues(amqp_url, [name])


def test_broker_errors_repeat_cleanly(transactional_db: None) -> None:
    url = "redis://127.0.0.1:1/0"
    with override_settings(
        TASKS_Q=tasks_q_settings(
            url, BROKER_CONNECTION_TIMEOUT=0.5, PUBLISH_RETRY_POLICY={"max_retries": 0}
        )
    ):
        for _ in range(3):
            with pytest.raises(ControlError, match="redis://127.0.0.1:1/0"):
                control.inspect(timeout=0.2).ping()
