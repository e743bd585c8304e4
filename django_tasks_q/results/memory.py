"""``memory://``: results in this process only, for tests and the eager mode.

Values go through the same JSON codec as the real stores, so a test sees exactly
the types a Redis or database store would give back. ``wait_for`` blocks on a
condition variable: no polling.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .base import (
    COALESCE_FIELDS,
    OVERWRITE_FIELDS,
    ChordReady,
    ResultStore,
    empty_meta,
    is_downgrade,
    missing_chord,
    wait_until_ready,
)
from .codec import dumps, loads


class MemoryStore(ResultStore):
    native_wait = True

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._results: dict[str, str] = {}
        self._groups: dict[str, list[str]] = {}
        self._chords: dict[str, dict[str, Any]] = {}
        self._cond = threading.Condition()

    def __repr__(self) -> str:
        return "<MemoryStore>"

    def clear(self) -> None:
        with self._cond:
            self._results.clear()
            self._groups.clear()
            self._chords.clear()

    def write_records(self, records: list[dict[str, Any]]) -> None:
        with self._cond:
            for record in records:
                raw = self._results.get(record["task_id"])
                current = loads(raw) if raw else empty_meta(record["task_id"])
                if raw and is_downgrade(current["status"], record["status"]):
                    continue
                for key in OVERWRITE_FIELDS:
                    current[key] = record[key]
                for key in COALESCE_FIELDS:
                    if record[key] is not None:
                        current[key] = record[key]
                self._results[record["task_id"]] = dumps(current)
            self._cond.notify_all()

    def get_task_meta(self, task_id: str) -> dict[str, Any]:
        raw = self._results.get(str(task_id))
        return loads(raw) if raw else empty_meta(str(task_id))

    def wait_for(
        self,
        task_id: str,
        timeout: float | None = None,
        interval: float = 0.5,
        on_message: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        with self._cond:  # woken by every write: no polling
            return wait_until_ready(
                task_id, lambda: self.get_task_meta(task_id), self._cond.wait, timeout, on_message
            )

    def forget(self, task_id: str) -> None:
        with self._cond:
            self._results.pop(str(task_id), None)

    def save_group(self, group_id: str, result_ids: list[str]) -> None:
        self._groups[group_id] = [str(i) for i in result_ids]

    def restore_group(self, group_id: str) -> list[str] | None:
        ids = self._groups.get(group_id)
        return None if ids is None else list(ids)

    def delete_group(self, group_id: str) -> None:
        self._groups.pop(group_id, None)

    def chord_init(self, group_id: str, total: int, body: dict, result_ids: list[str]) -> None:
        with self._cond:
            self._chords[group_id] = {
                "remaining": int(total),
                "body": loads(dumps(body)),
                "result_ids": [str(i) for i in result_ids],
                "counted": set(),
            }

    def chord_part_done(self, group_id: str, member_id: str | None = None) -> ChordReady | None:
        with self._cond:
            chord = self._chords.get(group_id)
            if chord is None:
                missing_chord(group_id)
                return None
            if member_id is not None:
                if str(member_id) in chord["counted"]:
                    return None
                chord["counted"].add(str(member_id))
            chord["remaining"] -= 1
            if chord["remaining"] != 0:
                return None
            return ChordReady(group_id, chord["body"], list(chord["result_ids"]))
