"""QUEUES and TASK_ROUTES, read through routing.py."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_tasks_q.routing import QueueSpec, declared_queues, queue_names, route_for


def tq(**options):
    return override_settings(TASKS_Q=options)


def test_default_is_just_the_default_queue():
    with tq():
        assert declared_queues() == [QueueSpec("default")]
    with tq(DEFAULT_QUEUE="main"):
        assert queue_names() == ["main"]


def test_queue_names_and_dicts():
    with tq(QUEUES=["default", {"name": "images", "max_priority": 10}, {"name": "rk", "routing_key": "r.*", "exchange": "ex"}]):
        assert declared_queues() == [
            QueueSpec("default"),
            QueueSpec("images", max_priority=10),
            QueueSpec("rk", exchange="ex", routing_key="r.*"),
        ]


def test_queues_as_a_mapping_of_name_to_options():
    with tq(QUEUES={"images": {"max_priority": 5}, "math": {}}):
        assert queue_names() == ["default", "images", "math"]
        assert declared_queues()[1].max_priority == 5


def test_default_queue_is_always_declared_first_when_missing():
    with tq(QUEUES=["images"]):
        assert queue_names() == ["default", "images"]


@pytest.mark.parametrize(
    "queues, text",
    [
        ("images", "must be a list of names or dicts, got str"),
        ([{"max_priority": 3}], "has no name"),
        ([3], "entries must be names or dicts, got 3"),
    ],
)
def test_bad_queues_are_clear_errors(queues, text):
    with tq(QUEUES=queues):
        with pytest.raises(ImproperlyConfigured, match="QUEUES") as err:
            declared_queues()
    assert text in str(err.value)


def test_no_routes_means_no_routing_options():
    with tq():
        assert route_for("any.task") == {}


@pytest.mark.parametrize(
    "routes, name, expected",
    [
        ({"a.b": "q1"}, "a.b", {"queue": "q1"}),
        ({"a.b": {"queue": "q1", "priority": 3}}, "a.b", {"queue": "q1", "priority": 3}),
        ({"a.*": "q2"}, "a.zzz", {"queue": "q2"}),
        ({"a.[bc]": "q3"}, "a.c", {"queue": "q3"}),
        ({"a.*": "q2"}, "b.a", {}),
        ({"a.b": None}, "a.b", {}),
        ([{"x": "q1"}, lambda n, a, k, o: {"queue": "q4"}], "a.b", {"queue": "q4"}),
    ],
)
def test_route_for(routes, name, expected):
    with tq(TASK_ROUTES=routes):
        assert route_for(name, (), {}, {}) == expected


def test_route_result_is_a_copy():
    with tq(TASK_ROUTES={"a.b": {"queue": "q1"}}):
        route_for("a.b")["queue"] = "changed"
        assert route_for("a.b") == {"queue": "q1"}
