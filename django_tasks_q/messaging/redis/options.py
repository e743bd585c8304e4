"""Tunable numbers of the Redis transport: transport options first, then ``TASKS_Q``.

Read when a channel is created (never at import), so ``override_settings`` and
per-connection ``transport_options`` both work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...conf import DEFAULTS, settings

#: Claim this many messages per round trip when the channel has no prefetch count.
DEFAULT_CLAIM_BATCH = 10
#: Flush buffered acks once this many are waiting...
DEFAULT_ACK_BATCH = 16
#: ...or once the oldest has waited this long (seconds).
DEFAULT_ACK_INTERVAL = 0.005
#: Longest gap between two sweeps for dead owners, whatever the heartbeat timeout.
MAX_SWEEP_INTERVAL = 5.0
#: Due delayed messages moved to their queues per claim.
DEFAULT_DELAYED_MOVE_LIMIT = 100


def setting(name: str) -> Any:
    """``TASKS_Q[name]``, or its default when Django settings are not configured."""
    from django.conf import settings as django_settings

    if not django_settings.configured:
        return DEFAULTS[name]
    return getattr(settings, name)


def _positive(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if number <= 0:
        raise ValueError(
            f"Redis transport option {name!r} must be a positive number of seconds, got {value!r}."
        )
    return number


@dataclass(frozen=True)
class Options:
    """Resolved options of one channel."""

    claim_batch: int | None
    ack_batch: int
    ack_interval: float
    heartbeat_interval: float
    heartbeat_timeout: float
    sweep_interval: float
    eta_horizon: float
    delayed_move_limit: int

    @classmethod
    def resolve(cls, transport_options: dict[str, Any]) -> Options:
        def pick(option: str, key: str) -> Any:
            value = transport_options.get(option)
            return setting(key) if value is None else value

        interval = _positive("heartbeat_interval", pick("heartbeat_interval", "HEARTBEAT_INTERVAL"))
        timeout = _positive("heartbeat_timeout", pick("heartbeat_timeout", "HEARTBEAT_TIMEOUT"))
        if timeout <= interval:
            raise ValueError(
                f"The heartbeat timeout ({timeout:g} s) must be longer than the heartbeat "
                f"interval ({interval:g} s), or live workers would be taken for dead; "
                "a timeout of 3 to 6 intervals is usual."
            )
        sweep = transport_options.get("sweep_interval")
        sweep = (
            min(MAX_SWEEP_INTERVAL, timeout / 2)
            if sweep is None
            else _positive("sweep_interval", sweep)
        )
        batch = transport_options.get("claim_batch")
        if batch is not None and (not isinstance(batch, int) or batch < 1):
            raise ValueError(
                f"Redis transport option 'claim_batch' must be an int >= 1, got {batch!r}."
            )
        horizon = transport_options.get("eta_horizon")
        horizon = setting("ETA_HORIZON") if horizon is None else horizon
        return cls(
            claim_batch=batch,
            ack_batch=int(transport_options.get("ack_batch") or DEFAULT_ACK_BATCH),
            ack_interval=float(transport_options.get("ack_interval") or DEFAULT_ACK_INTERVAL),
            heartbeat_interval=interval,
            heartbeat_timeout=timeout,
            sweep_interval=sweep,
            eta_horizon=float(horizon),
            delayed_move_limit=int(
                transport_options.get("delayed_move_limit") or DEFAULT_DELAYED_MOVE_LIMIT
            ),
        )
