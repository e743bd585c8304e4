"""Rate limit strings (``"10/m"``) and a token bucket."""

from __future__ import annotations

import threading
import time

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(rate: str | int | float | None) -> float:
    """``"10/m"`` -> 0.1666 tokens per second; a bare number means per second; 0/None: no limit."""
    if rate is None or rate == "" or rate == 0:
        return 0.0
    if isinstance(rate, int | float):
        if rate < 0:
            raise ValueError(f"rate_limit must not be negative, got {rate!r}")
        return float(rate)
    if not isinstance(rate, str):
        raise ValueError(f"rate_limit must look like '10/m', '5/s' or '100/h', got {rate!r}")
    amount, _, unit = rate.strip().partition("/")
    try:
        n = float(amount)
    except ValueError:
        raise ValueError(f"rate_limit must look like '10/m', '5/s' or '100/h', got {rate!r}") from None
    unit = (unit or "s").strip().lower()[:1]
    if unit not in _UNITS or n < 0:
        raise ValueError(f"rate_limit must look like '10/m', '5/s' or '100/h', got {rate!r}")
    return n / _UNITS[unit]


class TokenBucket:
    """Classic token bucket: ``capacity`` tokens, refilled at ``rate`` per second."""

    def __init__(self, rate: float, capacity: float = 1.0) -> None:
        self.rate = rate
        self.capacity = max(capacity, 1.0)
        self._tokens = self.capacity
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def consume(self, tokens: float = 1.0) -> bool:
        with self._lock:
            self._refill()
            if self._tokens >= tokens:
                self._tokens -= tokens
                return True
            return False

    def expected_time(self, tokens: float = 1.0) -> float:
        """Seconds until ``tokens`` are available."""
        with self._lock:
            self._refill()
            missing = tokens - self._tokens
            return 0.0 if missing <= 0 else missing / self.rate
