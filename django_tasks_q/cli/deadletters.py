"""``tasks_q deadletters list|replay ID|purge``."""

from __future__ import annotations

import argparse
from typing import Any

from .base import Context, count_of, failure, non_negative, one_line, usage_error


class DeadLettersCommand:
    name = "deadletters"
    help = "List, replay or purge dead-lettered messages."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        actions = parser.add_subparsers(dest="action", metavar="list|replay|purge", required=True)
        listing = actions.add_parser("list", help="Show dead letters, newest first.")
        listing.add_argument(
            "--limit", type=int, default=50, help="At most this many (default 50)."
        )
        listing.add_argument(
            "--json", action="store_true", dest="as_json", help="Print JSON, payloads included."
        )
        replay = actions.add_parser("replay", help="Publish a dead letter again, then delete it.")
        replay.add_argument(
            "dead_letter_id", type=int, metavar="ID", help="The dead letter's id (from `list`)."
        )
        replay.add_argument(
            "--queue", "-Q", default=None, help="Publish to this queue instead of the original."
        )
        purge = actions.add_parser("purge", help="Delete dead letters (asks first unless --force).")
        purge.add_argument(
            "--older-than",
            type=float,
            default=None,
            metavar="SECONDS",
            help="Only those older than this.",
        )
        purge.add_argument(
            "-f",
            "--force",
            "--noinput",
            "--no-input",
            action="store_true",
            dest="force",
            help="Do not ask.",
        )

    def handle(self, ctx: Context, options: dict[str, Any]) -> None:
        getattr(self, f"_{options['action']}")(ctx, options)

    def _list(self, ctx: Context, options: dict[str, Any]) -> None:
        from ..models import DeadLetter

        limit = options["limit"]
        if limit < 1:
            raise usage_error(f"--limit must be >= 1, got {limit}")
        rows = list(DeadLetter.objects.order_by("-date_created", "-pk")[:limit])
        if options["as_json"]:
            ctx.json([_as_dict(r) for r in rows])
            return
        for r in rows:
            ctx.out(
                f"{r.pk}  {r.date_created:%Y-%m-%d %H:%M:%S}  {r.reason}  {r.task_name or '-'}[{r.task_id or '-'}]"
                f"  queue={r.queue or '-'}  {one_line(r.detail, 120)}"
            )
        total = DeadLetter.objects.count()
        ctx.out(f"{len(rows)} of {count_of(total, 'dead letter')} shown.")

    def _replay(self, ctx: Context, options: dict[str, Any]) -> None:
        from ..deadletter import DeadLetterNotFound, replay
        from ..exceptions import TasksQError

        try:
            row = replay(options["dead_letter_id"], queue=options["queue"])
        except DeadLetterNotFound as exc:
            raise failure(str(exc)) from None
        except TasksQError as exc:
            raise failure(
                f"Could not replay dead letter {options['dead_letter_id']}: {exc}"
            ) from None
        ctx.success(
            f"Replayed dead letter {options['dead_letter_id']} (task {row.task_id or '?'}) to {options['queue'] or row.queue or 'the default queue'}."
        )

    def _purge(self, ctx: Context, options: dict[str, Any]) -> None:
        from ..deadletter import purge_dead_letters
        from ..models import DeadLetter

        older = non_negative("--older-than", options["older_than"])
        if not options["force"]:
            count = DeadLetter.objects.count()
            scope = f" older than {older:g}s" if older is not None else ""
            question = f"Delete dead letters{scope} ({count} stored)? This cannot be undone."
            refusal = (
                f"Refusing to delete dead letters{scope} without confirmation: stdin is not a "
                "terminal. Re-run with --force (or --noinput)."
            )
            if not ctx.confirm(question, refusal):
                ctx.out("Nothing deleted.")
                return
        deleted = purge_dead_letters(older_than=older)
        ctx.success(f"Deleted {count_of(deleted, 'dead letter')}.")


def _as_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row.pk,
        "date_created": row.date_created.isoformat(),
        "task_id": row.task_id,
        "task_name": row.task_name,
        "queue": row.queue,
        "reason": row.reason,
        "detail": row.detail,
        "payload": row.payload,
    }
