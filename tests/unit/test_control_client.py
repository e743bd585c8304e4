"""The control client: argument checks happen before anything is sent, names match Celery's."""

from __future__ import annotations

import pytest

from django_tasks_q import app
from django_tasks_q.control import (
    Control,
    control,
    destinations,
    flatten_replies,
    new_mailbox,
    reply_queue,
)


class Sent(Exception):
    """Raised by the fake broadcast: the command would have been sent."""


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> Control:
    client = Control()

    def broadcast(*args, **kwargs):
        raise Sent(args, kwargs)

    monkeypatch.setattr(client, "broadcast", broadcast)
    return client


def test_app_control_is_the_control_client() -> None:
    assert app.control is control


def test_module_level_shortcuts_exist() -> None:
    from django_tasks_q import control as module

    assert module.revoke == control.revoke
    assert module.inspect == control.inspect


def test_mailbox_names_match_celery() -> None:
    mailbox = new_mailbox()
    assert mailbox.exchange.name == "celery.pidbox"
    assert mailbox.exchange.type == "fanout"
    assert mailbox.reply_exchange.name == "reply.celery.pidbox"
    assert mailbox.get_queue("w1@host").name == "w1@host.celery.pidbox"
    assert reply_queue(mailbox, "oid").name == "oid.reply.celery.pidbox"
    assert reply_queue(mailbox, "oid").routing_key == "oid"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, None),
        ("", None),
        ("a@h", ["a@h"]),
        ("a@h, b@h", ["a@h", "b@h"]),
        (["a@h", " "], ["a@h"]),
        ((), None),
    ],
)
def test_destinations(given, expected) -> None:
    assert destinations(given) == expected


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.rate_limit("demo.add", "fast"), "rate_limit must look like"),
        (lambda c: c.rate_limit("", "1/s"), "task_name must be"),
        (lambda c: c.time_limit("demo.add", soft=10, hard=5), "must not exceed the hard one"),
        (lambda c: c.time_limit("demo.add", soft=-1), "soft must be a number of seconds > 0"),
        (lambda c: c.pool_grow(0), "n must be a whole number >= 1"),
        (lambda c: c.pool_shrink(True), "n must be a whole number >= 1"),
        (lambda c: c.add_consumer(""), "queue name must be a non-empty string"),
        (lambda c: c.cancel_consumer(None), "queue name must be a non-empty string"),
    ],
)
def test_bad_arguments_are_refused_before_sending(offline: Control, call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(offline)


def test_good_arguments_are_sent_with_celerys_names(offline: Control) -> None:
    with pytest.raises(Sent) as info:
        offline.rate_limit("demo.add", "10/m", destination="w1@h")
    args, kwargs = info.value.args
    assert args == ("rate_limit", {"task_name": "demo.add", "rate_limit": "10/m"})
    assert kwargs == {"destination": "w1@h"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"command": ""}, "command must be a non-empty string"),
        ({"command": "ping", "arguments": [1]}, "arguments must be a dict"),
        ({"command": "ping", "timeout": 0}, "timeout must be a number of seconds > 0"),
    ],
)
def test_broadcast_checks_its_arguments(kwargs, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Control().broadcast(**kwargs)


def test_flatten_replies_merges_and_warns_on_duplicate_names() -> None:
    assert flatten_replies(None) == {}
    assert flatten_replies([{"a": 1}, {"b": 2}]) == {"a": 1, "b": 2}
    with pytest.warns(RuntimeWarning, match="Two workers answered as 'a'"):
        flatten_replies([{"a": 1}, {"a": 2}])
