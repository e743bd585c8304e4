"""Revoked ids: persisted with an expiry, read through a per-process cache with bounded queries."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_tasks_q import revocation, states
from django_tasks_q.models import RevokedTask
from django_tasks_q.results import get_store
from tests.control_fakes import subprocess_env

ROOT = Path(__file__).resolve().parents[2]


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def no_broker():
    """revoke() broadcasts too; a memory broker keeps these tests off the network."""
    from django.conf import settings

    config = dict(settings.TASKS_Q, BROKER_URL="memory://", RESULT_BACKEND="django-db")
    with override_settings(TASKS_Q=config):
        yield


def _insert(task_id: str, expires_in: float = 3600, created_ago: float = 0) -> RevokedTask:
    row = RevokedTask.objects.create(
        task_id=task_id, expires=timezone.now() + timedelta(seconds=expires_in)
    )
    if created_ago:
        RevokedTask.objects.filter(pk=row.pk).update(
            date_created=timezone.now() - timedelta(seconds=created_ago)
        )
    return row


@pytest.mark.django_db
def test_revoke_persists_with_the_configured_expiry() -> None:
    from django.conf import settings

    with override_settings(TASKS_Q=dict(settings.TASKS_Q, REVOKES_EXPIRE=120)):
        revocation.revoke("r-1", terminate=True, signal="kill")
    row = RevokedTask.objects.get(task_id="r-1")
    assert (row.terminate, row.signal) == (True, "SIGKILL")
    remaining = (row.expires - timezone.now()).total_seconds()
    assert 110 < remaining <= 120


@pytest.mark.django_db
def test_a_cold_cache_sees_a_revoke_made_elsewhere() -> None:
    revocation.revoke(["r-2", "r-3"])
    cold = revocation.RevokedCache()
    assert cold.is_revoked("r-2") and cold.is_revoked("r-3")
    assert not cold.is_revoked("never-revoked")
    assert {"r-2", "r-3"} <= cold.revoked_ids()


@pytest.mark.django_db
def test_the_module_functions_see_revokes_at_once() -> None:
    revocation.revoke("r-4")
    assert revocation.is_revoked("r-4")
    assert "r-4" in revocation.revoked_ids()
    assert revocation.revoke_entry("r-4").signal == "SIGTERM"
    assert revocation.revoke_entry("other") is None


@pytest.mark.django_db
def test_expired_revokes_are_ignored() -> None:
    _insert("gone", expires_in=-1)
    _insert("live", expires_in=60)
    cold = revocation.RevokedCache()
    assert not cold.is_revoked("gone")
    assert cold.is_revoked("live")


@pytest.mark.django_db
def test_a_cached_revoke_stops_counting_when_it_expires() -> None:
    wall = FakeClock(time.time())
    cache = revocation.RevokedCache(wall_clock=wall)
    revocation.revoke("short", expires=30)
    assert cache.is_revoked("short")
    wall.now += 31
    assert not cache.is_revoked("short")
    assert "short" not in cache.revoked_ids()


@pytest.mark.django_db
def test_hot_path_queries_at_most_once_per_interval() -> None:
    clock = FakeClock()
    cache = revocation.RevokedCache(interval=1.0, clock=clock)
    _insert("hot-1")

    # Given a cold cache, the first call loads the set: one query
    with CaptureQueriesContext(connection) as first:
        for _ in range(10_000):
            assert cache.is_revoked("hot-1")
    assert len(first) == 1

    # Within the interval: no query at all, however many calls
    clock.now += 0.9
    with CaptureQueriesContext(connection) as within:
        for i in range(10_000):
            cache.is_revoked(f"other-{i}")
    assert len(within) == 0

    # After the interval: exactly one query, which finds rows created since
    _insert("hot-2")
    clock.now += 0.2
    with CaptureQueriesContext(connection) as after:
        for _ in range(10_000):
            assert cache.is_revoked("hot-2")
    assert len(after) == 1
    assert "date_created" in after.captured_queries[0]["sql"]


@pytest.mark.django_db
def test_hot_path_with_the_real_clock_stays_under_one_query_per_second() -> None:
    cache = revocation.RevokedCache()
    started = time.monotonic()
    with CaptureQueriesContext(connection) as queries:
        calls = 0
        while time.monotonic() - started < 1.5:
            cache.is_revoked("x")
            calls += 1
    elapsed = time.monotonic() - started
    assert calls > 10_000
    assert len(queries) <= int(elapsed / revocation.REFRESH_INTERVAL) + 1


@pytest.mark.django_db
def test_refresh_reads_rows_committed_late_within_the_overlap() -> None:
    clock = FakeClock()
    cache = revocation.RevokedCache(clock=clock)
    _insert("seen-first")
    assert cache.is_revoked("seen-first")
    # A row whose timestamp is a little older than the newest seen (clock skew, late commit)
    _insert("late", created_ago=3)
    clock.now += 2
    assert cache.is_revoked("late")


@pytest.mark.django_db
def test_revoking_again_after_expiry_is_seen_by_a_warm_cache() -> None:
    clock, wall = FakeClock(), FakeClock(time.time())
    cache = revocation.RevokedCache(clock=clock, wall_clock=wall)
    _insert("again", expires_in=1, created_ago=60)
    _insert("anchor")
    assert cache.is_revoked("again")
    wall.now += 5
    assert not cache.is_revoked("again")

    revocation.persist(["again"], expires=3600)  # refreshes date_created and expires
    clock.now += 2
    assert cache.is_revoked("again")


@pytest.mark.django_db
def test_revoke_stores_revoked_state_unless_the_task_finished() -> None:
    store = get_store()
    store.mark_as_done("finished", 42)

    revocation.revoke(["finished", "pending"])

    assert store.get_task_meta("pending")["status"] == states.REVOKED
    finished = store.get_task_meta("finished")
    assert (finished["status"], finished["result"]) == (states.SUCCESS, 42)


@pytest.mark.django_db
def test_purge_expired_deletes_only_expired_rows() -> None:
    _insert("old-1", expires_in=-10)
    _insert("old-2", expires_in=-1)
    _insert("keep", expires_in=100)
    assert revocation.purge_expired(chunk_size=1) == 2
    assert list(RevokedTask.objects.values_list("task_id", flat=True)) == ["keep"]


@pytest.mark.django_db
def test_a_database_error_keeps_the_known_set(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from django.db import OperationalError

    clock = FakeClock()
    cache = revocation.RevokedCache(clock=clock)
    _insert("known")
    assert cache.is_revoked("known")

    def broken(self):
        raise OperationalError("database is down")

    monkeypatch.setattr(revocation.RevokedCache, "_query", broken)
    clock.now += 2
    assert cache.is_revoked("known")
    assert "Could not refresh revoked task ids" in caplog.text


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, "SIGTERM"),
        ("TERM", "SIGTERM"),
        ("sigkill", "SIGKILL"),
        (9, "SIGKILL"),
        ("2", "SIGINT"),
    ],
)
def test_signal_names_are_normalised(given, expected) -> None:
    assert revocation.normalize_signal(given) == expected


def test_an_unknown_signal_is_refused_with_examples() -> None:
    with pytest.raises(ValueError, match="Unknown signal 'SIGBOGUS'.*SIGTERM"):
        revocation.normalize_signal("SIGBOGUS")


@pytest.mark.parametrize("bad", ["", [], [""], [None], ["ok", 3], "x" * 256])
def test_task_ids_must_be_non_empty_strings(bad) -> None:
    with pytest.raises(ValueError):
        revocation.task_ids_of(bad)


@pytest.mark.django_db
def test_expires_must_be_positive() -> None:
    with pytest.raises(ValueError, match="expires must be seconds"):
        revocation.persist(["x"], expires=-5)


@pytest.mark.django_db(transaction=True)
def test_a_new_process_honours_the_revoke() -> None:
    # Given a revoke stored by this process
    revocation.revoke("cross-process")
    # When another process starts and asks (its cache is cold)
    env = subprocess_env()
    code = (
        "import django; django.setup()\n"
        "from django_tasks_q.revocation import is_revoked\n"
        "print(is_revoked('cross-process'), is_revoked('not-revoked'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    # Then it sees it
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True False"
