"""What every ``tasks_q`` subcommand shares: errors with exit codes, output, flag parsing."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO, TypeVar

from django.core.management.base import CommandError
from django.utils import timezone

#: bad flags and arguments (argparse's own code)
EX_USAGE = 2
#: the command ran but could not do its job
EX_FAILURE = 1
#: no worker answered (Celery's ``EX_UNAVAILABLE``)
EX_UNAVAILABLE = 69


def usage_error(message: str) -> CommandError:
    """A bad flag: exit code 2, no traceback."""
    return CommandError(message, returncode=EX_USAGE)


def failure(message: str, code: int = EX_FAILURE) -> CommandError:
    return CommandError(message, returncode=code)


@dataclass
class Context:
    """Where a subcommand writes and reads (the management command's streams)."""

    stdout: Any
    stderr: Any
    stdin: TextIO
    style: Any

    def out(self, text: str = "") -> None:
        self.stdout.write(text)

    def warn(self, text: str) -> None:
        self.stderr.write(self.style.WARNING(text))

    def success(self, text: str) -> None:
        self.stdout.write(self.style.SUCCESS(text))

    def json(self, value: Any) -> None:
        self.stdout.write(json.dumps(value, indent=2, sort_keys=True, default=str))

    def confirm(self, question: str, refusal: str) -> bool:
        """Ask yes/no on a terminal; without one, refuse with ``refusal`` (exit 1)."""
        isatty = getattr(self.stdin, "isatty", None)
        if not (callable(isatty) and isatty()):
            raise failure(refusal)
        self.stdout.write(f"{question} [y/N] ", ending="")
        self.stdout.flush()
        answer = self.stdin.readline()
        return answer.strip().lower() in ("y", "yes")


def default_stdin() -> TextIO:
    return sys.stdin


def json_flag(flag: str, value: str | None, kind: type, example: str) -> Any:
    """Parse ``--flag JSON`` into a ``kind`` (list or dict), or raise a usage error naming the flag."""
    if value is None:
        return kind()
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise usage_error(
            f"{flag} is not valid JSON ({exc}). Pass a JSON {_kind_name(kind)}, e.g. {flag} '{example}'"
        ) from None
    if not isinstance(parsed, kind):
        raise usage_error(
            f"{flag} must be a JSON {_kind_name(kind)}, got {type(parsed).__name__} {value!r}. "
            f"Example: {flag} '{example}'"
        )
    return parsed


def _kind_name(kind: type) -> str:
    names: dict[type, str] = {list: "list", dict: "object"}
    return names.get(kind, kind.__name__)


def iso_datetime(flag: str, value: str) -> datetime:
    """``--eta 2030-01-01T10:00:00+00:00``; a time without offset is in Django's TIME_ZONE."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise usage_error(
            f"{flag} {value!r} is not an ISO-8601 date and time. "
            f"Example: {flag} 2030-01-31T09:30:00+00:00"
        ) from None
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed, timezone.get_default_timezone())
    return parsed


#: a number of seconds, or None when the flag was not given
Seconds = TypeVar("Seconds", bound=float | None)


def non_negative(flag: str, value: Seconds) -> Seconds:
    if value is not None and value < 0:
        raise usage_error(f"{flag} must be >= 0 seconds, got {value}")
    return value


def positive(flag: str, value: Seconds) -> Seconds:
    if value is not None and value <= 0:
        raise usage_error(f"{flag} must be > 0 seconds, got {value}")
    return value


def split_names(values: list[str] | None) -> list[str] | None:
    """``-Q a,b -Q c`` -> ``["a", "b", "c"]``; None when not given."""
    if not values:
        return None
    names = [n.strip() for v in values for n in v.split(",")]
    names = [n for n in names if n]
    if not names:
        raise usage_error("-Q/--queues needs at least one queue name, e.g. -Q default,images")
    return list(dict.fromkeys(names))


def count_of(n: int, noun: str) -> str:
    """``"1 worker"``, ``"3 workers"``: ``n`` and the noun, plural unless ``n`` is 1."""
    return f"{n} {noun}{'s' if n != 1 else ''}"


def one_line(value: Any, limit: int = 200) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
