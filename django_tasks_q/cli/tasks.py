"""``tasks_q revoke``, ``tasks_q result`` and ``tasks_q cleanup``: single tasks and old rows."""

from __future__ import annotations

import argparse
from typing import Any

from .base import Context, failure, one_line, positive, usage_error


class RevokeCommand:
    name = "revoke"
    help = "Revoke tasks by id (persisted: workers started later skip them too)."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("task_ids", nargs="+", metavar="ID", help="Task id(s).")
        parser.add_argument(
            "--terminate", action="store_true", help="Also signal the process running the task now."
        )
        parser.add_argument(
            "--signal",
            "-s",
            default="SIGTERM",
            help="Signal for --terminate (default SIGTERM), e.g. SIGKILL.",
        )
        parser.add_argument(
            "-t", "--timeout", type=float, default=1.0, help="Seconds to wait for workers' replies."
        )

    def handle(self, ctx: Context, options: dict[str, Any]) -> None:
        from ..revocation import normalize_signal, revoke

        try:
            sig = normalize_signal(options["signal"])
        except ValueError as exc:
            raise usage_error(f"--signal: {exc}") from None
        timeout = positive("--timeout", options["timeout"])
        try:
            replies = revoke(
                options["task_ids"],
                terminate=options["terminate"],
                signal=sig,
                reply=True,
                timeout=timeout,
            )
        except ValueError as exc:
            raise usage_error(str(exc)) from None
        for task_id in options["task_ids"]:
            ctx.success(
                f"Revoked {task_id}" + (f" (terminate with {sig})" if options["terminate"] else "")
            )
        for reply in replies or []:
            for hostname, answer in reply.items():
                ctx.out(
                    f"  {hostname}: {one_line(answer.get('ok') or answer.get('error') if isinstance(answer, dict) else answer)}"
                )


class ResultCommand:
    name = "result"
    help = "Show a task's state and result."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("task_id", metavar="ID", help="Task id.")
        parser.add_argument(
            "--wait",
            type=float,
            default=None,
            metavar="S",
            help="Wait up to S seconds for the task to finish.",
        )
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="Print the stored record as JSON."
        )

    def handle(self, ctx: Context, options: dict[str, Any]) -> None:
        from ..exceptions import TimeoutError as WaitTimeout
        from ..results import get_store

        task_id = options["task_id"].strip()
        if not task_id:
            raise usage_error("ID must be a task id, e.g. tasks_q result 2f9c... ")
        wait = positive("--wait", options["wait"])
        store = get_store()
        timed_out = False
        if wait is not None:
            try:
                meta = store.wait_for(task_id, timeout=wait)
            except WaitTimeout:
                timed_out, meta = True, store.get_task_meta(task_id)
        else:
            meta = store.get_task_meta(task_id)
        if options["as_json"]:
            ctx.json(meta)
        else:
            _print_meta(ctx, meta)
        if timed_out:
            raise failure(f"Task {task_id} is still {meta.get('status')} after waiting {wait:g}s.")


def _print_meta(ctx: Context, meta: dict[str, Any]) -> None:
    ctx.out(f"id: {meta.get('task_id')}")
    if meta.get("name"):
        ctx.out(f"name: {meta['name']}")
    ctx.out(f"state: {meta.get('status')}")
    result = meta.get("result")
    if isinstance(result, dict) and "exc_type" in result:
        message = result.get("exc_message")
        if isinstance(message, list | tuple):
            message = ", ".join(str(m) for m in message)
        ctx.out(f"error: {result.get('exc_type')}: {one_line(message, 500)}")
    elif result is not None:
        ctx.out(f"result: {one_line(result, 2000)}")
    if meta.get("date_done"):
        ctx.out(f"done: {meta['date_done']}")
    if meta.get("traceback"):
        ctx.out("traceback:")
        ctx.out(str(meta["traceback"]).rstrip())


class CleanupCommand:
    name = "cleanup"
    help = "Delete expired results, revokes and broker leftovers."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        pass

    def handle(self, ctx: Context, options: dict[str, Any]) -> None:
        from .. import cleanup
        from ..revocation import purge_expired

        run = getattr(cleanup, "cleanup_expired", None) or cleanup.cleanup_results
        outcome = run()
        revokes = purge_expired()
        if isinstance(outcome, dict):
            for key in sorted(outcome):
                ctx.out(f"{key}: {outcome[key]}")
        elif outcome is not None:
            ctx.out(f"results: {outcome}")
        ctx.out(f"revokes: {revokes}")
        ctx.success("Cleanup done.")
