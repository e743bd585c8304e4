"""``runworker``'s command line: flags into ``Worker`` arguments, errors, Channels' form."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command, get_commands
from django.core.management.base import CommandError
from django.test import override_settings

from django_tasks_q.management.commands import runworker
from django_tasks_q.messaging.connection import mask_url
from django_tasks_q.worker import Worker, banner


class FakeWorker:
    made: list[dict] = []

    def __init__(self, **kwargs):
        FakeWorker.made.append(kwargs)

    def run(self) -> int:
        return 0


@pytest.fixture
def fake_worker(monkeypatch):
    FakeWorker.made = []
    monkeypatch.setattr(runworker.Command, "worker_class", FakeWorker)
    return FakeWorker.made


def test_our_runworker_wins_when_we_come_before_channels():
    assert get_commands()["runworker"] == "django_tasks_q"


def test_flags_become_worker_arguments(fake_worker):
    call_command(
        "runworker", "-Q", "a,b", "-c", "3", "-P", "threads", "-n", "w@%h", "--prefetch-multiplier", "2",
        "--max-tasks-per-child", "10", "--max-memory-per-child", "200000", "--autoscale", "5,1",
        "--time-limit", "30", "--soft-time-limit", "20", "-l", "info", "-E", "--without-heartbeat",
        "--burst", "--shutdown-timeout", "5", "--purge",
    )  # fmt: skip
    [made] = fake_worker
    assert made["queues"] == ["a", "b"] and made["concurrency"] == 3 and made["pool"] == "threads"
    assert made["hostname"] == "w@%h" and made["prefetch_multiplier"] == 2
    assert made["max_tasks_per_child"] == 10 and made["max_memory_per_child"] == 200000
    assert made["autoscale"] == (5, 1) and made["time_limit"] == 30.0 and made["soft_time_limit"] == 20.0
    assert made["loglevel"] == "INFO" and made["events"] and made["without_heartbeat"]
    assert made["burst"] and made["shutdown_timeout"] == 5.0 and made["purge"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["-c", "0"], "argument -c/--concurrency: must be a whole number >= 1, got '0'"),
        (["-c", "four"], "argument -c/--concurrency: must be a whole number >= 1, got 'four'"),
        (["--prefetch-multiplier", "-1"], "argument --prefetch-multiplier: must be a whole number >= 1"),
        (["--max-tasks-per-child", "0"], "argument --max-tasks-per-child: must be a whole number >= 1"),
        (["--autoscale", "x"], "argument --autoscale: must be MAX,MIN"),
        (["--time-limit", "0"], "argument --time-limit: must be a number of seconds > 0"),
        (["--shutdown-timeout", "-1"], "argument --shutdown-timeout: must be a number of seconds >= 0"),
        (["-l", "loud"], "argument -l/--loglevel: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        (["-Q", "a,,b"], "argument -Q/--queues: must be queue names separated by commas"),
        (["-P", "eventlet"], "argument -P/--pool: invalid choice: 'eventlet'"),
        (["--layer", "x"], "--layer belongs to Channels' form"),
        (["-B"], "-B/--beat: the periodic task scheduler (beat) is not available yet"),
    ],
)
def test_bad_flags_name_the_flag_and_the_valid_form(fake_worker, args, message):
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call_command("runworker", *args)
    assert fake_worker == []


def test_worker_errors_become_command_errors():
    with override_settings(TASKS_Q={"PREFETCH_MULTIPLIER": 4}):
        with pytest.raises(CommandError, match="autoscale must be") as info:
            runworker.Command().handle(
                **{**runworker.WORKER_DEFAULTS, "channels": [], "layer": None, "autoscale": (1, 3)}
            )
    assert info.value.returncode == 2


# -- Channels' form --------------------------------------------------------------------------


class FakeChannelsWorker:
    made: list[dict] = []

    def __init__(self, application, channels, channel_layer):
        FakeChannelsWorker.made.append({"channels": channels, "layer": channel_layer})

    def run(self):
        return None


def test_channels_form_is_handed_to_channels(monkeypatch):
    from channels.management.commands import runworker as channels_runworker

    FakeChannelsWorker.made = []
    monkeypatch.setattr(channels_runworker.Command, "worker_class", FakeChannelsWorker)
    call_command("runworker", "thumbnails", "emails")
    [made] = FakeChannelsWorker.made
    assert made["channels"] == ["thumbnails", "emails"]
    assert made["layer"] is not None


def test_channels_form_fails_as_channels_would_without_a_layer():
    with override_settings(CHANNEL_LAYERS={}):
        with pytest.raises(CommandError, match="You do not have any CHANNEL_LAYERS configured"):
            call_command("runworker", "thumbnails")


def test_channels_form_refuses_worker_flags():
    with pytest.raises(CommandError, match="Channels' form .* these worker flags do not apply to it: --concurrency"):
        call_command("runworker", "thumbnails", "-c", "2")


def test_wrong_app_order_is_warned_by_a_check():
    from django_tasks_q.checks import _check_app_order

    apps = ["django.contrib.contenttypes", "channels", "django_tasks_q"]
    with override_settings(INSTALLED_APPS=apps):
        assert [m.id for m in _check_app_order()] == ["tasks_q.W002"]


# -- banner ----------------------------------------------------------------------------------


def test_banner_masks_passwords_and_lists_the_setup():
    worker = Worker(
        queues=["default", "images"], concurrency=3, broker_url="amqp://user:s3cret@broker:5672//",
        stdout=io.StringIO(), max_tasks_per_child=100,
    )  # fmt: skip
    text = banner.text(worker)
    assert "s3cret" not in text
    assert mask_url("amqp://user:s3cret@broker:5672//") in text
    assert "3 processes (prefork)" in text and "default, images" in text
    assert "max 100 tasks" in text and "wt.pid" in text
