"""One contract, run against every result store on real services.

* ``TestDatabaseStore``: ``django-db`` on the database picked by ``TQ_DATABASE``
  (SQLite by default; PostgreSQL with ``TQ_DATABASE=postgres``).
* ``TestCacheStore``: ``cache://redis`` (the testproject's django-redis alias).
* ``TestRedisStore``: ``redis://`` with a plain client.
"""

from __future__ import annotations

import datetime
import time
import tracemalloc

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_tasks_q import states
from django_tasks_q.exceptions import TimeoutError
from django_tasks_q.results import StoreItem, get_store
from tests import services
from tests.integration.result_store_contract import (
    EXPIRES,
    StoreContract,
    new_id,
    request,
    tasks_q,
)

# -- the stores -------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
class TestDatabaseStore(StoreContract):
    native_wait = connection.vendor == "postgresql"

    @pytest.fixture
    def store(self):
        if connection.vendor == "postgresql":
            services.require("postgres")
        with tasks_q(RESULT_BACKEND="django-db", RESULT_EXPIRES=EXPIRES):
            yield get_store()

    def test_one_statement_per_write_and_per_read(self, store) -> None:
        task_id = new_id()
        req = request()
        writes = [
            lambda: store.mark_as_started(task_id, request=req),
            lambda: store.update_state(task_id, "PROGRESS", {"p": 1}, request=req),
            lambda: store.mark_as_retry(task_id, ValueError("x"), "tb", req),
            lambda: store.mark_as_done(task_id, 1, request=req),
            lambda: store.mark_as_revoked(new_id()),
        ]
        for write in writes:
            with CaptureQueriesContext(connection) as queries:
                write()
            assert len(queries) == 1, [q["sql"] for q in queries]
        with CaptureQueriesContext(connection) as queries:
            store.get_task_meta(task_id)
        assert len(queries) == 1

    def test_store_many_is_one_statement(self, store) -> None:
        items = [StoreItem(new_id(), n, states.SUCCESS, request=request()) for n in range(500)]

        with CaptureQueriesContext(connection) as queries:
            store.store_many(items)

        assert len(queries) == 1
        from django_tasks_q.models import TaskResult

        assert TaskResult.objects.filter(task_id__in=[i.task_id for i in items]).count() == 500

    def test_pg_listener_lets_go_of_the_database_when_idle(self, store) -> None:
        if connection.vendor != "postgresql":
            pytest.skip("LISTEN/NOTIFY is PostgreSQL only")
        from django_tasks_q.results import pg_listen

        task_id = new_id()
        store.mark_as_done(task_id, 1)
        with pytest.raises(TimeoutError):
            store.wait_for(new_id(), timeout=0.1)
        listener = pg_listen.listener_for(connection)

        deadline = time.monotonic() + pg_listen.LINGER + 3
        while listener._thread is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert listener._thread is None


class RedisContract(StoreContract):
    def test_results_expire_with_result_expires(self, store) -> None:
        task_id = new_id()
        store.mark_as_done(task_id, 1)

        ttl = store.client.ttl(store.key(task_id))

        assert 0 < ttl <= EXPIRES
        assert store.cleanup() == 0


class TestCacheStore(RedisContract):
    @pytest.fixture
    def store(self, redis_url):
        with tasks_q(RESULT_BACKEND="cache://redis", RESULT_EXPIRES=EXPIRES):
            yield get_store()


class TestRedisStore(RedisContract):
    @pytest.fixture
    def store(self, redis_url):
        with tasks_q(RESULT_BACKEND=redis_url, RESULT_EXPIRES=EXPIRES):
            yield get_store()

    def test_no_expiry_when_result_expires_is_none(self, redis_url) -> None:
        with tasks_q(RESULT_BACKEND=redis_url, RESULT_EXPIRES=None):
            store = get_store()
            task_id = new_id()
            store.mark_as_done(task_id, 1)
            try:
                assert store.client.ttl(store.key(task_id)) == -1
            finally:
                store.forget(task_id)


# -- expiry -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_cleanup_of_100k_rows_keeps_memory_flat() -> None:
    from django_tasks_q.cleanup import cleanup_results
    from django_tasks_q.models import ChordCounter, GroupResult, TaskResult

    if connection.vendor == "postgresql":
        services.require("postgres")
    expired_count, fresh_count = 100_000, 1_000
    old = timezone.now() - datetime.timedelta(days=3)
    now = timezone.now()

    def rows(prefix: str, count: int, done: datetime.datetime | None, state: str):
        for n in range(count):
            yield TaskResult(
                task_id=f"{prefix}-{n}", task_name="demo.add", state=state, date_done=done,
                result=n, args=[n], kwargs={},
            )  # fmt: skip

    def insert(objs) -> None:
        batch = []
        for obj in objs:
            batch.append(obj)
            if len(batch) == 5000:
                TaskResult.objects.bulk_create(batch)
                batch = []
        TaskResult.objects.bulk_create(batch)

    # Given expired rows, fresh rows and never-finished rows
    insert(rows("old", expired_count, old, states.SUCCESS))
    insert(rows("fresh", fresh_count, now, states.SUCCESS))
    insert(rows("running", 10, None, states.STARTED))
    GroupResult.objects.create(group_id="old-group", result_ids=["a"])
    GroupResult.objects.update(date_created=old)
    ChordCounter.objects.create(group_id="done-chord", remaining=0, total=1, body={})
    ChordCounter.objects.create(group_id="open-chord", remaining=1, total=1, body={})
    ChordCounter.objects.update(date_created=old)

    # When cleanup runs with the default expiry (one day)
    with tasks_q(RESULT_BACKEND="django-db", RESULT_EXPIRES=86400):
        tracemalloc.start()
        try:
            deleted = cleanup_results(chunk_size=1000)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    # Then every expired row is gone, everything else stays, and memory stayed flat
    assert deleted == expired_count + 2
    assert TaskResult.objects.count() == fresh_count + 10
    assert not TaskResult.objects.filter(task_id__startswith="old-").exists()
    assert not GroupResult.objects.exists()
    assert list(ChordCounter.objects.values_list("group_id", flat=True)) == ["open-chord"]
    assert peak < 20 * 1024 * 1024, f"peak traced memory {peak / 1e6:.1f} MB"
