"""Shared memory between the prefork supervisor and its children.

One anonymous ``mmap`` is created before the first fork, so every child sees the
same bytes. It holds:

* one :class:`Slot` per child: what the child is running (task id and name, when
  it started, its hard deadline, how it acks), written by the child with a
  sequence counter (odd while writing) so the supervisor never reads a torn
  record; and a few bytes the supervisor writes (stop, report and kill requests);
* the *lost registry*: task ids whose child died running them here, with a count,
  so a child that is handed the redelivered message knows the previous run died;
* the *queue set*: the queues every child should consume (``add_consumer``).

Nothing here makes a system call: a task start is a few ``struct.pack_into``.
"""

from __future__ import annotations

import json
import mmap
import struct
import time
from dataclasses import dataclass
from typing import Any

# -- one slot ----------------------------------------------------------------------------
_RUN = struct.Struct("<QiBBBBdddQd64s200sH1024s")
(_GEN, _PID, _STATE, _ACKS_LATE, _REJECT_LOST, _EXIT, _STARTED_WALL, _STARTED, _DEADLINE,
 _PROCESSED, _IDLE_SINCE, _TASK_ID, _TASK_NAME, _INFO_LEN, _INFO) = range(15)  # fmt: skip
_CONTROL = struct.Struct("<BBII")  # stop, kill signal, report request id, report answer id
_REPORT_HEAD = struct.Struct("<I")
REPORT_SIZE = 32 * 1024
_MESSAGE_HEAD = struct.Struct("<64sI")  # task id, length
MESSAGE_SIZE = 32 * 1024
_LEASES_HEAD = struct.Struct("<QI")  # generation (odd while written), length
LEASES_SIZE = 2048
SLOT_SIZE = (
    _RUN.size + _CONTROL.size + _REPORT_HEAD.size + REPORT_SIZE + _MESSAGE_HEAD.size + MESSAGE_SIZE
    + _LEASES_HEAD.size + LEASES_SIZE
)  # fmt: skip

STARTING, IDLE, BUSY, EXITING = 0, 1, 2, 3
#: kill-byte value asking a child for a cold stop (requeue and exit now)
COLD = 255
#: why a child exited on its own
EXIT_NONE, EXIT_STOP, EXIT_MAX_TASKS, EXIT_MAX_MEMORY, EXIT_BURST, EXIT_SHRINK, EXIT_ERROR = range(
    7
)
EXIT_REASONS = {
    EXIT_NONE: "died",
    EXIT_STOP: "stopped",
    EXIT_MAX_TASKS: "max-tasks-per-child reached",
    EXIT_MAX_MEMORY: "max-memory-per-child reached",
    EXIT_BURST: "queues empty (burst)",
    EXIT_SHRINK: "pool shrank",
    EXIT_ERROR: "failed to start",
}

# -- lost registry and queue set -------------------------------------------------------------
_LOST = struct.Struct("<QI64s")
LOST_ENTRIES = 256
_QUEUES_HEAD = struct.Struct("<QI")
QUEUES_SIZE = 8192


@dataclass(frozen=True)
class SlotState:
    """A consistent read of one slot."""

    index: int
    pid: int
    state: int
    acks_late: bool
    reject_on_worker_lost: bool
    exit_reason: int
    started_wall: float
    started: float
    hard_deadline: float
    processed: int
    idle_since: float
    task_id: str
    task_name: str
    info: dict[str, Any]

    @property
    def busy(self) -> bool:
        return self.state == BUSY and bool(self.task_id)


