"""Atomic file output: readers see the old file or the whole new one, never a part.

Its own module at the bottom of the package because records, task caches, tables, plots and the page all write this
way, and none of them should import the record store just for it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds it replaces `path` in one step.

    Readers see either the old file or the whole new one, never a part; a failed write leaves no debris.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; records, caches and tables are meant to be read by others
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (see `atomic_output`)."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
