"""Tasks the package itself registers (names under ``tasks_q.``)."""

from __future__ import annotations

from .task import task


@task(name="tasks_q.cleanup", ignore_result=True)
def cleanup() -> int:
    """Delete expired results in chunks (beat can schedule this daily)."""
    from .cleanup import cleanup_expired

    return cleanup_expired()


from .workflows import builtin_tasks  # noqa: E402, F401  (tasks_q.map, .starmap, .chunks, .identity)
