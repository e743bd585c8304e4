"""The classes behind ``manage.py tasks_q <subcommand>``; the management command is a shell.

Each subcommand is a class with ``name``, ``help``, ``add_arguments(parser)`` and
``handle(ctx, options)``. Errors are ``CommandError`` with an exit code: 2 for a
bad flag, 1 when the command could not do its job, 69 when no worker answered.
"""

from __future__ import annotations

import argparse
from typing import Any

from .base import Context, default_stdin
from .deadletters import DeadLettersCommand
from .messages import CallCommand, PurgeCommand
from .tasks import CleanupCommand, ResultCommand, RevokeCommand
from .workers import InspectCommand, StatusCommand

SUBCOMMANDS = {
    c.name: c
    for c in (
        InspectCommand(),
        StatusCommand(),
        PurgeCommand(),
        CallCommand(),
        RevokeCommand(),
        ResultCommand(),
        CleanupCommand(),
        DeadLettersCommand(),
    )
}


def add_subcommands(parser: argparse.ArgumentParser) -> None:
    subparsers = parser.add_subparsers(
        dest="subcommand", metavar="subcommand", title="subcommands", required=True
    )
    for sub in SUBCOMMANDS.values():
        sub.add_arguments(subparsers.add_parser(sub.name, help=sub.help, description=sub.help))


def run(command: Any, options: dict[str, Any]) -> None:
    """Run the chosen subcommand with the management command's streams."""
    ctx = Context(
        stdout=command.stdout,
        stderr=command.stderr,
        stdin=options.get("stdin") or default_stdin(),
        style=command.style,
    )
    SUBCOMMANDS[options["subcommand"]].handle(ctx, options)


__all__ = ["SUBCOMMANDS", "Context", "add_subcommands", "run"]
