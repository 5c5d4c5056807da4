"""Atomic file output: readers see the old file or the whole new one, never a part.

Its own module at the bottom of the package because records, task caches, tables, plots and the page all write this
way, and none of them should import the record store just for it.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
# torch.save to a path writes through its own C++ writer, which reports a short write (the disk filled up) as this
# RuntimeError, without an errno: "[enforce fail at inline_container.cc:...] . unexpected pos 704 vs 598".
TORCH_SHORT_WRITE = ("inline_container.cc", "unexpected pos")


class DiskFullError(OSError):
    """A file could not be written because its disk (or the user's quota) is full; the message names the file."""

    def __str__(self) -> str:
        return str(self.strerror)


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` means that the disk or quota is full: an OSError with ENOSPC / EDQUOT, or torch's short write."""
    if isinstance(error, OSError):
        return error.errno in DISK_FULL
    return isinstance(error, RuntimeError) and all(part in str(error) for part in TORCH_SHORT_WRITE)


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds it replaces `path` in one step.

    Readers see either the old file or the whole new one, never a part; a failed write leaves no debris. A write
    that fails for a full disk raises DiskFullError naming `path`, whatever wrote it (Python or torch).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        if is_disk_full(error):
            raise DiskFullError(error.errno, _full(path, error)) from None
        raise
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; records, caches and tables are meant to be read by others
        os.replace(tmp, path)
    except (OSError, RuntimeError) as error:
        if is_disk_full(error) and not isinstance(error, DiskFullError):
            raise DiskFullError(errno.ENOSPC, _full(path, error)) from None
        raise
    finally:
        Path(tmp).unlink(missing_ok=True)


def _full(path: Path, error: BaseException) -> str:
    cause = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return (f"disk full: cannot write {path} ({cause}); free space there (or choose another --results, or "
            "DEPTHBENCH_CACHE for the cache) and rerun the same command: what was saved before is kept")


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (see `atomic_output`)."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
