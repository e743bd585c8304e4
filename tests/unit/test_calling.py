"""apply_async/delay/send_task: what ends up in the published message.

Messages are published to kombu's ``memory://`` broker and read back raw, so
these tests see exactly what a worker (ours or Celery's) would receive.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.test import override_settings
from kombu.transport import memory

from django_tasks_q import AsyncResult, Signature, _state, app, signals, task
from django_tasks_q.exceptions import MessageTooLarge, PublishError
from django_tasks_q.message import Message
from django_tasks_q.messaging.connection import broker_connection
from django_tasks_q.request import Request
from django_tasks_q.serialization import accepted_types


@task(name="calling.add")
def add(x, y):
    return x + y


@task(name="calling.defaults", queue="images", priority=4, expires=60, time_limit=30, soft_time_limit=20)
def with_defaults():
    return None


@task(name="calling.quiet", ignore_result=True)
def quiet():
    return None


class Broker:
    """Reads raw messages back from the in-memory broker."""

    def __init__(self) -> None:
        self.conn = broker_connection("memory://")

    def raw(self, queue: str = "default"):
        message = self.conn.default_channel.basic_get(queue, no_ack=True)
        assert message is not None, f"no message in queue {queue!r}"
        return message

    def get(self, queue: str = "default") -> Message:
        m = self.raw(queue)
        return Message.decode(
            m.body, m.content_type, m.content_encoding, m.headers, m.properties,
            accepted_types(["json", "msgpack"]),
        )  # fmt: skip

    def empty(self, queue: str) -> bool:
        return self.conn.default_channel.basic_get(queue, no_ack=True) is None

    def close(self) -> None:
        self.conn.release()


def memory_settings(**extra):
    return override_settings(
        TASKS_Q={"BROKER_URL": "memory://", "QUEUES": ["default", "images", "math"], **extra}
    )


@pytest.fixture
def broker():
    memory.Channel.queues.clear()
    with memory_settings():
        b = Broker()
        yield b
        b.close()
    memory.Channel.queues.clear()


def close_to(when: datetime, expected: datetime, seconds: float = 5) -> bool:
    return abs((when - expected).total_seconds()) < seconds


# -- the basic message ----------------------------------------------------------
def test_delay_publishes_a_protocol_v2_message_to_the_default_queue(broker):
    result = add.delay(2, 3)
    assert isinstance(result, AsyncResult)
    raw = broker.raw("default")
    assert raw.content_type == "application/json"
    assert json.loads(raw.body) == [[2, 3], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    assert raw.headers["task"] == "calling.add"
    assert raw.headers["id"] == result.id
    assert raw.headers["root_id"] == result.id
    assert raw.headers["parent_id"] is None
    assert raw.headers["lang"] == "py"
    assert raw.headers["origin"].startswith("gen")
    assert raw.properties["correlation_id"] == result.id
    assert raw.delivery_info["routing_key"] == "default"


def test_apply_async_passes_args_and_kwargs_untouched(broker):
    add.apply_async((1,), {"y": {"nested": [1, None, "x"]}})
    m = broker.get()
    assert m.args == [1] and m.kwargs == {"y": {"nested": [1, None, "x"]}}


def test_task_id_option_is_the_message_id(broker):
    result = add.apply_async((1, 2), task_id="my-id")
    assert result.id == "my-id"
    assert broker.get().id == "my-id"


# -- time options ----------------------------------------------------------------
def test_countdown_sets_the_eta_header(broker):
    add.apply_async((1, 2), countdown=30)
    m = broker.get()
    assert close_to(m.eta, datetime.now(UTC) + timedelta(seconds=30))


def test_eta_is_sent_as_iso_utc_and_naive_eta_is_taken_as_utc(broker):
    when = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    add.apply_async((1, 2), eta=when)
    assert broker.raw().headers["eta"] == "2031-05-06T07:08:09+00:00"
    add.apply_async((1, 2), eta=datetime(2031, 5, 6, 7, 8, 9))
    assert broker.get().eta == when


def test_expires_in_seconds_datetime_or_timedelta(broker):
    add.apply_async((1, 2), expires=120)
    assert close_to(broker.get().expires, datetime.now(UTC) + timedelta(seconds=120))
    at = datetime(2032, 1, 1, tzinfo=UTC)
    add.apply_async((1, 2), expires=at)
    assert broker.get().expires == at
    add.apply_async((1, 2), expires=timedelta(minutes=5))
    assert close_to(broker.get().expires, datetime.now(UTC) + timedelta(minutes=5))


def test_no_eta_or_expires_unless_asked(broker):
    add.delay(1, 2)
    raw = broker.raw()
    assert raw.headers["eta"] is None and raw.headers["expires"] is None


# -- other options ---------------------------------------------------------------
def test_options_end_up_in_headers_and_embed(broker):
    add.apply_async(
        (1, 2),
        headers={"tenant": "acme"},
        link=add.s(10),
        link_error=Signature("calling.on_error"),
        shadow="add-as-shadow",
        ignore_result=True,
        time_limit=9,
        soft_time_limit=5,
        group_id="g1",
        group_index=2,
        parent_id="p1",
        root_id="r1",
        argsrepr="(secret)",
        kwargsrepr="{}",
    )
    raw = broker.raw()
    h = raw.headers
    assert h["tenant"] == "acme"
    assert h["shadow"] == "add-as-shadow"
    assert h["ignore_result"] is True
    assert h["timelimit"] == [9, 5]  # [hard, soft], as Celery sends it
    assert (h["group"], h["group_index"], h["parent_id"], h["root_id"]) == ("g1", 2, "p1", "r1")
    assert (h["argsrepr"], h["kwargsrepr"]) == ("(secret)", "{}")
    _, _, embed = json.loads(raw.body)
    assert embed["callbacks"][0]["task"] == "calling.add"
    assert embed["callbacks"][0]["args"] == [10]
    assert embed["errbacks"][0]["task"] == "calling.on_error"


def test_task_defaults_apply_and_call_options_override_them(broker):
    with_defaults.delay()
    raw = broker.raw("images")
    assert raw.properties["priority"] == 4
    assert raw.headers["timelimit"] == [30, 20]
    assert close_to(Message.from_parts(raw.headers, {}, [[], {}, {}]).expires, datetime.now(UTC) + timedelta(seconds=60))
    with_defaults.apply_async(queue="math", priority=1, time_limit=3)
    raw = broker.raw("math")
    assert raw.properties["priority"] == 1
    assert raw.headers["timelimit"] == [3, 20]


def test_ignore_result_task_option_is_in_the_header(broker):
    quiet.delay()
    assert broker.raw().headers["ignore_result"] is True
    add.delay(1, 2)
    assert broker.raw().headers["ignore_result"] is False


@pytest.mark.parametrize("priority", [0, 9])
def test_priority_in_range_is_a_message_property(broker, priority):
    add.apply_async((1, 2), priority=priority)
    assert broker.raw().properties["priority"] == priority


@pytest.mark.parametrize("priority", [10, -1, "high", 1.5])
def test_priority_out_of_range_is_refused_naming_the_task(broker, priority):
    with pytest.raises(ValueError, match="priority for task 'calling.add' must be an int from 0 to 9"):
        add.apply_async((1, 2), priority=priority)
    assert broker.empty("default")


def test_default_priority_setting_applies():
    memory.Channel.queues.clear()
    with memory_settings(DEFAULT_PRIORITY=6):
        b = Broker()
        add.delay(1, 2)
        assert b.raw().properties["priority"] == 6
        b.close()


def test_serializer_option_changes_the_content_type(broker):
    add.apply_async((1, 2), serializer="msgpack")
    raw = broker.raw()
    assert raw.content_type == "application/x-msgpack"


def test_message_over_the_size_cap_is_refused_before_publishing():
    memory.Channel.queues.clear()
    with memory_settings(MESSAGE_MAX_SIZE=200):
        b = Broker()
        with pytest.raises(MessageTooLarge, match="'calling.add'"):
            add.delay("x" * 500, 1)
        assert b.empty("default")
        b.close()


def test_task_sent_signal_fires_with_the_message(broker):
    seen = []

    def receiver(sender, task_id, message, queue, **kwargs):
        seen.append((sender, task_id, message.args, queue))

    signals.task_sent.connect(receiver)
    try:
        r = add.delay(4, 5)
    finally:
        signals.task_sent.disconnect(receiver)
    assert seen == [("calling.add", r.id, [4, 5], "default")]


def test_unreachable_broker_raises_publish_error_without_the_password():
    with override_settings(
        TASKS_Q={"BROKER_URL": "redis://user:s3cret@127.0.0.1:1/0", "PUBLISH_RETRY": False,
                 "BROKER_CONNECTION_TIMEOUT": 1}
    ):  # fmt: skip
        with pytest.raises(PublishError) as err:
            add.delay(1, 2)
    text = str(err.value)
    assert "calling.add" in text and "s3cret" not in text and "127.0.0.1:1" in text


# -- lineage ---------------------------------------------------------------------------
def test_a_task_sent_from_inside_a_task_records_parent_and_root(broker):
    running = Request(id="parent-id", task="calling.add", root_id="root-id", called_directly=False)
    token = _state.current_request.set(running)
    try:
        child = add.delay(1, 1)
    finally:
        _state.current_request.reset(token)
    m = broker.get()
    assert (m.parent_id, m.root_id) == ("parent-id", "root-id")
    assert running.children == [child]


def test_inline_call_does_not_make_children_parents(broker):
    @task(name="calling.spawner")
    def spawner():
        return add.delay(1, 1).id

    child_id = spawner()
    m = broker.get()
    assert m.id == child_id
    assert m.parent_id is None and m.root_id == child_id


# -- routing ------------------------------------------------------------------------------
def route_name(name, args, kwargs, options):
    return {"queue": "math"} if name.endswith(".add") else None


@pytest.mark.parametrize(
    "routes, queue",
    [
        ({"calling.add": {"queue": "math"}}, "math"),
        ({"calling.add": "math"}, "math"),
        ({"calling.*": {"queue": "images"}}, "images"),
        ({"other.*": "images", "calling.a?d": "math"}, "math"),
        (lambda name, args, kwargs, options: "images", "images"),
        ([{"nothing": "images"}, {"calling.add": "math"}], "math"),
        ("tests.unit.test_calling.route_name", "math"),
        ({"unrelated": "images"}, "default"),
    ],
)
def test_routes_pick_the_queue(routes, queue):
    memory.Channel.queues.clear()
    with memory_settings(TASK_ROUTES=routes):
        b = Broker()
        add.delay(1, 2)
        assert b.get(queue).task == "calling.add"
        b.close()


def test_exact_route_wins_over_a_glob_and_explicit_queue_wins_over_routes():
    memory.Channel.queues.clear()
    with memory_settings(TASK_ROUTES={"calling.*": "images", "calling.add": "math"}):
        b = Broker()
        add.delay(1, 2)
        assert b.get("math").task == "calling.add"
        add.apply_async((1, 2), queue="default")
        assert b.get("default").task == "calling.add"
        b.close()


def test_route_can_set_priority_and_routing_key():
    memory.Channel.queues.clear()
    with memory_settings(TASK_ROUTES={"calling.add": {"queue": "math", "priority": 7}}):
        b = Broker()
        add.delay(1, 2)
        assert b.raw("math").properties["priority"] == 7
        b.close()


def test_router_callable_gets_name_args_kwargs_and_options():
    seen = []

    def router(name, args, kwargs, options):
        seen.append((name, list(args), dict(kwargs)))
        return None

    memory.Channel.queues.clear()
    with memory_settings(TASK_ROUTES=router):
        b = Broker()
        add.apply_async((1,), {"y": 2})
        b.close()
    assert seen == [("calling.add", [1], {"y": 2})]


@pytest.mark.parametrize("routes", [42, {"calling.add": 3}])
def test_bad_routes_are_a_clear_configuration_error(routes):
    from django.core.exceptions import ImproperlyConfigured

    with memory_settings(TASK_ROUTES=routes):
        with pytest.raises(ImproperlyConfigured, match="TASK_ROUTES"):
            add.delay(1, 2)


# -- send_task and the app facade -----------------------------------------------------------
def test_send_task_by_name_needs_no_local_function(broker):
    result = app.send_task("remote.only.task", args=[1, 2], kwargs={"k": "v"}, countdown=5)
    m = broker.get()
    assert (m.task, m.id, m.args, m.kwargs) == ("remote.only.task", result.id, [1, 2], {"k": "v"})
    assert m.eta is not None
    assert result.id and isinstance(result, AsyncResult)


def test_send_task_uses_a_known_tasks_defaults(broker):
    from django_tasks_q.calling import send_task

    send_task("calling.defaults")
    assert broker.raw("images").headers["task"] == "calling.defaults"


def test_send_task_in_eager_mode_runs_a_known_task():
    with override_settings(TASKS_Q={"ALWAYS_EAGER": True}):
        assert app.send_task("calling.add", args=[2, 2]).get() == 4


def test_app_facade_has_celerys_shape(broker):
    assert "calling.add" in app.tasks
    assert app.tasks["calling.add"] is add
    assert app.AsyncResult("some-id").id == "some-id"
    assert app.conf.BROKER_URL == "memory://"
    sig = app.signature("calling.add", args=(1, 2))
    assert (sig.task, sig.args) == ("calling.add", [1, 2])

    @app.task(name="calling.via_app")
    def via_app():
        return "ok"

    assert app.tasks["calling.via_app"] is via_app
    assert via_app() == "ok"
    via_app.delay()
    assert broker.get().task == "calling.via_app"


def test_signature_delay_publishes_with_its_options(broker):
    add.s(1, 2).set(queue="math", countdown=10).delay()
    m = broker.get("math")
    assert m.args == [1, 2] and m.eta is not None
