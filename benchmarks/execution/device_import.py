"""`depthbench device import ARCHIVE...`: a GPU session's archive into the local store, every record validated.

Only `results/<task>/<hash>/<model>/seed<N>.json` members are read (never extracted by name: no path of the
archive decides where a file lands); each must be a valid record (benchmarks/store/records.py) whose content
matches where it lies. Each record is then new (written atomically), a duplicate (the same bytes are there
already), a conflict (another record of that run is there: kept, unless `replace`) or invalid (reported, not
written). The session's `session.json` and logs go to `local/gpu-sessions/<archive name>/`, where
`depthbench device cost --measured` reads the phase timings that correct the cost model. Records of several sessions
accumulate in the store like any others; `depthbench publish` + `depthbench leaderboard` then publish them.
"""

from __future__ import annotations

import json
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from benchmarks.io import write_atomic
from benchmarks.protocols import current_hashes
from benchmarks.store.records import Record, record_path

SESSIONS = Path("local/gpu-sessions")
SESSION_FILES = ("session.json", "session.log", "wrapper.log", "device.json", "child.json")
MEMBER = re.compile(r"results/([^/]+)/([0-9a-f]+)/([^/]+)/seed(\d+)\.json")


@dataclass
class Imported:
    new: list[str] = field(default_factory=list)
    duplicate: list[str] = field(default_factory=list)
    conflict: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)  # "member: why"
    not_current: list[str] = field(default_factory=list)  # records of a protocol hash no current tier has
    sessions: list[Path] = field(default_factory=list)

    def text(self) -> str:
        lines = [f"depthbench: imported {len(self.new)} new records, {len(self.duplicate)} already there, "
                 f"{len(self.conflict)} conflicting, {len(self.invalid)} invalid"]
        lines += [f"  new: {name}" for name in self.new]
        lines += [f"  CONFLICT (kept the store's; --replace overwrites): {name}" for name in self.conflict]
        lines += [f"  INVALID (not imported): {why}" for why in self.invalid]
        lines += [f"  note: {name} is of a protocol hash no current tier has" for name in self.not_current]
        lines += [f"  session files: {path}" for path in self.sessions]
        return "\n".join(lines)


def import_archive(archive: Path, results: Path, *, sessions: Path = SESSIONS, replace: bool = False,
                   into: Imported | None = None) -> Imported:
    """Import one archive (see the module docstring); `into` accumulates over several archives."""
    report = into or Imported()
    current = current_hashes()
    try:
        tar = tarfile.open(archive, "r:*")
    except (OSError, tarfile.TarError) as error:
        raise ValueError(f"{archive} is not a readable session archive ({error})") from None
    with tar:
        for member in tar:
            name = member.name[2:] if member.name.startswith("./") else member.name
            if member.isfile() and PurePosixPath(name).name in SESSION_FILES and "/" not in name:
                folder = Path(sessions) / Path(archive).name.removesuffix(".tar.gz")
                write_atomic(folder / name, tar.extractfile(member).read().decode("utf-8", "replace"))
                if folder not in report.sessions:
                    report.sessions.append(folder)
                continue
            if not name.startswith("results/") or member.isdir():
                continue
            match = MEMBER.fullmatch(name)
            if not member.isfile() or match is None or {".", ".."} & set(match.groups()):
                report.invalid.append(f"{name}: not a record file (results/<task>/<hash>/<model>/seed<N>.json)")
                continue
            data = tar.extractfile(member).read()
            try:
                record = Record.from_json(json.loads(data))
            except (ValueError, TypeError) as error:
                report.invalid.append(f"{name}: {error}")
                continue
            target = record_path(results, record.model, record.task, record.protocol["hash"], record.seed)
            if target.relative_to(results).as_posix() != name.removeprefix("results/"):
                report.invalid.append(f"{name}: holds the record of {record.task}/{record.protocol['hash']}/"
                                      f"{record.model}/seed{record.seed}")
                continue
            if record.protocol["hash"] not in current:
                report.not_current.append(name)
            if target.exists() and target.read_bytes() == data:
                report.duplicate.append(name)
            elif target.exists() and not replace:
                report.conflict.append(name)
            else:
                write_atomic(target, data.decode("utf-8"))
                report.new.append(name)
    return report
