"""System checks: each id fires for its bad input, and a good configuration is quiet."""

from __future__ import annotations

from unittest import mock

import pytest
from django.conf import settings as django_settings
from django.core.checks import Error, Warning, run_checks
from django.test import override_settings


def run(**tasks_q):
    with override_settings(TASKS_Q=tasks_q):
        return run_checks(tags=["tasks_q"])


def ids(messages) -> list[str]:
    return [m.id for m in messages]


def test_default_configuration_has_no_issue():
    assert run() == []


def test_unknown_key_is_e000_and_names_the_key():
    [msg] = run(BROKER_URLS="django://")
    assert msg.id == "tasks_q.E000"
    assert isinstance(msg, Error)
    assert "'BROKER_URLS'" in msg.msg and "BROKER_URL" in msg.msg


@pytest.mark.parametrize(
    "url",
    [
        "localhost:6379",  # not a URL
        "redis://host:notaport/0",  # port does not parse
        "redis://:secret@host:99999/0",  # port out of range
        "amqp://[::1",  # broken IPv6 literal
        "kafka://localhost:9092",  # no transport for the scheme
        None,
    ],
)
def test_broker_url_that_does_not_parse_is_e001(url):
    messages = run(BROKER_URL=url)
    assert ids(messages) == ["tasks_q.E001"]
    assert "BROKER_URL" in messages[0].msg or "scheme" in messages[0].msg


def test_e001_never_shows_the_password():
    [msg] = run(BROKER_URL="redis://user:hunter2@host:99999/0")
    assert "hunter2" not in msg.msg
    assert "**" in msg.msg


@pytest.mark.parametrize(
    "url", ["django://", "redis://127.0.0.1:6379/0", "amqp://guest:guest@localhost//", "memory://"]
)
def test_supported_broker_urls_pass(url):
    assert run(BROKER_URL=url) == []


@pytest.mark.parametrize(
    "backend, text",
    [
        ("mongodb://localhost", "is not a known result store"),
        ("cache://nope", "cache alias 'nope', which is not in CACHES"),
        ("cache://default", "needs django-redis"),  # default is LocMemCache in the test project
    ],
)
def test_unknown_or_unusable_result_backend_is_e002(backend, text):
    [msg] = run(RESULT_BACKEND=backend)
    assert msg.id == "tasks_q.E002"
    assert text in msg.msg


@pytest.mark.parametrize(
    "backend", ["django-db", "redis://127.0.0.1:6379/1", "cache://redis", "memory://"]
)
def test_known_result_backends_pass(backend):
    assert run(RESULT_BACKEND=backend) == []


@pytest.mark.parametrize("accept", [[], "json", None])
def test_accept_content_must_be_a_non_empty_list_e003(accept):
    [msg] = run(ACCEPT_CONTENT=accept)
    assert msg.id == "tasks_q.E003"
    assert "non-empty list" in msg.msg


def test_unknown_serializer_name_is_e003_naming_it():
    messages = run(ACCEPT_CONTENT=["json", "jsonn"])
    assert ids(messages) == ["tasks_q.E003"]
    assert "'jsonn'" in messages[0].msg


def test_non_string_serializer_is_e003():
    messages = run(ACCEPT_CONTENT=["json", 7])
    assert ids(messages) == ["tasks_q.E003"]


def test_accepting_pickle_is_warning_w001():
    messages = run(ACCEPT_CONTENT=["json", "pickle"])
    assert ids(messages) == ["tasks_q.W001"]
    assert isinstance(messages[0], Warning)
    assert "pickle" in messages[0].msg


def test_task_serializer_not_accepted_is_e004():
    messages = run(TASK_SERIALIZER="msgpack")
    assert ids(messages) == ["tasks_q.E004"]
    assert "'msgpack' is not in ACCEPT_CONTENT" in messages[0].msg


def test_task_serializer_accepted_passes():
    assert run(TASK_SERIALIZER="msgpack", ACCEPT_CONTENT=["json", "msgpack"]) == []


def test_channels_before_us_is_w002():
    apps = list(django_settings.INSTALLED_APPS)
    apps.remove("channels")
    apps.insert(apps.index("django_tasks_q"), "channels")
    with mock.patch.object(django_settings, "INSTALLED_APPS", apps):
        messages = run_checks(tags=["tasks_q"])
    assert ids(messages) == ["tasks_q.W002"]
    assert "runworker" in messages[0].msg


def test_channels_after_us_passes():
    assert django_settings.INSTALLED_APPS.index("django_tasks_q") < (
        django_settings.INSTALLED_APPS.index("channels")
    )
    assert "tasks_q.W002" not in ids(run_checks(tags=["tasks_q"]))


@pytest.mark.parametrize(
    "key, value",
    [
        ("MAX_DELIVERIES", 0),
        ("PREFETCH_MULTIPLIER", "4"),
        ("MESSAGE_MAX_SIZE", -1),
        ("POLL_INTERVAL", 0),
        ("ETA_HORIZON", "soon"),
        ("HEARTBEAT_INTERVAL", -5),
    ],
)
def test_bad_numbers_are_e005_naming_the_key(key, value):
    messages = run(**{key: value})
    assert "tasks_q.E005" in ids(messages)
    assert any(key in m.msg for m in messages)


def test_non_number_heartbeat_timeout_is_reported_not_a_crash():
    messages = run(HEARTBEAT_TIMEOUT="x")
    assert ids(messages) == ["tasks_q.E005"]


def test_heartbeat_timeout_not_above_interval_is_e006():
    messages = run(HEARTBEAT_INTERVAL=10, HEARTBEAT_TIMEOUT=10)
    assert ids(messages) == ["tasks_q.E006"]


def test_heartbeat_timeout_under_twice_interval_is_e006():
    messages = run(HEARTBEAT_INTERVAL=10, HEARTBEAT_TIMEOUT=19)
    assert ids(messages) == ["tasks_q.E006"]
    assert run(HEARTBEAT_INTERVAL=10, HEARTBEAT_TIMEOUT=20) == []
