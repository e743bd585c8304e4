"""Workflow primitives: ``chain``, ``group``, ``chord``, ``xmap``, ``xstarmap``, ``chunks``.

Each is a :class:`~django_tasks_q.canvas.Signature` (a dict in Celery's form) that
knows how to apply itself; :data:`SIGNATURE_TYPES` maps ``subtask_type`` to the
class, so :func:`~django_tasks_q.canvas.signature_from_dict` rebuilds any of them.
"""

from __future__ import annotations

from ..canvas import Signature
from .chains import chain
from .chords import chord
from .completion import on_chord_part_return, propagate_chain_failure
from .compose import compose
from .groups import group
from .maps import chunks, xmap, xstarmap

SIGNATURE_TYPES: dict[str, type[Signature]] = {
    "chain": chain,
    "group": group,
    "chord": chord,
    "xmap": xmap,
    "xstarmap": xstarmap,
    "chunks": chunks,
}

__all__ = [
    "SIGNATURE_TYPES",
    "chain",
    "chord",
    "chunks",
    "compose",
    "group",
    "on_chord_part_return",
    "propagate_chain_failure",
    "xmap",
    "xstarmap",
]
