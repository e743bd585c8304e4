"""Task states, with Celery's names and ordering."""

from __future__ import annotations

PENDING = "PENDING"
RECEIVED = "RECEIVED"
STARTED = "STARTED"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
REVOKED = "REVOKED"
REJECTED = "REJECTED"
RETRY = "RETRY"
IGNORED = "IGNORED"
LOST = "LOST"

READY_STATES = frozenset({SUCCESS, FAILURE, REVOKED, LOST})
UNREADY_STATES = frozenset({PENDING, RECEIVED, STARTED, REJECTED, RETRY})
EXCEPTION_STATES = frozenset({RETRY, FAILURE, REVOKED, LOST})
PROPAGATE_STATES = frozenset({FAILURE, REVOKED, LOST})

ALL_STATES = frozenset(
    {PENDING, RECEIVED, STARTED, SUCCESS, FAILURE, REVOKED, REJECTED, RETRY, IGNORED, LOST}
)

_PRECEDENCE = [SUCCESS, FAILURE, LOST, None, REVOKED, STARTED, RECEIVED, REJECTED, RETRY, PENDING]


def precedence(state: str | None) -> int:
    """Lower is 'more final'; unknown custom states (PROGRESS...) sit in the middle."""
    try:
        return _PRECEDENCE.index(state)
    except ValueError:
        return _PRECEDENCE.index(None)
