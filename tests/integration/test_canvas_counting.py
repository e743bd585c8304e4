"""Chord counters on every store: exactly once, and idempotent per member task id.

The members race (threads released by a barrier), and every member is counted
twice, as a member redelivered after a crash would be: the body still fires
exactly once, and never before every distinct member was counted.
"""

from __future__ import annotations

import uuid

import pytest
from django.db import connection

from django_tasks_q.results import get_store
from tests import services
from tests.integration.result_store_contract import run_threads, tasks_q

MEMBERS = 40


def _fire_count(store, members: int, duplicates: bool) -> tuple[list, list]:
    group_id = f"chord-{uuid.uuid4().hex}"
    ids = [f"m-{i}-{uuid.uuid4().hex}" for i in range(members)]
    store.chord_init(group_id, members, {"task": "demo.xsum", "args": []}, ids)
    calls = ids + ids if duplicates else ids
    results = run_threads(len(calls), lambda i: store.chord_part_done(group_id, member_id=calls[i]))
    fired = [r for r in results if r is not None]
    return fired, ids


class CountingContract:
    def test_fires_exactly_once_when_members_race(self, store) -> None:
        fired, ids = _fire_count(store, MEMBERS, duplicates=False)
        assert len(fired) == 1
        assert fired[0].result_ids == ids and fired[0].body["task"] == "demo.xsum"

    def test_each_member_counts_once_even_when_delivered_twice(self, store) -> None:
        fired, ids = _fire_count(store, MEMBERS, duplicates=True)
        assert len(fired) == 1 and fired[0].result_ids == ids

    def test_a_duplicate_alone_never_completes_the_chord(self, store) -> None:
        group_id = f"chord-{uuid.uuid4().hex}"
        store.chord_init(group_id, 2, {"task": "demo.xsum"}, ["a", "b"])
        assert store.chord_part_done(group_id, member_id="a") is None
        assert store.chord_part_done(group_id, member_id="a") is None
        assert store.chord_part_done(group_id, member_id="b") is not None
        assert store.chord_part_done(group_id, member_id="b") is None

    def test_reinitialising_a_chord_forgets_counted_members(self, store) -> None:
        group_id = f"chord-{uuid.uuid4().hex}"
        store.chord_init(group_id, 1, {"task": "demo.xsum"}, ["a"])
        assert store.chord_part_done(group_id, member_id="a") is not None
        store.chord_init(group_id, 1, {"task": "demo.xsum"}, ["a"])
        assert store.chord_part_done(group_id, member_id="a") is not None

    def test_unknown_chord_is_not_an_error(self, store) -> None:
        assert store.chord_part_done(f"missing-{uuid.uuid4().hex}", member_id="a") is None


@pytest.mark.django_db(transaction=True)
class TestDatabaseCounting(CountingContract):
    @pytest.fixture
    def store(self):
        if connection.vendor == "postgresql":
            services.require("postgres")
        with tasks_q(RESULT_BACKEND="django-db"):
            yield get_store()


class TestRedisCounting(CountingContract):
    @pytest.fixture
    def store(self, redis_url):
        with tasks_q(RESULT_BACKEND=redis_url, RESULT_EXPIRES=600):
            yield get_store()

    def test_counted_set_expires_with_the_counter(self, store) -> None:
        group_id = f"chord-{uuid.uuid4().hex}"
        store.chord_init(group_id, 2, {"task": "demo.xsum"}, ["a", "b"])
        store.chord_part_done(group_id, member_id="a")
        ttl = store.client.ttl(f"tasks_q:chord:{group_id}:counted")
        assert 0 < ttl <= 600


class TestMemoryCounting(CountingContract):
    @pytest.fixture
    def store(self):
        from django_tasks_q.results.memory import MemoryStore

        return MemoryStore()
