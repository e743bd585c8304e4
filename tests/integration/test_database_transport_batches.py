"""``django://`` as the worker drives it: one transaction per batch, on its own connection.

* acks deleted in the caller's transaction count only once it commits;
* the next batch claimed in that transaction is handed out only once it commits;
* results (``django-db`` on the same database) and acks commit together or not at all;
* the consumer keeps its own connection across ``close_old_connections()``.

Runs on SQLite by default and on PostgreSQL with ``TQ_DATABASE=postgres``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import close_old_connections, connection, transaction
from django.test import override_settings
from kombu import Producer

from django_tasks_q import states
from django_tasks_q.messaging.database_conn import own_connection
from django_tasks_q.results import get_store
from django_tasks_q.worker.consumer import BrokerConsumer, queue_entities
from django_tasks_q.worker.resultbuffer import ResultBuffer

pytestmark = pytest.mark.django_db(transaction=True)


class Rollback(Exception):
    pass


@pytest.fixture
def name() -> str:
    return f"tq-batch-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def consumer(name: str) -> Iterator[tuple[BrokerConsumer, list[Any]]]:
    received: list[Any] = []
    with override_settings(
        TASKS_Q={**django_settings.TASKS_Q, "BROKER_TRANSPORT_OPTIONS": {"polling_interval": 0.05}}
    ):
        worker = BrokerConsumer("django://", [name], 2, lambda queue, raw: received.append(raw))
        worker.connect(max_retries=1)
        try:
            yield worker, received
        finally:
            worker.close()


def publish(worker: BrokerConsumer, name: str, count: int) -> list[str]:
    exchange, queue = queue_entities(name)
    ids = [uuid.uuid4().hex for _ in range(count)]
    producer = Producer(worker.channel)
    for task_id in ids:
        producer.publish({"id": task_id}, exchange=exchange, routing_key=name, declare=[queue])
    return ids


def rows(name: str) -> list[tuple[str | None, int]]:
    from django_tasks_q.models import QueueMessage

    found = QueueMessage.objects.filter(queue=name).order_by("id")
    return [(r.owner, r.delivery_count) for r in found]


def take(worker: BrokerConsumer, received: list[Any], count: int) -> list[Any]:
    while len(received) < count:
        assert worker.drain(5), "no delivery"
    return list(received)


def test_acks_in_a_rolled_back_transaction_stay_unacked(consumer, name, caplog):
    worker, received = consumer
    publish(worker, name, 2)
    raws = take(worker, received, 2)
    owner = worker.connection.transport.owner
    # When the acks' transaction rolls back
    with pytest.raises(Rollback):
        with own_connection(connection.alias), transaction.atomic():
            worker.ack_many(raws)
            assert rows(name) == []  # deleted, in this transaction
            raise Rollback
    # Then the rows are still ours and the messages still unacked
    assert rows(name) == [(owner, 1), (owner, 1)]
    assert not any(raw.acknowledged for raw in raws)
    # and a later ack deletes them without complaint
    with caplog.at_level(logging.WARNING, logger="django_tasks_q"):
        worker.ack_many(raws)
    assert rows(name) == []
    assert all(raw.acknowledged for raw in raws)
    assert "reservation was released" not in caplog.text


def test_acks_count_once_their_transaction_commits(consumer, name, caplog):
    worker, received = consumer
    publish(worker, name, 2)
    raws = take(worker, received, 2)
    with caplog.at_level(logging.WARNING, logger="django_tasks_q"):
        with own_connection(connection.alias), transaction.atomic():
            worker.ack_many(raws)
            assert not any(raw.acknowledged for raw in raws)
        assert all(raw.acknowledged for raw in raws)
        for raw in raws:
            worker.ack(raw)  # already settled: no second delete, no warning
    assert rows(name) == []
    assert "reservation was released" not in caplog.text


def test_the_next_batch_is_claimed_with_the_acks_and_handed_out_after_the_commit(consumer, name):
    worker, received = consumer
    publish(worker, name, 4)
    first = take(worker, received, 2)  # prefetch 2: the first claim took two rows
    owner = worker.connection.transport.owner
    assert rows(name) == [(owner, 1), (owner, 1), (None, 0), (None, 0)]
    # When the batch is acked with claim_next and the transaction rolls back
    with pytest.raises(Rollback):
        with own_connection(connection.alias), transaction.atomic():
            worker.ack_many(first, claim_next=True)
            assert rows(name) == [(owner, 1), (owner, 1)]  # the next two, claimed
            raise Rollback
    # Then nothing changed: the first two are still ours, the others still ready
    assert rows(name) == [(owner, 1), (owner, 1), (None, 0), (None, 0)]
    # When it commits
    worker.ack_many(first, claim_next=True)
    assert rows(name) == [(owner, 1), (owner, 1)]
    # Then the next poll hands out the claimed rows, each delivered once
    second = take(worker, received, 4)[2:]
    assert [raw.payload["id"] for raw in second] != [raw.payload["id"] for raw in first]
    assert [raw.headers["x-delivery-count"] for raw in second] == [1, 1]
    worker.ack_many(second)
    assert rows(name) == []


def test_results_and_acks_commit_together(consumer, name):
    worker, received = consumer
    ids = publish(worker, name, 2)
    raws = take(worker, received, 2)
    with override_settings(TASKS_Q={**django_settings.TASKS_Q, "RESULT_BACKEND": "django-db"}):
        store = get_store()
        buffer = ResultBuffer(store)
        assert buffer.alias == worker.transaction_alias == connection.alias
        for task_id, raw in zip(ids, raws, strict=True):
            buffer.mark_as_done(task_id, task_id[:4], request=SimpleNamespace(task="t"))
            buffer.job_done(raw)
        # When the acks fail inside the batch's transaction
        with pytest.raises(Rollback):
            with buffer.settle(atomic_with=connection.alias) as jobs:
                worker.ack_many(jobs)
                raise Rollback
        # Then no result was written, nothing was acked, and the batch is still buffered
        assert [store.get_task_meta(i)["status"] for i in ids] == [states.PENDING] * 2
        assert len(rows(name)) == 2 and not any(raw.acknowledged for raw in raws)
        assert len(buffer) == 2
        # When the next flush succeeds, both land
        with buffer.settle(atomic_with=connection.alias) as jobs:
            worker.ack_many(jobs)
        assert [store.get_task_meta(i)["result"] for i in ids] == [i[:4] for i in ids]
        assert rows(name) == [] and all(raw.acknowledged for raw in raws)


def test_the_consumer_keeps_its_own_connection_across_tasks(consumer, name):
    worker, received = consumer
    publish(worker, name, 2)
    take(worker, received, 1)
    with own_connection(connection.alias) as own:
        socket = own.connection
    assert socket is not None
    # When the worker closes the thread's connections around a task (CONN_MAX_AGE = 0)
    connection.ensure_connection()
    close_old_connections()
    assert connection.connection is None
    # Then acks and the next delivery still use the same database session
    take(worker, received, 2)
    worker.ack_many(list(received))
    with own_connection(connection.alias) as own:
        assert own.connection is socket
    assert rows(name) == []
