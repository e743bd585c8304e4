"""``tasks_q inspect ...`` and ``tasks_q status``: asking live workers."""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import Any

from django.utils import timezone

from .base import EX_UNAVAILABLE, Context, count_of, failure, one_line, positive

INSPECT_METHODS = ("active", "reserved", "scheduled", "registered", "stats", "ping", "revoked")


def _control() -> Any:
    from ..control import control

    return control


def _control_error() -> type[Exception]:
    from ..control import ControlError

    return ControlError


def add_worker_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-d", "--destination", action="append", metavar="HOSTNAME",
        help="Only ask this worker (repeat, or comma-separate, for several).",
    )  # fmt: skip
    parser.add_argument(
        "-t", "--timeout", type=float, default=1.0,
        help="Seconds to wait for replies (default 1.0).",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", dest="as_json", help="Print JSON.")


class InspectCommand:
    name = "inspect"
    help = "Ask live workers what they are doing: " + "|".join(INSPECT_METHODS)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("method", choices=INSPECT_METHODS, help="What to ask.")
        add_worker_options(parser)

    def handle(self, ctx: Context, options: dict[str, Any]) -> None:
        method = options["method"]
        timeout = positive("--timeout", options["timeout"])
        destination = _destination(options.get("destination"))
        inspector = _control().inspect(destination=destination, timeout=timeout)
        try:
            replies = getattr(inspector, method)()
        except _control_error() as exc:
            raise failure(str(exc)) from None
        if options["as_json"]:
            ctx.json(replies)
        else:
            for hostname in sorted(replies):
                _print_reply(ctx, method, hostname, replies[hostname])
        if not replies:
            raise failure(f"No workers replied within {timeout}s.", EX_UNAVAILABLE)
        if not options["as_json"]:
            ctx.out(f"{count_of(len(replies), 'worker')} replied.")


def _destination(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    return names or None


def _print_reply(ctx: Context, method: str, hostname: str, reply: Any) -> None:
    if isinstance(reply, dict) and set(reply) == {"error"}:
        ctx.out(f"{hostname}: ERROR {reply['error']}")
        return
    if method == "ping":
        ok = reply.get("ok") if isinstance(reply, dict) else reply
        ctx.out(f"{hostname}: {ok}")
        return
    if isinstance(reply, list):
        ctx.out(f"{hostname}: {len(reply)} {method}")
        for item in reply:
            ctx.out(f"  - {_describe(item)}")
        return
    ctx.out(f"{hostname}:")
    if isinstance(reply, dict):
        for key in sorted(reply):
            ctx.out(f"  {key}: {one_line(reply[key])}")
    else:
        ctx.out(f"  {one_line(reply)}")


def _describe(item: Any) -> str:
    if isinstance(item, dict):
        inner = item.get("request")
        request = inner if isinstance(inner, dict) else item
        name, task_id = request.get("name") or request.get("task"), request.get("id")
        if name or task_id:
            text = f"{name}[{task_id}]"
            if "args" in request or "kwargs" in request:
                text += f" args={one_line(request.get('args'), 80)} kwargs={one_line(request.get('kwargs'), 80)}"
            if item.get("eta"):
                text += f" eta={item['eta']}"
            return text
    return one_line(item)


class StatusCommand:
    name = "status"
    help = "Live workers: heartbeat rows seen within HEARTBEAT_TIMEOUT, and a ping."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_worker_options(parser)

    def handle(self, ctx: Context, options: dict[str, Any]) -> None:
        from ..conf import settings
        from ..control import flatten_replies
        from ..models import WorkerHeartbeat

        timeout = positive("--timeout", options["timeout"])
        destination = _destination(options.get("destination"))
        now = timezone.now()
        limit = float(settings.HEARTBEAT_TIMEOUT)
        rows = WorkerHeartbeat.objects.filter(
            last_seen__gte=now - timedelta(seconds=limit)
        ).order_by("hostname", "pid")
        if destination:
            rows = rows.filter(hostname__in=destination)
        rows = list(rows)
        ping_error = None
        try:
            pongs = flatten_replies(_control().ping(destination=destination, timeout=timeout))
        except _control_error() as exc:
            pongs, ping_error = {}, str(exc)
        workers = _status_rows(rows, pongs, now)
        if options["as_json"]:
            ctx.json({"workers": workers, "ping_error": ping_error})
        else:
            for w in workers:
                ctx.out(_status_line(w))
            if ping_error:
                ctx.warn(f"Ping failed: {ping_error}")
        if not workers:
            raise failure(
                f"No workers are alive: no heartbeat in the last {limit:g}s and no reply to ping "
                f"within {timeout}s.",
                EX_UNAVAILABLE,
            )
        if not options["as_json"]:
            alive = len({w["hostname"] for w in workers})
            ctx.out(f"{count_of(alive, 'worker')} alive.")


def _status_rows(rows: list[Any], pongs: dict[str, Any], now: Any) -> list[dict[str, Any]]:
    workers = []
    for row in rows:
        workers.append({
            "hostname": row.hostname,
            "pid": row.pid,
            "queues": row.queues,
            "concurrency": row.concurrency,
            "last_seen_seconds": round((now - row.last_seen).total_seconds(), 1),
            "ping": _pong(pongs.get(row.hostname)),
        })  # fmt: skip
    seen = {r.hostname for r in rows}
    for hostname in sorted(set(pongs) - seen):
        workers.append({
            "hostname": hostname, "pid": None, "queues": None, "concurrency": None,
            "last_seen_seconds": None, "ping": _pong(pongs[hostname]),
        })  # fmt: skip
    return workers


def _pong(reply: Any) -> str | None:
    if reply is None:
        return None
    return str(reply.get("ok") or reply) if isinstance(reply, dict) else str(reply)


def _status_line(w: dict[str, Any]) -> str:
    parts = []
    if w["pid"] is not None:
        parts.append(f"pid {w['pid']}")
    if w["queues"]:
        parts.append(f"queues {','.join(map(str, w['queues']))}")
    if w["concurrency"] is not None:
        parts.append(f"concurrency {w['concurrency']}")
    if w["last_seen_seconds"] is not None:
        parts.append(f"heartbeat {w['last_seen_seconds']:g}s ago")
    else:
        parts.append("no heartbeat row")
    ping = w["ping"] or "no reply"
    return f"{w['hostname']}: OK ({', '.join(parts)}); ping: {ping}"
