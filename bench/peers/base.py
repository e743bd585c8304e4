"""What every adapter knows: its venv, its services, and how to run its processes.

An adapter never imports its peer: the worker and the client run as
subprocesses in the peer's own venv (``bench/.peers/<name>/``), with the
peer-side code from ``bench/peers/side`` on PYTHONPATH.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .. import services

BENCH = Path(__file__).resolve().parents[1]
REPO = BENCH.parent
PEERS_DIR = BENCH / ".peers"
SIDE = BENCH / "peers" / "side"
VERSIONS = BENCH / "peers" / "versions.txt"


def read_versions() -> dict[str, list[str]]:
    """``versions.txt`` as {system: [requirement, ...]}."""
    pins: dict[str, list[str]] = {}
    for line in VERSIONS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            key, _, value = line.partition(":")
            pins[key.strip()] = value.split()
    return pins


def ensure_venv(name: str, log=print) -> Path:
    """Create ``bench/.peers/<name>`` and install its pins; skip when up to date."""
    pins = read_versions()
    requirements = pins[name]
    python = (pins.get("python") or ["3.11"])[0]
    venv = PEERS_DIR / name
    stamp = venv / ".bench-stamp"
    wanted = hashlib.sha256(" ".join(requirements).encode()).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == wanted:
        return venv
    if not (venv / "bin" / "python").exists():
        log(f"[setup] creating venv {venv} (python{python})")
        subprocess.run([f"python{python}", "-m", "venv", str(venv)], check=True)
    log(f"[setup] {name}: pip install {' '.join(requirements)}")
    subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *requirements,
        ],
        check=True,
    )
    freeze = subprocess.run(
        [str(venv / "bin" / "pip"), "freeze", "--disable-pip-version-check"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    (venv / "freeze.txt").write_text(freeze)
    stamp.write_text(wanted + "\n")
    return venv


@dataclass(frozen=True)
class Target:
    """One configuration of one system: its broker and where results go."""

    system: str
    broker: str  # redis | amqp | postgres | sqlite
    results: str  # off | redis | db

    @property
    def key(self) -> str:
        return f"{self.system}/{self.broker}/results-{self.results}"


class Adapter:
    """Base adapter. Subclasses set the class attributes and the command methods."""

    name: str = ""
    title: str = ""
    redis_db: int = 15
    pg_db: str | None = None
    table_prefixes: tuple[str, ...] = ()
    #: broker -> result modes this system supports there
    targets: dict[str, tuple[str, ...]] = {}
    has_bulk: bool = False
    #: results can be written after the task body returns (the harness then waits for them)
    results_async: bool = False
    #: how each system is configured, for the report
    notes: str = ""

    # -- environment ---------------------------------------------------------
    @property
    def venv(self) -> Path:
        return PEERS_DIR / self.name

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    @property
    def cwd(self) -> Path:
        return SIDE

    def queue(self, target: Target) -> str:
        return f"bench_{self.name}"

    def env(self, target: Target, concurrency: int) -> dict[str, str]:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("BENCH_", "DJANGO_SETTINGS"))
        }
        env.update(
            PYTHONPATH=str(SIDE),
            PYTHONUNBUFFERED="1",
            BENCH_BROKER={"postgres": "db", "sqlite": "db"}.get(target.broker, target.broker),
            BENCH_RESULTS=target.results,
            BENCH_REDIS_URL=services.redis_url(self.redis_db),
            BENCH_AMQP_URL=services.AMQP_URL,
            BENCH_PG_DB=self.pg_db or "",
            BENCH_QUEUE=self.queue(target),
            BENCH_CONCURRENCY=str(concurrency),
        )
        env.pop("VIRTUAL_ENV", None)
        return env

    # -- lifecycle -----------------------------------------------------------
    def setup(self, targets: list[Target], log=print) -> None:
        """Install the venv and prepare databases; idempotent."""
        ensure_venv(self.name, log)
        if self.pg_db and any(t.broker == "postgres" or t.results == "db" for t in targets):
            services.pg_create(self.pg_db)
            self.migrate(targets[0], log)

    def migrate(self, target: Target, log=print) -> None:
        """Create the peer's tables (Django peers run ``migrate``)."""

    def django(self, target: Target, *args: str, log=print) -> None:
        """Run a Django management command in the peer's venv (Django peers)."""
        cmd = [self.python, "-m", "django", *args]
        done = subprocess.run(
            cmd, cwd=self.cwd, env=self.env(target, 1), capture_output=True, text=True
        )
        if done.returncode:
            raise RuntimeError(f"{self.name}: {' '.join(args)} failed:\n{done.stderr[-3000:]}")

    def reset(self, target: Target) -> None:
        """Empty the queue, results and counter before a run."""
        services.flush_redis(self.redis_db)
        if self.pg_db and self.table_prefixes:
            services.pg_truncate(self.pg_db, self.table_prefixes)
        if target.broker == "amqp":
            services.amqp_purge(self.amqp_queues(target))

    def amqp_queues(self, target: Target) -> tuple[str, ...]:
        return (self.queue(target),)

    def worker_commands(self, target: Target, concurrency: int) -> list[list[str]]:
        raise NotImplementedError

    def client_command(self, target: Target) -> list[str]:
        raise NotImplementedError

    def count_results(self, target: Target) -> int | None:
        """Stored results of the counting task, or None when there is no cheap count."""
        return None
