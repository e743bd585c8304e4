"""Per-task settings every process of one worker shares: rate limits and time limits.

``rate_limit='10/m'`` is per task *per worker* (Celery's meaning), however many
processes the worker runs, so the token buckets live in shared memory: an
anonymous ``mmap`` created before the first fork. Each bucket holds at most one
token (no bursts, as in Celery). ``control.rate_limit`` and
``control.time_limit`` change an entry here, and every process sees it on its
next message.

Updates take a lock that survives a process dying while holding it: a
``threading.Lock`` (threads of one process) plus a POSIX record lock on an
unlinked temporary file (processes; the kernel drops it when its holder dies).
"""

from __future__ import annotations

import fcntl
import mmap
import struct
import tempfile
import threading
import time
from contextlib import contextmanager
from typing import Any

from ..ratelimit import parse_rate

_ENTRY = struct.Struct("<200sBddddd")  # name, flags, rate, tokens, stamp, soft, hard
_HEAD = struct.Struct("<I")
_HAS_RATE, _HAS_LIMITS = 1, 2
UNSET = -1.0


class TaskTable:
    """Shared per-task overrides and token buckets (``capacity`` task names at most)."""

    def __init__(self, capacity: int = 256) -> None:
        self.capacity = capacity
        self.buf = mmap.mmap(-1, _HEAD.size + capacity * _ENTRY.size)
        self._thread_lock = threading.Lock()
        self._file = tempfile.TemporaryFile(prefix="tasks_q-limits-")
        self._index: dict[str, int] = {}
        self._seen = 0

    # -- locking -----------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Any:
        with self._thread_lock:
            fcntl.lockf(self._file.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.lockf(self._file.fileno(), fcntl.LOCK_UN)

    # -- entries -----------------------------------------------------------------------
    def _count(self) -> int:
        return _HEAD.unpack_from(self.buf, 0)[0]

    def _offset(self, index: int) -> int:
        return _HEAD.size + index * _ENTRY.size

    def _find(self, name: str) -> int | None:
        index = self._index.get(name)
        if index is not None:
            return index
        count = self._count()
        if count == self._seen:
            return None
        for i in range(self._seen, count):
            raw = _ENTRY.unpack_from(self.buf, self._offset(i))[0]
            self._index[raw.rstrip(b"\0").decode()] = i
        self._seen = count
        return self._index.get(name)

    def _entry(self, name: str) -> int:
        """Index of ``name``'s entry, creating it (call with the lock held)."""
        index = self._find(name)
        if index is not None:
            return index
        count = self._count()
        if count >= self.capacity:
            raise ValueError(f"Too many tasks with rate or time limit overrides (max {self.capacity})")
        key = name.encode()
        if len(key) > 200:
            raise ValueError(f"Task name {name!r} is too long for a limit override (200 bytes max)")
        _ENTRY.pack_into(self.buf, self._offset(count), key, 0, 0.0, 1.0, 0.0, UNSET, UNSET)
        _HEAD.pack_into(self.buf, 0, count + 1)
        return self._find(name)  # type: ignore[return-value]

    # -- rate limits -------------------------------------------------------------------
    def set_rate(self, name: str, rate: str | float | None) -> float:
        """Limit ``name`` to ``rate`` ('10/m', '5/s'; None or 0: no limit); return tokens/s."""
        per_second = parse_rate(rate)
        with self._locked():
            offset = self._offset(self._entry(name))
            _, flags, _, _, _, soft, hard = _ENTRY.unpack_from(self.buf, offset)
            _ENTRY.pack_into(
                self.buf, offset, name.encode(), flags | _HAS_RATE, per_second, 1.0,
                time.monotonic(), soft, hard,
            )  # fmt: skip
        return per_second

    def rate_wait(self, name: str) -> float:
        """Take a token for ``name`` and return 0, or return seconds until one is due."""
        index = self._find(name)
        if index is None:
            return 0.0
        offset = self._offset(index)
        if not _ENTRY.unpack_from(self.buf, offset)[1] & _HAS_RATE:
            return 0.0
        with self._locked():
            key, flags, rate, tokens, stamp, soft, hard = _ENTRY.unpack_from(self.buf, offset)
            if rate <= 0:
                return 0.0
            now = time.monotonic()
            tokens = min(1.0, tokens + max(0.0, now - stamp) * rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / rate
            _ENTRY.pack_into(self.buf, offset, key, flags, rate, tokens, now, soft, hard)
            return wait

    def rates(self) -> dict[str, float]:
        out = {}
        for i in range(self._count()):
            key, flags, rate, *_ = _ENTRY.unpack_from(self.buf, self._offset(i))
            if flags & _HAS_RATE and rate > 0:
                out[key.rstrip(b"\0").decode()] = rate
        return out

    # -- time limits -------------------------------------------------------------------
    def set_time_limits(self, name: str, soft: float | None, hard: float | None) -> None:
        with self._locked():
            offset = self._offset(self._entry(name))
            key, flags, rate, tokens, stamp, _, _ = _ENTRY.unpack_from(self.buf, offset)
            _ENTRY.pack_into(
                self.buf, offset, key, flags | _HAS_LIMITS, rate, tokens, stamp,
                UNSET if soft is None else float(soft), UNSET if hard is None else float(hard),
            )  # fmt: skip

    def time_limits(self, name: str) -> tuple[float | None, float | None] | None:
        """``(soft, hard)`` set by ``control.time_limit`` for ``name``, or None."""
        index = self._find(name)
        if index is None:
            return None
        _, flags, _, _, _, soft, hard = _ENTRY.unpack_from(self.buf, self._offset(index))
        if not flags & _HAS_LIMITS:
            return None
        return (None if soft < 0 else soft, None if hard < 0 else hard)

    def close(self) -> None:
        try:
            self._file.close()
        except OSError:
            pass

    def __getstate__(self) -> Any:  # pragma: no cover - shared by fork, never pickled
        raise TypeError("TaskTable is shared by fork, not by pickling")

