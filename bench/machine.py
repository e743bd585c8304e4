"""What the report says about the machine and the software measured."""

from __future__ import annotations

import os
import platform
from typing import Any

from . import services


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    import psutil

    return psutil.virtual_memory().total / 2**30


def _service_versions() -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        out["redis"] = services.redis_client(0).info("server")["redis_version"]
    except Exception as exc:
        out["redis"] = f"unavailable ({exc})"
    try:
        with services.pg_connect() as conn:
            out["postgresql"] = conn.execute("SHOW server_version").fetchone()[0]
    except Exception as exc:
        out["postgresql"] = f"unavailable ({exc})"
    try:
        import amqp

        conn = amqp.Connection(host="127.0.0.1:5672")
        conn.connect()
        out["rabbitmq"] = conn.server_properties.get("version", "?")
        conn.close()
    except Exception as exc:
        out["rabbitmq"] = f"unavailable ({exc})"
    return out


def describe(adapters: dict[str, Any]) -> dict[str, Any]:
    from .peers.base import read_versions

    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(_memory_gib(), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "services": _service_versions(),
        "versions": {k: " ".join(v) for k, v in read_versions().items()},
        "notes": {name: a.notes for name, a in adapters.items()},
        "titles": {name: a.title for name, a in adapters.items()},
    }
