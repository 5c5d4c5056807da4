"""`depthbench publish`: copy validated records from a local store into the published one, all or nothing.

Everything is checked before anything is written: every record of the source is read and validated (a damaged one
stops the publication), and a published record that differs is only overwritten with `replace`. Then, in three
steps:

1. stage: each file is written whole beside its destination under a hidden temporary name (same directory, so the
   rename below is atomic); an interrupt or an error here removes what was staged, and the store is as it was;
2. journal: the list of staged files is written (atomically) to `<store>/.publish-journal.json`: the commit point;
3. commit: the staged files are renamed over their destinations with SIGINT and SIGTERM held back (the renames take
   milliseconds), then the journal is removed. An interrupt then lands after the last rename.

If the process dies during the commit anyway (SIGKILL, power), the journal is still there and the next `publish`
(or `recover`) finishes those renames before doing anything else; temporary files of a publication that died before
its journal are removed. Readers of the store thus see the old records or the new ones, never a half-published
store.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.io import write_atomic
from benchmarks.store.locations import existing_store_problem, store_problem
from benchmarks.store.records import RecordError, load_record

JOURNAL = ".publish-journal.json"
STAGED_MARK = ".depthbench-staged-"  # staged files are `.<name>.depthbench-staged-<token>` beside their destination
SUITES = Path("benchmarks") / "suites.json"  # the pytest-benchmark report of `tox -e bench`


class PublishError(ValueError):
    """Nothing was published: damaged records, or published records that differ (the message lists them)."""


class PublishInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) during a publication; the message says whether it landed before or after the commit."""


@dataclass
class Plan:
    """What a publication copies (source, destination), and what it found on the way."""

    source: Path
    target: Path
    copies: list[tuple[Path, Path]] = field(default_factory=list)
    same: int = 0  # records already published, byte for byte
    notes: list[str] = field(default_factory=list)  # things worth saying about copied records
    suites: bool = False  # whether the suites' report is among the copies


def plan(source: Path, target: Path, *, protocol_hashes: Collection[str] | None = None, replace: bool = False,
         current_hashes: Iterable[str] = ()) -> Plan:
    """Check everything and list the copies; raises PublishError (or ValueError for bad stores) having written
    nothing. `protocol_hashes` keeps only the records of those (tier, task) hashes; `current_hashes` are the tiers'
    current ones (a record of another hash is published with a note)."""
    source, target = Path(source), Path(target)
    problem = existing_store_problem(source) or store_problem(target)
    if problem:
        raise ValueError(problem)
    if source.resolve() == target.resolve():
        raise ValueError(f"--from and --to are the same store ({source})")
    current = set(current_hashes)
    result, damaged, conflicts = Plan(source, target), [], []
    for path in sorted(source.glob("*/*/*/seed*.json")):
        try:
            record = load_record(path, source)
        except RecordError as error:
            damaged.append(str(error))
            continue
        if protocol_hashes is not None and record.protocol["hash"] not in protocol_hashes:
            continue
        dest = target / path.relative_to(source)
        if dest.exists() and dest.read_bytes() == path.read_bytes():
            result.same += 1
            continue
        if dest.exists() and not replace:
            conflicts.append(str(dest))
            continue
        result.copies.append((path, dest))
        if current and record.protocol["hash"] not in current:
            result.notes.append(f"{dest} is of protocol hash {record.protocol['hash']}, no current tier's")
        if record.provenance.get("git_dirty"):
            result.notes.append(f"{dest} was made from a modified checkout (git_dirty)")
    if damaged:
        raise PublishError("damaged records, nothing published (fix or delete them, or rerun `depthbench run`, "
                           "which redoes them):\n  " + "\n  ".join(damaged))
    if conflicts:
        raise PublishError("these published records differ from the local ones; nothing published (`--replace` "
                           "overwrites them):\n  " + "\n  ".join(conflicts))
    if (source / SUITES).is_file() and (source / SUITES).read_bytes() != _bytes(target / SUITES):
        result.copies.append((source / SUITES, target / SUITES))
        result.suites = True
    return result


