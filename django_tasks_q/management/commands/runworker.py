"""``manage.py runworker``: parse Celery's worker flags, build a ``Worker``, run it.

Channels ships a ``runworker`` too. Ours wins when ``django_tasks_q`` comes
before ``channels`` in INSTALLED_APPS, and a call in Channels' form
(``runworker <channel> [<channel>...] [--layer NAME]``) is handed to Channels'
command unchanged.
"""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ...worker import Worker, embedbeat
from ...worker.config import POOLS
from ...worker.logs import LEVELS, parse_level
from ...worker.pidfile import PidfileError


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {value!r}")
    return number


def positive_seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {value!r}")
    return number


def seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number >= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {value!r}")
    return number


def queue_list(value: str) -> list[str]:
    names = [q.strip() for q in value.split(",")]
    if not names or not all(names):
        raise argparse.ArgumentTypeError(
            f"must be queue names separated by commas (e.g. -Q default,images), got {value!r}"
        )
    return names


def autoscale(value: str) -> tuple[int, int]:
    parts = value.split(",")
    try:
        high, low = (int(parts[0]), int(parts[1]) if len(parts) > 1 else 0)
    except (ValueError, IndexError):
        high, low = -1, -1
    if len(parts) > 2 or high < 1 or low < 0 or low > high:
        raise argparse.ArgumentTypeError(
            f"must be MAX,MIN with MAX >= MIN >= 0 and MAX >= 1 (e.g. --autoscale 10,2), got {value!r}"
        )
    return high, low


def loglevel(value: str) -> str:
    try:
        parse_level(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be one of {', '.join(LEVELS)} (any case), got {value!r}"
        )
    return value.upper()


WORKER_DEFAULTS = {
    "queues": None, "hostname": None, "prefetch_multiplier": None, "purge": False, "concurrency": None,
    "pool": "prefork", "max_tasks_per_child": None, "max_memory_per_child": None, "autoscale": None,
    "time_limit": None, "soft_time_limit": None, "loglevel": None, "logfile": None, "pidfile": None,
    "events": False, "without_heartbeat": False, "beat": False, "burst": False, "shutdown_timeout": 60.0,
}  # fmt: skip


class Command(BaseCommand):
    help = "Run a task worker (Celery's flags). `runworker <channel>...` runs Channels' worker instead."
    worker_class = Worker

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "channels",
            nargs="*",
            help="Channels' form: channel names (handed to Channels' runworker).",
        )
        parser.add_argument(
            "--layer", default=None, help="Channels' form: the channel layer alias."
        )
        parser.add_argument(
            "-Q",
            "--queues",
            type=queue_list,
            help="Queues to consume, comma-separated (default: every configured queue).",
        )
        parser.add_argument(
            "-n", "--hostname", help="Node name, e.g. images@%%h (default tasks_q@%%h)."
        )
        parser.add_argument(
            "-c",
            "--concurrency",
            type=positive_int,
            help="Processes or threads (default: CPU count).",
        )
        parser.add_argument(
            "-P",
            "--pool",
            choices=POOLS,
            default="prefork",
            help="Execution pool (default prefork).",
        )
        parser.add_argument(
            "--prefetch-multiplier",
            type=positive_int,
            help="Messages prefetched per process (default TASKS_Q['PREFETCH_MULTIPLIER']).",
        )
        parser.add_argument(
            "--purge",
            action="store_true",
            help="Delete waiting messages of the queues before starting.",
        )
        parser.add_argument(
            "--max-tasks-per-child",
            type=positive_int,
            help="Replace a process after this many tasks.",
        )
        parser.add_argument(
            "--max-memory-per-child",
            type=positive_int,
            help="Replace a process above this resident memory (KiB).",
        )
        parser.add_argument(
            "--autoscale",
            type=autoscale,
            metavar="MAX,MIN",
            help="Grow to MAX processes when busy, shrink to MIN when idle.",
        )
        parser.add_argument(
            "--time-limit",
            type=positive_seconds,
            help="Hard time limit (seconds) for tasks without their own.",
        )
        parser.add_argument(
            "--soft-time-limit",
            type=positive_seconds,
            help="Soft time limit (seconds) for tasks without their own.",
        )
        parser.add_argument(
            "--shutdown-timeout",
            type=seconds,
            default=60.0,
            help="Seconds a warm shutdown waits for running tasks (default 60).",
        )
        parser.add_argument(
            "-l", "--loglevel", type=loglevel, help="DEBUG, INFO, WARNING, ERROR or CRITICAL."
        )
        parser.add_argument("--logfile", help="Write log lines to this file instead of stderr.")
        parser.add_argument(
            "--pidfile",
            help="Write the worker's pid here; refuse to start if it names a live process.",
        )
        parser.add_argument(
            "-E", "--events", action="store_true", help="Send task and worker events (celeryev)."
        )
        parser.add_argument(
            "--without-heartbeat",
            action="store_true",
            help="Do not write the worker heartbeat row.",
        )
        parser.add_argument(
            "-B", "--beat", action="store_true", help="Also run the periodic task scheduler."
        )
        parser.add_argument(
            "--burst", action="store_true", help="Exit once the queues are empty and nothing runs."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["channels"]:
            return self._channels(options)
        if options["layer"] is not None:
            raise CommandError(
                "--layer belongs to Channels' form: runworker <channel> [<channel>...] --layer NAME",
                returncode=2,
            )
        try:
            if options["beat"]:
                embedbeat.check()  # a flag error before anything starts
            worker = self.worker_class(
                queues=options["queues"], concurrency=options["concurrency"], pool=options["pool"],
                hostname=options["hostname"], prefetch_multiplier=options["prefetch_multiplier"],
                max_tasks_per_child=options["max_tasks_per_child"],
                max_memory_per_child=options["max_memory_per_child"], autoscale=options["autoscale"],
                time_limit=options["time_limit"], soft_time_limit=options["soft_time_limit"],
                burst=options["burst"], events=options["events"],
                without_heartbeat=options["without_heartbeat"], shutdown_timeout=options["shutdown_timeout"],
                purge=options["purge"], loglevel=options["loglevel"], logfile=options["logfile"],
                pidfile=options["pidfile"], beat=options["beat"], stdout=self.stdout._out,
            )  # fmt: skip
        except ValueError as exc:
            raise CommandError(str(exc), returncode=2)
        try:
            code = worker.run()
        except PidfileError as exc:
            raise CommandError(str(exc), returncode=1)
        if code:
            raise SystemExit(code)

    def _channels(self, options: dict[str, Any]) -> None:
        changed = [k for k, v in WORKER_DEFAULTS.items() if options.get(k) != v]
        if changed:
            flags = ", ".join("--" + k.replace("_", "-") for k in changed)
            raise CommandError(
                f"runworker {' '.join(options['channels'])} is Channels' form (channel names), which takes "
                f"only --layer; these worker flags do not apply to it: {flags}.",
                returncode=2,
            )
        from channels import DEFAULT_CHANNEL_LAYER
        from channels.management.commands.runworker import Command as ChannelsCommand

        command = ChannelsCommand(stdout=self.stdout._out, stderr=self.stderr._out)
        command.handle(
            channels=options["channels"], layer=options["layer"] or DEFAULT_CHANNEL_LAYER,
            verbosity=options.get("verbosity", 1),
        )  # fmt: skip
