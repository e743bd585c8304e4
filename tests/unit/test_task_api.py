"""The task API: @task forms and options, class-based tasks."""

from __future__ import annotations

import pytest
from django.test import override_settings

from django_tasks_q import Task, states, task
from django_tasks_q.exceptions import (
    DuplicateTaskName,
    ImproperlyConfiguredTask,
)
from django_tasks_q.registry import tasks
from django_tasks_q.task import TASK_OPTIONS, register_task_class

EAGER = override_settings(TASKS_Q={"ALWAYS_EAGER": True})


# -- declaring tasks --------------------------------------------------------------
@task
def plain_add(x, y):
    """Add two numbers."""
    return x + y


@task(name="api.named_mul", queue="math", priority=3)
def named_mul(x, y):
    return x * y


def test_bare_decorator_makes_a_registered_task_named_module_function():
    assert isinstance(plain_add, Task)
    assert plain_add.name == "tests.unit.test_task_api.plain_add"
    assert tasks[plain_add.name] is plain_add
    assert plain_add.__doc__ == "Add two numbers."
    assert plain_add.__name__ == "plain_add"
    assert repr(plain_add) == "<@task: tests.unit.test_task_api.plain_add>"


def test_decorator_with_options_sets_name_and_options():
    assert named_mul.name == "api.named_mul"
    assert tasks["api.named_mul"] is named_mul
    assert (named_mul.queue, named_mul.priority) == ("math", 3)


def test_calling_a_task_runs_it_inline():
    assert plain_add(2, 3) == 5
    assert named_mul(x=4, y=5) == 20


ALL_OPTIONS = {
    "queue": "q",
    "priority": 9,
    "serializer": "json",
    "max_retries": 5,
    "default_retry_delay": 1.5,
    "autoretry_for": (IOError,),
    "dont_autoretry_for": (FileNotFoundError,),
    "retry_kwargs": {"max_retries": 2},
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": False,
    "ignore_result": True,
    "acks_late": False,
    "reject_on_worker_lost": True,
    "track_started": True,
    "time_limit": 30,
    "soft_time_limit": 20,
    "rate_limit": "10/m",
    "expires": 3600,
    "typing": False,
    "store_errors_even_if_ignored": True,
    "routing_key": "rk",
    "acks_on_failure_or_timeout": False,
}


def test_every_documented_option_is_accepted_and_kept():
    assert set(ALL_OPTIONS) == set(TASK_OPTIONS)

    @task(name="api.all_options", **ALL_OPTIONS)
    def f():
        return 1

    for key, value in ALL_OPTIONS.items():
        assert getattr(f, key) == value, key


def test_single_exception_class_for_autoretry_is_made_a_tuple():
    @task(name="api.autoretry_single", autoretry_for=KeyError)
    def f():
        return 1

    assert f.autoretry_for == (KeyError,)


def test_unknown_option_is_refused_at_decoration_with_a_suggestion():
    with pytest.raises(TypeError, match="unknown option 'max_retry'. Did you mean 'max_retries'"):

        @task(max_retry=3)
        def f():
            return 1


@pytest.mark.parametrize(
    "options, text",
    [
        ({"priority": 10}, "priority must be an int 0-9, got 10"),
        ({"priority": "high"}, "priority must be an int 0-9"),
        ({"rate_limit": "fast"}, "rate_limit must look like '10/m'"),
        ({"serializer": "jsn"}, "Unknown serializer 'jsn'"),
        ({"time_limit": -1}, "time_limit must be a non-negative number of seconds"),
        ({"soft_time_limit": "1m"}, "soft_time_limit must be a non-negative number"),
        ({"max_retries": -1}, "max_retries must be a non-negative int or None"),
        (
            {"autoretry_for": (ValueError, "x")},
            "autoretry_for must be a tuple of exception classes",
        ),
        ({"dont_autoretry_for": 3}, "dont_autoretry_for must be a tuple of exception classes"),
    ],
)
def test_bad_option_values_are_refused_at_decoration_naming_the_task(options, text):
    with pytest.raises(ImproperlyConfiguredTask) as err:

        @task(name="api.bad_option", **options)
        def f():
            return 1

    assert "'api.bad_option'" in str(err.value)
    assert text in str(err.value)
    assert "api.bad_option" not in tasks


