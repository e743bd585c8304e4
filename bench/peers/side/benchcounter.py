"""The completion counter every bench task calls (runs inside each peer's venv).

One Lua call per task, so it costs every system the same single Redis round trip:

* ``bench:n``     INCR per task;
* ``bench:first`` the caller's clock at the start of the first task;
* ``bench:last``  Redis's clock when the latest task finished.

Only redis-py is needed, so the same file serves every peer.
"""

from __future__ import annotations

import os
import time

_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('SET', KEYS[2], ARGV[1]) end
local t = redis.call('TIME')
redis.call('SET', KEYS[3], t[1] .. '.' .. string.format('%06d', tonumber(t[2])))
return n
"""
KEYS = ("bench:n", "bench:first", "bench:last")

_state: dict = {"pid": None, "script": None}


def _script():
    if _state["pid"] != os.getpid():
        import redis

        client = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
        _state["script"] = client.register_script(_SCRIPT)
        _state["pid"] = os.getpid()
    return _state["script"]


def hit() -> int:
    """Count one finished task; call it first thing in the task body."""
    started = time.time()
    return int(_script()(keys=list(KEYS), args=[repr(started)]))
