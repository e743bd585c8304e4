"""Choosing a store, and the write rules every store shares (on the in-memory store)."""

from __future__ import annotations

import types

import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_tasks_q import states
from django_tasks_q.exceptions import EncodeError
from django_tasks_q.results import StoreItem, build_store, get_store
from django_tasks_q.results import cache as cache_module
from django_tasks_q.results.cache import CacheStore, RedisStore
from django_tasks_q.results.database import DatabaseStore
from django_tasks_q.results.memory import MemoryStore


def tasks_q(**overrides):
    return override_settings(TASKS_Q={**django_settings.TASKS_Q, **overrides})


def request(**attrs):
    base = {"task": "demo.add", "args": [1], "kwargs": {}, "hostname": "w1", "retries": 0}
    return types.SimpleNamespace(**{**base, **attrs})


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


# -- choosing the store -----------------------------------------------------------------


def test_get_store_is_built_once_and_rebuilt_when_settings_change() -> None:
    with tasks_q(RESULT_BACKEND="memory://"):
        first = get_store()
        assert isinstance(first, MemoryStore) and get_store() is first
        with tasks_q(RESULT_BACKEND="django-db"):
            assert isinstance(get_store(), DatabaseStore)
        assert get_store() is not first


@pytest.mark.parametrize(
    ("url", "cls"),
    [
        ("django-db", DatabaseStore),
        ("memory://", MemoryStore),
        ("redis://127.0.0.1:6379/0", RedisStore),
        ("rediss://h:6380/1", RedisStore),
        ("cache://redis", CacheStore),
    ],
)
def test_build_store_by_url(url, cls) -> None:
    assert type(build_store(url)) is cls


def test_unknown_backend_names_the_choices_and_hides_passwords() -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        build_store("mongodb://user:s3cret@host/db")
    message = str(info.value)
    assert "s3cret" not in message
    assert "django-db" in message and "cache://" in message and "redis://" in message


def test_cache_alias_that_does_not_exist_is_named_with_the_fix() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"no alias 'nope'.*django_redis"):
        build_store("cache://nope")


def test_cache_alias_that_is_not_django_redis_is_refused() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"LocMemCache.*not a django-redis cache"):
        build_store("cache://default")


def test_non_json_result_serializer_is_refused() -> None:
    with tasks_q(RESULT_SERIALIZER="pickle"):
        with pytest.raises(ImproperlyConfigured, match="RESULT_SERIALIZER"):
            build_store("django-db")
        with pytest.raises(ImproperlyConfigured, match="RESULT_SERIALIZER"):
            build_store("redis://127.0.0.1:6379/0")


def test_redis_client_is_rebuilt_after_fork(monkeypatch) -> None:
    store = RedisStore("redis://127.0.0.1:6379/0")
    client = store.client
    assert store.client is client

    monkeypatch.setattr(cache_module.os, "getpid", lambda: -1)

    assert store.client is not client


# -- write rules ------------------------------------------------------------------------


def test_unserialisable_result_becomes_a_failure_naming_the_task(store) -> None:
    store.mark_as_done("t", object(), request=request())

    meta = store.get_task_meta("t")
    assert meta["status"] == states.FAILURE
    assert meta["result"]["exc_type"] == "EncodeError"
    assert "demo.add[t]" in meta["result"]["exc_message"][0]
    assert "EncodeError" in meta["traceback"]


def test_update_state_with_unserialisable_meta_raises_to_the_task(store) -> None:
    with pytest.raises(EncodeError, match="PROGRESS"):
        store.update_state("t", "PROGRESS", {"x": object()})
    assert store.get_task_meta("t")["status"] == states.PENDING


def test_large_args_are_replaced_by_a_truncated_repr(store) -> None:
    with tasks_q(RESULT_ARGS_MAX_SIZE=64):
        store.mark_as_done("t", 1, request=request(args=["x" * 1000], kwargs={"k": 1}))

    meta = store.get_task_meta("t")
    assert isinstance(meta["args"], str) and len(meta["args"]) <= 64
    assert meta["kwargs"] == {"k": 1}


def test_result_extended_off_keeps_args_out(store) -> None:
    with tasks_q(RESULT_EXTENDED=False):
        store.mark_as_done("t", 1, request=request())

    meta = store.get_task_meta("t")
    assert meta["args"] is None and meta["name"] == "demo.add"


def test_ignore_result_skips_success_but_keeps_failures(store) -> None:
    req = request(ignore_result=True)
    store.mark_as_started("a", request=req)
    store.mark_as_done("a", 1, request=req)
    store.mark_as_failure("b", ValueError("x"), request=req)

    assert store.get_task_meta("a")["status"] == states.PENDING
    assert store.get_task_meta("b")["status"] == states.FAILURE


def test_ready_state_is_never_downgraded(store) -> None:
    store.mark_as_done("t", 42, request=request())
    store.mark_as_started("t", request=request(hostname="late"))
    store.update_state("t", "PROGRESS", {"p": 1})
    store.mark_as_retry("t", ValueError("late"))

    meta = store.get_task_meta("t")
    assert (meta["status"], meta["result"], meta["worker"]) == (states.SUCCESS, 42, "w1")


def test_writes_without_a_request_keep_what_is_known(store) -> None:
    store.mark_as_started("t", request=request(periodic_task_name="nightly", group="g1"))
    store.mark_as_revoked("t", reason="admin")

    meta = store.get_task_meta("t")
    assert meta["status"] == states.REVOKED
    assert (meta["name"], meta["args"], meta["group_id"], meta["periodic_task_name"]) == (
        "demo.add",
        [1],
        "g1",
        "nightly",
    )
    assert meta["date_started"] is not None and meta["date_done"] is not None


def test_progress_meta_survives_success(store) -> None:
    store.update_state("t", "PROGRESS", {"done": 10})
    store.mark_as_done("t", "ok")

    meta = store.get_task_meta("t")
    assert (meta["result"], meta["meta"]) == ("ok", {"done": 10})


def test_store_many_merges_writes_for_one_task(store) -> None:
    store.store_many(
        [
            StoreItem("a", {"pid": 1}, states.STARTED, request=request()),
            StoreItem("b", 2, states.SUCCESS),
            StoreItem("a", 1, states.SUCCESS),
            StoreItem("a", None, states.STARTED),
        ]
    )

    a, b = store.get_task_meta("a"), store.get_task_meta("b")
    assert (a["status"], a["result"], a["name"]) == (states.SUCCESS, 1, "demo.add")
    assert a["date_started"] is not None
    assert (b["status"], b["result"]) == (states.SUCCESS, 2)


def test_chord_counter_fires_once(store) -> None:
    store.chord_init("g", 3, {"task": "demo.sum"}, ["a", "b", "c"])

    fired = [store.chord_part_done("g") for _ in range(4)]

    assert fired[:2] == [None, None] and fired[3] is None
    assert fired[2].body == {"task": "demo.sum"} and fired[2].result_ids == ["a", "b", "c"]
    assert store.chord_part_done("unknown") is None