def test_base_must_be_a_task_subclass():
    with pytest.raises(TypeError, match="must be a Task subclass"):
        task(base=dict)


def test_decorating_a_non_callable_is_refused():
    with pytest.raises(TypeError, match="decorates functions"):
        task()(42)


def test_duplicate_name_from_a_different_function_is_an_error():
    @task(name="api.dup")
    def first():
        return 1

    with pytest.raises(DuplicateTaskName) as err:

        @task(name="api.dup")
        def second():
            return 2

    text = str(err.value)
    assert "'api.dup'" in text and "first" in text and "second" in text and "name=" in text
    assert tasks["api.dup"] is first


def test_redefining_the_same_function_reregisters_it():
    # What re-importing a module (autoreload, tests) does: no error.
    def make():
        @task(name="api.same_origin")
        def same():
            return 1

        return same

    a, b = make(), make()
    assert tasks["api.same_origin"] is b and a is not b


# -- class-based tasks -------------------------------------------------------------
class CountingInit(Task):
    inits = 0
    events: list = []

    def __init__(self):
        type(self).inits += 1
        self.resource = object()

    def before_start(self, task_id, args, kwargs):
        self.events.append(("before_start", args))

    def on_success(self, retval, task_id, args, kwargs):
        self.events.append(("on_success", retval))

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        self.events.append(("on_failure", type(exc).__name__, "Traceback" in str(einfo)))

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        self.events.append(("after_return", status))


@task(base=CountingInit, name="api.with_base")
def with_base(x):
    if x < 0:
        raise ValueError("negative")
    return x * 2


def test_base_class_init_runs_once_per_process():
    assert CountingInit.inits == 1
    resource = with_base.resource
    with_base(1)
    with_base.apply((2,))
    assert CountingInit.inits == 1
    assert with_base.resource is resource


def test_hooks_run_in_order_on_success_and_failure():
    CountingInit.events.clear()
    result = with_base.apply((3,))
    assert result.get() == 6
    assert CountingInit.events == [
        ("before_start", [3]),
        ("on_success", 6),
        ("after_return", states.SUCCESS),
    ]
    CountingInit.events.clear()
    result = with_base.apply((-1,))
    assert result.state == states.FAILURE
    assert CountingInit.events == [
        ("before_start", [-1]),
        ("on_failure", "ValueError", True),
        ("after_return", states.FAILURE),
    ]


class Shout(Task):
    name = "api.shout"

    def run(self, text):
        return text.upper()


def test_class_with_run_is_registered_by_its_name():
    shout = register_task_class(Shout)
    assert tasks["api.shout"] is shout
    assert shout("hi") == "HI"
    assert shout.apply(("hey",)).get() == "HEY"


def test_class_without_run_says_so():
    class NoRun(Task):
        name = "api.norun"

    t = register_task_class(NoRun)
    with pytest.raises(NotImplementedError, match="NoRun must define run"):
        t()


def test_class_options_are_defaults_and_decorator_options_override_them():
    class Slow(Task):
        max_retries = 9
        queue = "slow"

    @task(base=Slow, name="api.slow", queue="fast")
    def f():
        return 1

    assert (f.max_retries, f.queue) == (9, "fast")


def test_retry_defaults_come_from_settings_when_not_set_on_the_task():
    @task(name="api.retry_defaults")
    def f():
        return 1

    assert (f.max_retries, f.default_retry_delay) == (3, 180)
    with override_settings(TASKS_Q={"MAX_RETRIES": 7, "DEFAULT_RETRY_DELAY": 5}):
        assert (f.max_retries, f.default_retry_delay) == (7, 5)
        assert (named_retries.max_retries, named_retries.default_retry_delay) == (1, 2)


@task(name="api.named_retries", max_retries=1, default_retry_delay=2)
def named_retries():
    return 1