def _text(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode("utf-8", "replace")


def _fit(text: str, size: int) -> bytes:
    data = text.encode("utf-8", "replace")
    return data[:size]


class Slot:
    """A view of one child's record in the shared map."""

    def __init__(self, buf: mmap.mmap, index: int, offset: int) -> None:
        self.buf = buf
        self.index = index
        self.offset = offset
        self._control = offset + _RUN.size
        self._report = self._control + _CONTROL.size
        self._message = self._report + _REPORT_HEAD.size + REPORT_SIZE
        self._leases = self._message + _MESSAGE_HEAD.size + MESSAGE_SIZE

    # -- child side --------------------------------------------------------------------
    def _update(self, changes: dict[int, Any]) -> None:
        values = list(_RUN.unpack_from(self.buf, self.offset))
        gen = values[_GEN] + 1
        values[_GEN] = gen
        _RUN.pack_into(self.buf, self.offset, *values)  # odd: a write is under way
        for index, value in changes.items():
            values[index] = value
        values[_GEN] = gen + 1
        _RUN.pack_into(self.buf, self.offset, *values)

    def set_state(self, state: int, pid: int | None = None, exit_reason: int | None = None) -> None:
        changes: dict[int, Any] = {_STATE: state}
        if pid is not None:
            changes[_PID] = pid
        if exit_reason is not None:
            changes[_EXIT] = exit_reason
        if state == IDLE:
            changes[_IDLE_SINCE] = time.monotonic()
        self._update(changes)

    def begin(
        self,
        task_id: str,
        task_name: str,
        *,
        acks_late: bool,
        reject_on_worker_lost: bool,
        hard_deadline: float,
        info: dict[str, Any],
    ) -> None:
        """The child starts running a task (``hard_deadline``: monotonic, 0 for none)."""
        data = _fit(json.dumps(info, default=str), 1024)
        self._update(
            {
                _STATE: BUSY,
                _ACKS_LATE: int(acks_late),
                _REJECT_LOST: int(reject_on_worker_lost),
                _STARTED_WALL: time.time(),
                _STARTED: time.monotonic(),
                _DEADLINE: hard_deadline,
                _TASK_ID: _fit(task_id, 64),
                _TASK_NAME: _fit(task_name, 200),
                _INFO_LEN: len(data),
                _INFO: data,
            }
        )

    def end(self, processed: int) -> None:
        self._update(
            {
                _STATE: IDLE,
                _DEADLINE: 0.0,
                _PROCESSED: processed,
                _IDLE_SINCE: time.monotonic(),
                _TASK_ID: b"",
                _TASK_NAME: b"",
                _INFO_LEN: 0,
            }
        )

    def keep_message(self, task_id: str, data: bytes) -> None:
        """Keep the running task's raw message, so the supervisor can fail it properly."""
        if len(data) > MESSAGE_SIZE:
            data = b""
        _MESSAGE_HEAD.pack_into(self.buf, self._message, b"", 0)
        start = self._message + _MESSAGE_HEAD.size
        self.buf[start : start + len(data)] = data
        _MESSAGE_HEAD.pack_into(self.buf, self._message, _fit(task_id, 64), len(data))

    def kept_message(self, task_id: str) -> bytes | None:
        key, size = _MESSAGE_HEAD.unpack_from(self.buf, self._message)
        if not size or key.rstrip(b"\0") != _fit(task_id, 64):
            return None
        start = self._message + _MESSAGE_HEAD.size
        return bytes(self.buf[start : start + size])

    def set_leases(self, leases: list[tuple[str, int]]) -> None:
        """The broker owners this child holds, as ``(owner, ttl ms)`` (``worker/leases.py``)."""
        leases = list(leases)
        data = json.dumps(leases).encode()
        while len(data) > LEASES_SIZE:  # never in practice: a child holds one owner
            leases.pop()
            data = json.dumps(leases).encode()
        gen = _LEASES_HEAD.unpack_from(self.buf, self._leases)[0]
        _LEASES_HEAD.pack_into(self.buf, self._leases, gen + 1, 0)
        start = self._leases + _LEASES_HEAD.size
        self.buf[start : start + len(data)] = data
        _LEASES_HEAD.pack_into(self.buf, self._leases, gen + 2, len(data))

    def stop_requested(self) -> bool:
        return bool(self.buf[self._control])

    def kill_signal(self) -> int:
        return self.buf[self._control + 1]

    def pending_report(self) -> int:
        """The id of a report the supervisor asked for and has not been answered, or 0."""
        _, _, asked, answered = _CONTROL.unpack_from(self.buf, self._control)
        return asked if asked != answered else 0

    def write_report(self, request_id: int, report: dict[str, Any]) -> None:
        data = json.dumps(report, default=str).encode()
        if len(data) > REPORT_SIZE:
            report = {**report, "reserved": report.get("reserved", [])[:20], "truncated": True}
            data = json.dumps(report, default=str).encode()[:REPORT_SIZE]
        _REPORT_HEAD.pack_into(self.buf, self._report, len(data))
        self.buf[self._report + 4 : self._report + 4 + len(data)] = data
        stop, kill, asked, _ = _CONTROL.unpack_from(self.buf, self._control)
        _CONTROL.pack_into(self.buf, self._control, stop, kill, asked, request_id)

    # -- supervisor side ---------------------------------------------------------------
    def reset(self) -> None:
        """Clear the slot before a new child takes it."""
        _RUN.pack_into(self.buf, self.offset, *([0] * 11), b"", b"", 0, b"")
        _CONTROL.pack_into(self.buf, self._control, 0, 0, 0, 0)
        _MESSAGE_HEAD.pack_into(self.buf, self._message, b"", 0)
        _LEASES_HEAD.pack_into(self.buf, self._leases, 0, 0)

    def read(self) -> SlotState:
        values = _RUN.unpack_from(self.buf, self.offset)
        for _ in range(1000):  # a child writes a record in microseconds
            if not values[_GEN] % 2:
                again = _RUN.unpack_from(self.buf, self.offset)
                if again[_GEN] == values[_GEN]:
                    break
                values = again
            else:
                values = _RUN.unpack_from(self.buf, self.offset)
        info: dict[str, Any] = {}
        if values[_INFO_LEN]:
            try:
                info = json.loads(values[_INFO][: values[_INFO_LEN]])
            except ValueError:
                info = {}
        return SlotState(
            index=self.index,
            pid=values[_PID],
            state=values[_STATE],
            acks_late=bool(values[_ACKS_LATE]),
            reject_on_worker_lost=bool(values[_REJECT_LOST]),
            exit_reason=values[_EXIT],
            started_wall=values[_STARTED_WALL],
            started=values[_STARTED],
            hard_deadline=values[_DEADLINE],
            processed=values[_PROCESSED],
            idle_since=values[_IDLE_SINCE],
            task_id=_text(values[_TASK_ID]),
            task_name=_text(values[_TASK_NAME]),
            info=info,
        )

    def leases(self) -> list[tuple[str, int]]:
        """What :meth:`set_leases` wrote last (empty if a write never finished)."""
        for _ in range(1000):
            gen, size = _LEASES_HEAD.unpack_from(self.buf, self._leases)
            if gen % 2:
                continue
            start = self._leases + _LEASES_HEAD.size
            data = bytes(self.buf[start : start + size])
            if _LEASES_HEAD.unpack_from(self.buf, self._leases)[0] == gen:
                return [(str(owner), int(ttl)) for owner, ttl in json.loads(data)] if data else []
        return []

    def request_stop(self) -> None:
        self.buf[self._control] = 1

    def mark_kill(self, signum: int) -> None:
        self.buf[self._control + 1] = signum

    def request_report(self) -> int:
        stop, kill, asked, answered = _CONTROL.unpack_from(self.buf, self._control)
        asked = (asked % 0xFFFFFFF0) + 1
        _CONTROL.pack_into(self.buf, self._control, stop, kill, asked, answered)
        return asked

    def read_report(self, request_id: int) -> dict[str, Any] | None:
        _, _, _, answered = _CONTROL.unpack_from(self.buf, self._control)
        if answered != request_id:
            return None
        (size,) = _REPORT_HEAD.unpack_from(self.buf, self._report)
        try:
            return json.loads(self.buf[self._report + 4 : self._report + 4 + size])
        except ValueError:
            return None


class SharedState:
    """The whole map: ``capacity`` slots, the lost registry and the queue set."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._lost_offset = capacity * SLOT_SIZE
        self._queues_offset = self._lost_offset + LOST_ENTRIES * _LOST.size
        self.buf = mmap.mmap(-1, self._queues_offset + _QUEUES_HEAD.size + QUEUES_SIZE)
        self.slots = [Slot(self.buf, i, i * SLOT_SIZE) for i in range(capacity)]
        for slot in self.slots:
            slot.reset()
        self._next_lost = 0

    # -- lost registry (supervisor writes, children read) -------------------------------
    def record_lost(self, task_id: str) -> int:
        """Count one more death of a child running ``task_id``; return the new count."""
        key = _fit(task_id, 64)
        index, count = self._find_lost(key)
        if index is None:
            index, count = self._next_lost, 0
            self._next_lost = (self._next_lost + 1) % LOST_ENTRIES
        offset = self._lost_offset + index * _LOST.size
        gen = _LOST.unpack_from(self.buf, offset)[0]
        _LOST.pack_into(self.buf, offset, gen + 1, count, key)
        _LOST.pack_into(self.buf, offset, gen + 2, count + 1, key)
        return count + 1

    def lost_count(self, task_id: str) -> int:
        """How many children of this worker died running ``task_id`` (0: none known)."""
        return self._find_lost(_fit(task_id, 64))[1]

    def _find_lost(self, key: bytes) -> tuple[int | None, int]:
        size = _LOST.size
        for index in range(LOST_ENTRIES):
            offset = self._lost_offset + index * size
            gen, count, found = _LOST.unpack_from(self.buf, offset)
            if gen and not gen % 2 and found.rstrip(b"\0") == key:
                return index, count
        return None, 0

    # -- queue set (supervisor writes, children follow) ---------------------------------
    def set_queues(self, queues: list[str]) -> None:
        data = json.dumps(sorted(queues)).encode()[:QUEUES_SIZE]
        gen = _QUEUES_HEAD.unpack_from(self.buf, self._queues_offset)[0]
        start = self._queues_offset + _QUEUES_HEAD.size
        _QUEUES_HEAD.pack_into(self.buf, self._queues_offset, gen + 1, len(data))
        self.buf[start : start + len(data)] = data
        _QUEUES_HEAD.pack_into(self.buf, self._queues_offset, gen + 2, len(data))

    def queues_generation(self) -> int:
        return _QUEUES_HEAD.unpack_from(self.buf, self._queues_offset)[0]

    def queues(self) -> list[str]:
        while True:
            gen, size = _QUEUES_HEAD.unpack_from(self.buf, self._queues_offset)
            start = self._queues_offset + _QUEUES_HEAD.size
            data = bytes(self.buf[start : start + size])
            if not gen % 2 and _QUEUES_HEAD.unpack_from(self.buf, self._queues_offset)[0] == gen:
                return json.loads(data) if data else []
