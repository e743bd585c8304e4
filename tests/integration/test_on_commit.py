"""Enqueueing and transactions on the ``django://`` broker.

A message written by ``delay()`` inside ``transaction.atomic()`` is a row in the
caller's transaction: it commits or rolls back with the caller's data.
``delay_on_commit()`` sends only once the transaction commits.
"""

from __future__ import annotations

import pytest
from django.db import transaction
from django.test import override_settings

from django_tasks_q import AsyncResult, task
from django_tasks_q.models import QueueMessage

pytestmark = pytest.mark.django_db(transaction=True)


@task(name="oncommit.add")
def add(x, y):
    return x + y


@pytest.fixture(autouse=True)
def django_broker():
    with override_settings(TASKS_Q={"BROKER_URL": "django://"}):
        yield


class Rollback(Exception):
    pass


def ids_in_queue() -> list[str]:
    return [row.task_id for row in QueueMessage.objects.filter(queue="default")]


def test_delay_outside_a_transaction_writes_one_row():
    r = add.delay(1, 2)
    assert ids_in_queue() == [r.id]


def test_delay_in_a_transaction_that_rolls_back_leaves_no_message():
    # Given a transaction that enqueues and then fails
    with pytest.raises(Rollback):
        with transaction.atomic():
            add.delay(1, 2)
            # the caller's own transaction sees the message
            assert QueueMessage.objects.count() == 1
            raise Rollback
    # Then the message went with the rolled-back data
    assert ids_in_queue() == []


def test_delay_in_a_transaction_that_commits_leaves_one_message():
    with transaction.atomic():
        r = add.delay(1, 2)
    assert ids_in_queue() == [r.id]


def test_delay_in_a_rolled_back_savepoint_is_undone_with_it():
    with transaction.atomic():
        kept = add.delay(1, 1)
        with pytest.raises(Rollback):
            with transaction.atomic():
                add.delay(2, 2)
                raise Rollback
    assert ids_in_queue() == [kept.id]


def test_delay_on_commit_sends_only_after_commit_and_returns_the_result_at_once():
    with transaction.atomic():
        r = add.delay_on_commit(3, 4)
        # The AsyncResult is there immediately, with the id the message will carry ...
        assert isinstance(r, AsyncResult) and r.id
        # ... but nothing is sent yet.
        assert QueueMessage.objects.count() == 0
    assert ids_in_queue() == [r.id]
    row = QueueMessage.objects.get(task_id=r.id)
    assert row.payload["headers"]["task"] == "oncommit.add"


def test_delay_on_commit_in_a_rolled_back_transaction_never_sends():
    with pytest.raises(Rollback):
        with transaction.atomic():
            add.delay_on_commit(3, 4)
            raise Rollback
    assert ids_in_queue() == []


def test_apply_async_on_commit_keeps_options_and_task_id():
    with transaction.atomic():
        r = add.apply_async_on_commit((1, 2), task_id="fixed-on-commit", queue="images")
    assert r.id == "fixed-on-commit"
    assert list(QueueMessage.objects.filter(queue="images").values_list("task_id", flat=True)) == [
        "fixed-on-commit"
    ]


def test_delay_on_commit_checks_arguments_at_call_time():
    with transaction.atomic():
        with pytest.raises(TypeError, match="'oncommit.add' called with wrong arguments"):
            add.delay_on_commit(1)
    assert QueueMessage.objects.count() == 0


def test_delay_on_commit_outside_a_transaction_sends_at_once():
    r = add.delay_on_commit(5, 6)
    assert ids_in_queue() == [r.id]
