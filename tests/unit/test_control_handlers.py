"""The worker's control handlers, driven directly with a FakeWorker (no broker)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from django_tasks_q.worker.control_handlers import (
    COMMANDS,
    ControlDispatcher,
    jsonable,
    run_command,
)
from tests.control_fakes import FakeWorker, task_info


class Recorder:
    """Stands in for the node's reply publisher."""

    def __init__(self) -> None:
        self.replies: list[dict] = []

    def __call__(self, data, exchange, routing_key, ticket, **kwargs) -> None:
        self.replies.append(
            {"data": data, "exchange": exchange, "routing_key": routing_key, "ticket": ticket}
        )


@pytest.fixture
def worker() -> FakeWorker:
    return FakeWorker(hostname="w1@test", active=[task_info("run-1")])


@pytest.fixture
def dispatcher(worker: FakeWorker, monkeypatch: pytest.MonkeyPatch) -> ControlDispatcher:
    d = ControlDispatcher(worker)
    monkeypatch.setattr(d.node, "reply", Recorder())
    return d


def _message(method, arguments=None, destination=None, ticket="t-1"):
    return {
        "method": method, "arguments": arguments or {}, "destination": destination,
        "pattern": None, "matcher": None, "ticket": ticket,
        "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": "oid-1"},
    }  # fmt: skip


def test_every_documented_command_is_registered() -> None:
    assert {
        "ping", "active", "reserved", "scheduled", "registered", "stats", "revoked", "revoke",
        "terminate", "rate_limit", "time_limit", "shutdown", "pool_grow", "pool_shrink",
        "add_consumer", "cancel_consumer",
    } <= set(COMMANDS)  # fmt: skip


def test_a_message_is_answered_on_the_reply_exchange(dispatcher: ControlDispatcher) -> None:
    dispatcher.on_message(_message("ping"))
    assert dispatcher.node.reply.replies == [
        {
            "data": {"w1@test": {"ok": "pong"}},
            "exchange": "reply.celery.pidbox",
            "routing_key": "oid-1",
            "ticket": "t-1",
        }
    ]


def test_a_message_for_another_worker_is_ignored(
    dispatcher: ControlDispatcher, worker: FakeWorker
) -> None:
    dispatcher.on_message(_message("shutdown", destination=["other@test"]))
    assert dispatcher.node.reply.replies == []
    assert not worker.stopped.is_set()


def test_a_cast_runs_without_replying(dispatcher: ControlDispatcher, worker: FakeWorker) -> None:
    message = _message("pool_grow", {"n": 3})
    del message["reply_to"]
    dispatcher.on_message(message)
    assert worker.concurrency == 5
    assert dispatcher.node.reply.replies == []


@pytest.mark.parametrize(
    "body",
    [None, "text", ["list"], {"no": "method"}, {"method": "ping", "bogus_key": 1, "arguments": {}}],
)
def test_malformed_messages_never_raise(
    dispatcher: ControlDispatcher, body, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL)
    dispatcher.on_message(body)


def test_inspect_commands_read_the_worker(worker: FakeWorker) -> None:
    assert run_command(worker, "active", {"safe": None}) == [task_info("run-1")]
    assert run_command(worker, "reserved", {}) == []
    assert run_command(worker, "scheduled", None) == []
    assert run_command(worker, "registered", {"taskinfoitems": None}) == ["demo.add", "demo.mul"]
    assert run_command(worker, "stats", {})["pool"] == {"max-concurrency": 2}


def test_registered_hides_builtins_unless_asked() -> None:
    worker = FakeWorker(tasks=("demo.add", "tasks_q.backend_cleanup"))
    assert run_command(worker, "registered", {}) == ["demo.add"]
    assert run_command(worker, "registered", {"builtins": True}) == [
        "demo.add",
        "tasks_q.backend_cleanup",
    ]


