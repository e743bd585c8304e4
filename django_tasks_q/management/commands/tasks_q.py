"""``manage.py tasks_q inspect|status|purge|call|revoke|result|cleanup|deadletters``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from django_tasks_q import cli


class Command(BaseCommand):
    help = "Inspect and control workers, queues, tasks and dead letters."
    stealth_options = ("stdin",)

    def add_arguments(self, parser: Any) -> None:
        cli.add_subcommands(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        cli.run(self, options)
