"""Flame graphs of our worker draining a full queue, with py-spy.

    .venv/bin/python -m bench.profile_worker                       # redis, results off and on
    .venv/bin/python -m bench.profile_worker --only redis-off -n 20000
    .venv/bin/python -m bench.profile_worker --out /tmp/profiles    # somewhere else

For each configuration: queue ``-n`` of the suite's counting no-op (``bench.noop``:
one Redis call per task, as for every peer), then run ``runworker -P prefork -c 2
--burst`` under ``py-spy record --subprocesses`` until the queue is empty. Writes
``<out>/worker-<config>.svg`` (a flame graph: open it in a browser) and prints the
frames that take the largest share of the samples of the consuming children, so the
figures can be quoted without opening the picture.

Needs ``py-spy`` in the repo's .venv (``.venv/bin/pip install py-spy``) and Redis on
loopback; uses Redis database 9 and a scratch SQLite file.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REDIS = "redis://127.0.0.1:6379/9"
CONFIGS = {
    "redis-off": {"TQ_BROKER_URL": REDIS, "TQ_RESULT_BACKEND": REDIS, "IGNORE": "1"},
    "redis-redis": {"TQ_BROKER_URL": REDIS, "TQ_RESULT_BACKEND": REDIS, "IGNORE": "0"},
}
FILL = """
import django, os
django.setup()
from bench.tasks_q_bench.tasks import noop
noop.apply_async_many([((), {})] * int(os.environ["N"]), ignore_result=os.environ["IGNORE"] == "1")
"""


def environment(config: dict[str, str], sqlite: str, n: int) -> dict[str, str]:
    return {
        **os.environ,
        **config,
        "N": str(n),
        "PYTHONPATH": f"{REPO}:{REPO / 'bench' / 'peers' / 'side'}",
        "DJANGO_SETTINGS_MODULE": "testproject.settings",
        "TQ_EXTRA_APPS": "bench.tasks_q_bench",
        "TQ_DATABASE": "sqlite",
        "SQLITE_PATH": sqlite,
        "REDIS_URL": REDIS,
        "BENCH_REDIS_URL": REDIS,
        "DJANGO_DEBUG": "0",
        "TQ_LOGLEVEL": "WARNING",
    }


def top_frames(raw: Path, limit: int = 25) -> list[tuple[float, str]]:
    """Inclusive share of each function over the samples of the consuming children."""
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not any("Engine._loop" in frame for frame in frames):
            continue  # the supervisor and start-up
        total += int(count)
        for name in {frame.split(" (")[0] for frame in frames if "(" in frame}:
            inclusive[name] += int(count)
    return [(100 * n / total, name) for name, n in inclusive.most_common(limit)] if total else []


def profile(name: str, n: int, out: Path, python: str, py_spy: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env = environment(CONFIGS[name], str(Path(tmp) / "db.sqlite3"), n)
        manage = [python, "manage.py"]
        subprocess.run([*manage, "migrate", "-v0"], cwd=REPO, env=env, check=True)
        worker = [*manage, "runworker", "-P", "prefork", "-c", "2", "-Q", "bench_tq", "--burst",
                  "-l", "WARNING"]  # fmt: skip
        results = {"flamegraph": out / f"worker-{name}.svg", "raw": Path(tmp) / "stacks.txt"}
        for fmt, path in results.items():
            subprocess.run(["redis-cli", "-n", "9", "flushdb"], check=True, capture_output=True)
            subprocess.run([python, "-c", FILL], cwd=REPO, env=env, check=True)
            subprocess.run(
                [py_spy, "record", "--subprocesses", "--rate", "250", "--format", fmt,
                 "-o", str(path), "--", *worker],
                cwd=REPO, env=env, check=True, capture_output=True,
            )  # fmt: skip
        print(f"\n== {name}: {n:,} tasks, -c 2 prefork -> {results['flamegraph']}")
        for share, frame in top_frames(results["raw"]):
            print(f"{share:5.1f}%  {frame}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20_000, help="tasks per profile")
    parser.add_argument("--only", default=",".join(CONFIGS), help="comma-separated configs")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "profiles")
    args = parser.parse_args()
    python = str(REPO / ".venv" / "bin" / "python")
    py_spy = shutil.which("py-spy", path=str(REPO / ".venv" / "bin")) or shutil.which("py-spy")
    if py_spy is None:
        sys.exit("py-spy is not installed: .venv/bin/pip install py-spy")
    unknown = set(args.only.split(",")) - set(CONFIGS)
    if unknown:
        sys.exit(f"unknown config(s) {sorted(unknown)}; choose from {sorted(CONFIGS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only.split(","):
        profile(name, args.n, args.out, python, py_spy)


if __name__ == "__main__":
    main()