@pytest.mark.django_db
def test_revoke_marks_the_id_and_terminates_running_tasks(worker: FakeWorker) -> None:
    from django_tasks_q import revocation

    assert run_command(
        worker, "revoke", {"task_id": ["run-1", "queued-1"], "terminate": True, "signal": "SIGUSR1"}
    ) == {"ok": "terminate: run-1"}
    assert worker.terminated == [("run-1", "SIGUSR1")]
    assert revocation.is_revoked("queued-1")
    assert "queued-1" in run_command(worker, "revoked", {})
    assert run_command(worker, "terminate", {"task_id": "nothing", "signal": "KILL"}) == {
        "ok": "terminate: tasks unknown"
    }


def test_unknown_commands_and_bad_arguments_are_error_replies(worker: FakeWorker) -> None:
    assert "unknown control command 'explode'" in run_command(worker, "explode", {})["error"]
    assert "unknown control command None" in run_command(worker, None, {})["error"]
    assert "must be a JSON object" in run_command(worker, "ping", ["x"])["error"]
    assert "bad arguments for 'add_consumer'" in run_command(worker, "add_consumer", {})["error"]
    assert (
        "A queue name must be a non-empty string"
        in run_command(worker, "add_consumer", {"queue": ""})["error"]
    )
    assert (
        "n must be a whole number >= 1" in run_command(worker, "pool_grow", {"n": "many"})["error"]
    )
    assert (
        "soft time limit must be a number"
        in run_command(worker, "time_limit", {"task_name": "demo.add", "soft": -1})["error"]
    )
    assert (
        "Unknown signal"
        in run_command(worker, "revoke", {"task_id": "x", "signal": "SIGNOPE"})["error"]
    )
    assert (
        "Invalid rate limit string"
        in run_command(worker, "rate_limit", {"task_name": "demo.add", "rate_limit": "x/y"})[
            "error"
        ]
    )
    assert run_command(worker, "time_limit", {"task_name": "nope"}) == {
        "error": "time_limit: unknown 'nope'"
    }


def test_worker_failures_become_error_replies(
    worker: FakeWorker, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(n):
        raise RuntimeError("pool is on fire")

    def unsupported(n):
        raise NotImplementedError("the solo pool cannot grow")

    worker.pool_grow = unsupported
    assert run_command(worker, "pool_grow", {"n": 1}) == {
        "error": "pool_grow: the solo pool cannot grow"
    }
    worker.pool_grow = boom
    assert run_command(worker, "pool_grow", {"n": 1}) == {
        "error": "pool_grow failed: RuntimeError('pool is on fire')"
    }
    assert "Control command 'pool_grow' failed" in caplog.text


def test_shutdown_asks_the_worker_to_stop(worker: FakeWorker) -> None:
    assert run_command(worker, "shutdown", {}) == {"ok": "shutting down"}
    assert worker.stopped.is_set()


def test_replies_are_made_json_safe() -> None:
    class Request:
        def info(self):
            return {"id": "r", "time_start": datetime(2030, 1, 1, tzinfo=UTC), "raw": b"\xff"}

    assert jsonable([Request(), {1: Decimal("1.5")}, float("nan"), {"s": {3}}]) == [
        {"id": "r", "time_start": "2030-01-01T00:00:00+00:00", "raw": "\ufffd"},
        {"1": "Decimal('1.5')"},
        "nan",
        {"s": [3]},
    ]


@pytest.mark.django_db
def test_hello_from_a_celery_worker_exchanges_revoked_ids(worker: FakeWorker) -> None:
    from django_tasks_q import revocation

    revocation.revoke("ours-1")
    reply = run_command(
        worker, "hello", {"from_node": "celery@peer", "revoked": {"theirs-1": 12.5}}
    )
    assert {"ours-1", "theirs-1"} <= set(reply["revoked"])
    assert revocation.is_revoked("theirs-1")
    assert run_command(worker, "hello", {"from_node": worker.hostname}) is None