def _bytes(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def publish(planned: Plan) -> int:
    """Carry out `planned` all or nothing (see the module docstring); returns the number of files copied."""
    target = planned.target
    recover(target)
    token = secrets.token_hex(4)
    staged: list[tuple[Path, Path]] = []
    made: list[Path] = []  # directories this publication created, removed again if it is abandoned
    try:
        if not target.exists():
            target.mkdir(parents=True)
            made.append(target)
        for src, dest in planned.copies:
            made += _make_parents(dest.parent, target)
            tmp = dest.with_name(f".{dest.name}{STAGED_MARK}{token}")
            staged.append((tmp, dest))
            _copy(src, tmp)
        write_atomic(target / JOURNAL, json.dumps(
            [[str(t.relative_to(target)), str(d.relative_to(target))] for t, d in staged], indent=0) + "\n")
    except BaseException as error:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        for folder in reversed(made):
            _remove_if_empty(folder)
        if isinstance(error, KeyboardInterrupt):
            raise PublishInterrupted(f"publishing interrupted before anything was published; {target} is as it "
                                     "was (run `depthbench publish` again)") from None
        raise
    with _signals_held() as held:
        _commit(target, staged)
    if signal.SIGINT in held:
        raise PublishInterrupted(f"interrupted once publishing was complete: all {len(staged)} files are in "
                                 f"{target}")
    return len(staged)


def recover(target: Path) -> int:
    """Finish the commit of a publication that died during it (its journal is still there), and remove files staged
    by one that died before its commit; returns the number of renames finished."""
    target = Path(target)
    journal = target / JOURNAL
    done = 0
    if journal.is_file():
        pairs = [(target / tmp, target / dest) for tmp, dest in json.loads(journal.read_text(encoding="utf-8"))]
        with _signals_held() as held:
            done = _commit(target, pairs)
        if signal.SIGINT in held:
            raise PublishInterrupted(f"interrupted after finishing the publication an earlier `depthbench publish` "
                                     f"left part-done in {target} ({done} files)")
    if target.is_dir():
        for leftover in _staged_files(target):
            leftover.unlink(missing_ok=True)
    return done


def _commit(target: Path, pairs: list[tuple[Path, Path]]) -> int:
    done = 0
    for tmp, dest in pairs:
        if tmp.exists():  # a rename done before a crash is not redone
            os.replace(tmp, dest)
            done += 1
    (target / JOURNAL).unlink(missing_ok=True)
    return done


def _staged_files(target: Path) -> Iterator[Path]:
    for path in target.rglob(f".*{STAGED_MARK}*"):
        if path.is_file():
            yield path


def _copy(src: Path, dest: Path) -> None:
    with open(src, "rb") as reader, open(dest, "wb") as writer:
        writer.write(reader.read())
        writer.flush()
        os.fsync(writer.fileno())
    os.chmod(dest, 0o644)


def _make_parents(folder: Path, root: Path) -> list[Path]:
    """Create `folder` (below `root`) and return the directories that did not exist, outermost first."""
    missing = []
    while not folder.exists() and folder != root and root in folder.parents:
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir()
    return list(reversed(missing))


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


@contextmanager
def _signals_held() -> Iterator[list[int]]:
    """Hold SIGINT and SIGTERM back for the block (the list gets the signals that arrived), then deliver them: a
    SIGTERM is re-raised with its previous handler, a SIGINT is left to the caller (`publish` raises
    PublishInterrupted). Only the main thread can set handlers; elsewhere the block runs unprotected."""
    held: list[int] = []
    wanted = (signal.SIGINT, signal.SIGTERM)
    try:
        previous = {number: signal.signal(number, lambda number, frame: held.append(number)) for number in wanted}
    except ValueError:  # not the main thread
        yield held
        return
    try:
        yield held
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if signal.SIGTERM in held:
            os.kill(os.getpid(), signal.SIGTERM)
