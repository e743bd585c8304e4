"""``-l/--loglevel`` and ``--logfile``: where the worker's and the tasks' log lines go."""

from __future__ import annotations

import logging
import sys

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
FORMAT = "[%(asctime)s: %(levelname)s/%(process)d] %(name)s: %(message)s"


def parse_level(value: str | int) -> int:
    """``"info"``/``"INFO"``/``20`` -> ``logging.INFO``; anything else raises ValueError."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    name = str(value).strip().upper()
    if name not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)} (any case), got {value!r}")
    return getattr(logging, name)


def setup_logging(loglevel: str | int | None, logfile: str | None) -> None:
    """Send every log line (ours, the tasks', the root logger's) to stderr or ``logfile``.

    Asked for on the command line, so it takes over the ``django_tasks_q`` logger's
    handlers (no line twice); other Django loggers keep their configuration.
    """
    if loglevel is None and logfile is None:
        return
    level = parse_level(loglevel if loglevel is not None else "INFO")
    handler: logging.Handler
    handler = logging.FileHandler(logfile) if logfile else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    ours = logging.getLogger("django_tasks_q")
    ours.handlers = [handler]
    ours.setLevel(level)
    ours.propagate = False
