"""``tasks_q call`` and ``tasks_q purge``: putting messages on queues and taking them off."""

from __future__ import annotations

import argparse
from typing import Any

from .base import (
    Context,
    count_of,
    failure,
    iso_datetime,
    json_flag,
    non_negative,
    split_names,
    usage_error,
)


class CallCommand:
    name = "call"
    help = "Send a task by name; prints its id."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "task_name", metavar="NAME", help="The task's registered name, e.g. myapp.tasks.add"
        )
        parser.add_argument(
            "--args",
            "-a",
            default=None,
            dest="task_args",
            metavar="JSON",
            help="Positional arguments as a JSON list, e.g. '[2, 2]'.",
        )
        parser.add_argument(
            "--kwargs",
            "-k",
            default=None,
            dest="task_kwargs",
            metavar="JSON",
            help="Keyword arguments as a JSON object, e.g. '{\"x\": 1}'.",
        )
        parser.add_argument(
            "--queue", "-Q", default=None, help="Queue to send to (default: the task's route)."
        )
        when = parser.add_mutually_exclusive_group()
        when.add_argument(
            "--countdown",
            type=float,
            default=None,
            help="Run no sooner than this many seconds from now.",
        )
        when.add_argument(
            "--eta",
            default=None,
            help="Run no sooner than this ISO-8601 time, e.g. 2030-01-31T09:30:00+00:00.",
        )
        parser.add_argument(
            "--expires",
            type=float,
            default=None,
            help="Discard the task if not started within this many seconds.",
        )

    def handle(self, ctx: Context, options: dict[str, Any]) -> None:
        from ..calling import send_task
        from ..exceptions import TasksQError
        from ..registry import tasks

        name = options["task_name"].strip()
        if not name:
            raise usage_error(
                "NAME must be a task name, e.g. tasks_q call myapp.tasks.add --args '[2, 2]'"
            )
        args = json_flag("--args", options["task_args"], list, "[2, 2]")
        kwargs = json_flag("--kwargs", options["task_kwargs"], dict, '{"x": 1}')
        countdown = non_negative("--countdown", options["countdown"])
        expires = options["expires"]
        if expires is not None and expires <= 0:
            raise usage_error(f"--expires must be > 0 seconds, got {expires}")
        eta = iso_datetime("--eta", options["eta"]) if options["eta"] else None
        queue = options["queue"].strip() if options["queue"] else None
        known = tasks.get(name)
        if known is None:
            ctx.warn(f"Task {name!r} is not registered in this project; sending it anyway.")
        send_options = {
            k: v
            for k, v in (
                ("queue", queue),
                ("countdown", countdown),
                ("eta", eta),
                ("expires", expires),
            )
            if v is not None
        }
        try:
            if known is not None:
                result = known.apply_async(args, kwargs, **send_options)
            else:
                result = send_task(name, args, kwargs, **send_options)
        except TypeError as exc:  # arguments that do not fit the task's signature
            raise usage_error(f"{exc}. Check --args and --kwargs.") from None
        except TasksQError as exc:
            raise failure(str(exc)) from None
        ctx.out(result.id)


class PurgeCommand:
    name = "purge"
    help = "Delete every waiting message from the queues (asks first unless --force)."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "-Q", "--queues", action="append", metavar="QUEUES",
            help="Comma-separated queues to purge (default: every configured queue).",
        )  # fmt: skip
        parser.add_argument(
            "-f", "--force", "--noinput", "--no-input", action="store_true", dest="force",
            help="Do not ask for confirmation.",
        )  # fmt: skip

    def handle(self, ctx: Context, options: dict[str, Any]) -> None:
        from ..control import ControlError, control
        from ..routing import queue_names

        queues = split_names(options.get("queues")) or queue_names()
        listed = ", ".join(queues)
        try:
            if not options["force"]:
                sizes = control.queue_sizes(queues)
                known = [n for n in sizes.values() if n is not None]
                what = count_of(sum(known), "waiting message") if known else "every waiting message"
                question = f"Purge {what} from {listed}? This cannot be undone."
                refusal = (
                    f"Refusing to purge {what} from {listed} without confirmation: stdin is not "
                    "a terminal. Re-run with --force (or --noinput) to purge."
                )
                if not ctx.confirm(question, refusal):
                    ctx.out("Nothing purged.")
                    return
            count = control.purge(queues)
        except ControlError as exc:
            raise failure(str(exc)) from None
        ctx.success(f"Purged {count_of(count, 'message')} from {listed}.")
