"""``--pidfile``: refuse to start twice, and clean up on exit."""

from __future__ import annotations

import os


class PidfileError(RuntimeError):
    pass


class Pidfile:
    def __init__(self, path: str) -> None:
        self.path = path

    def acquire(self) -> None:
        try:
            with open(self.path) as f:
                other = int(f.read().strip() or 0)
        except FileNotFoundError:
            other = 0
        except (OSError, ValueError):
            other = 0
        if other and other != os.getpid() and _alive(other):
            raise PidfileError(
                f"Pidfile {self.path} names process {other}, which is running: is another worker "
                "using it? Stop it, or give this worker its own --pidfile."
            )
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{os.getpid()}\n")
        os.replace(tmp, self.path)

    def release(self) -> None:
        try:
            with open(self.path) as f:
                if int(f.read().strip() or 0) != os.getpid():
                    return
            os.unlink(self.path)
        except (OSError, ValueError):
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
