"""``runworker -B``: the periodic task scheduler beside the worker, in its own process.

For development: one command runs both. In production run ``beat`` once, on its
own, so two schedulers never send the same periodic task.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from django.core.management import get_commands

logger = logging.getLogger("django_tasks_q.worker")

UNAVAILABLE = (
    "-B/--beat: the periodic task scheduler (beat) is not available yet in this version; "
    "run the worker without -B."
)


def check() -> None:
    """Raise ValueError (a command-line error) if there is no ``beat`` command to embed."""
    if "beat" not in get_commands():
        raise ValueError(UNAVAILABLE)
    if not os.environ.get("DJANGO_SETTINGS_MODULE"):
        raise ValueError(
            "-B/--beat: set DJANGO_SETTINGS_MODULE, so beat's process finds your settings."
        )


def start() -> subprocess.Popen:
    """Run ``manage.py beat`` in a child process that sees this process's import path."""
    code = (
        f"import sys; sys.path[:0] = {[entry or os.getcwd() for entry in sys.path]!r}; import django; django.setup(); "
        "from django.core.management import call_command; call_command('beat')"
    )
    logger.info("Starting beat beside the worker")
    return subprocess.Popen([sys.executable, "-c", code], env=os.environ.copy())


def stop(process: subprocess.Popen) -> None:
    """Stop beat (SIGTERM, then SIGKILL after 10 s)."""
    if process.poll() is not None:
        if process.returncode:
            logger.error("Beat had exited with code %s", process.returncode)
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
