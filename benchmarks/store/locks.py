"""One process per run: a lock file beside the record, so that two `depthbench run`s on one store share the work.

`seed<N>.lock` (beside `seed<N>.json`; no record glob matches it) is held with an exclusive `flock` by the process
doing that run, and says who it is (pid, host, since when). A second process cannot take it: it skips that run and
says which process has it. The kernel drops a flock when its process ends in any way (SIGKILL and crashes
included), so a lock left behind by a dead process is stale by construction and is simply taken by the next run,
which resumes from the checkpoint; no guess from pids or ages is needed. (On NFS, Linux clients map flock to the
server's byte-range locks, so processes on several hosts sharing a store exclude each other too.)

The classic race of lock files, where one process removes the file that another has just opened, is closed the usual
way: a process that got the lock checks that the path still names the file it locked, else it tries again.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


def lock_path(record: Path) -> Path:
    """The lock of the run whose record is `record`: `seed<N>.lock` beside it."""
    return Path(record).with_name(f"{Path(record).stem}.lock")


class RunLock:
    """The lock of one run: `acquire()` says whether this process now holds it; if not, `holder` says who does."""

    def __init__(self, record: Path) -> None:
        self.path = lock_path(record)
        self.holder: dict[str, Any] = {}
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                self.holder = read_holder(self.path)
                return False
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:  # released (and removed) by its holder between our open and our flock
                same = False
            if not same:
                os.close(fd)
                continue
            self.holder = {"pid": os.getpid(), "host": socket.gethostname(),
                           "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(self.holder).encode())
            self._fd = fd
            return True

    def release(self) -> None:
        """Remove the lock file, then let go of it (in this order, so that nobody locks a file on its way out)."""
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None

    def describe(self) -> str:
        """Who holds the lock, for messages."""
        h = self.holder
        return f"process {h.get('pid', '?')} on {h.get('host', '?')} (since {h.get('since', '?')}; lock {self.path})"


def read_holder(path: Path) -> dict[str, Any]:
    """What a lock file says of its holder ({} when it says nothing yet)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def is_locked(record: Path) -> bool:
    """Whether some process holds the lock of the run whose record is `record` (for `depthbench status`)."""
    path = lock_path(record)
    if not path.exists():
        return False
    lock = RunLock(record)
    if lock.acquire():
        lock.release()
        return False
    return True
