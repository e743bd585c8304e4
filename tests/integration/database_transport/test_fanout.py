"""What ``django://`` promises beyond the broker contract (DESIGN D3, docs/brokers.md): fanout and pidbox.

Runs on SQLite by default and on PostgreSQL with ``TQ_DATABASE=postgres``.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from django.db import connections
from kombu import Consumer, Exchange, Producer, Queue, pidbox

from django_tasks_q.messaging.connection import broker_connection
from tests.integration.test_broker_contract import wait_for

from .helpers import drain_once

pytestmark = pytest.mark.django_db(transaction=True)


# -- fanout and pidbox ----------------------------------------------------------------
def test_a_fanout_message_reaches_every_bound_queue_once(connect):
    exchange = Exchange(f"tq-fan-{uuid.uuid4().hex[:8]}", type="fanout")
    a, b = connect(), connect()
    got: dict[str, list[Any]] = {"a": [], "b": []}
    with (
        Consumer(
            a,
            [Queue(f"{exchange.name}-a", exchange)],
            callbacks=[lambda b_, m: got["a"].append(b_)],
            no_ack=True,
        ),
        Consumer(
            b,
            [Queue(f"{exchange.name}-b", exchange)],
            callbacks=[lambda b_, m: got["b"].append(b_)],
            no_ack=True,
        ),
    ):
        Producer(connect().default_channel).publish(
            {"hello": 1}, exchange=exchange, declare=[exchange]
        )
        wait_for(
            lambda: (got["a"] and got["b"]) or (drain_once(a), drain_once(b), None)[-1],
            what="both copies",
        )
        drain_once(a), drain_once(b)  # nothing more arrives
    assert got == {"a": [{"hello": 1}], "b": [{"hello": 1}]}


def test_pidbox_broadcast_with_reply(connect):
    mailbox = pidbox.Mailbox(f"tq{uuid.uuid4().hex[:6]}", type="fanout")
    listening, stop = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def node_main() -> None:
        try:
            with broker_connection(
                "django://", transport_options={"polling_interval": 0.05}
            ) as conn:
                node = mailbox(conn).Node(
                    "node-1",
                    channel=conn.default_channel,
                    handlers={"ping": lambda state, **kw: {"pong": kw}},
                )
                node.listen(callback=node.handle_message)
                listening.set()
                while not stop.is_set():
                    drain_once(conn)
        except BaseException as exc:  # surfaced by the assertion below
            failures.append(exc)
            listening.set()
        finally:
            connections.close_all()

    thread = threading.Thread(target=node_main)
    thread.start()
    try:
        assert listening.wait(10)
        replies = mailbox(connect())._broadcast("ping", {"x": 1}, reply=True, timeout=5, limit=1)
    finally:
        stop.set()
        thread.join(10)
    assert not failures, failures
    assert replies == [{"node-1": {"pong": {"x": 1}}}]
