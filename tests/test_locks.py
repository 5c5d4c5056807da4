"""Two `depthbench run`s on one store share the work: a run whose lock another process holds is skipped and named,
and a lock whose process died is taken over (benchmarks/store/locks.py). The other process is real: a child that
takes a lock and says so; every wait is on its output or its exit, never a fixed delay."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from benchmarks.cli import main
from benchmarks.execution import runner, runs
from benchmarks.execution.status import run_states
from benchmarks.protocols import SMOKE
from benchmarks.store.locks import RunLock, is_locked, lock_path
from benchmarks.store.records import record_path

HOLD = """
import sys
from benchmarks.store.locks import RunLock
lock = RunLock(sys.argv[1])
print("locked" if lock.acquire() else "refused", flush=True)
sys.stdin.read()  # hold it until the test closes our stdin (or kills us)
lock.release()
"""


@pytest.fixture
def holder() -> Iterator:
    """Start a process that takes the lock of a record and keeps it; the test ends it (or kills it)."""
    children = []

    def start(record: Path) -> subprocess.Popen:
        child = subprocess.Popen([sys.executable, "-c", HOLD, str(record)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1],
                                 env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
        children.append(child)
        assert child.stdout.readline().strip() == "locked"  # waits for the child, however loaded the machine is
        return child

    yield start
    for child in children:
        if child.poll() is None:
            child.kill()
        child.wait()


def test_a_lock_is_exclusive_named_and_dropped_when_its_process_dies(tmp_path, holder) -> None:
    record = tmp_path / "digits/h/resnet/seed0.json"
    child = holder(record)
    lock = RunLock(record)
    assert not lock.acquire() and lock.holder["pid"] == child.pid
    assert f"process {child.pid} on" in lock.describe() and str(lock_path(record)) in lock.describe()
    assert is_locked(record)
    child.send_signal(signal.SIGKILL)  # no chance to release: the kernel drops its flock
    child.wait()
    assert lock_path(record).exists() and not is_locked(record)  # the file is left, the lock is not
    assert lock.acquire() and lock.holder["pid"] == os.getpid()
    lock.release()
    assert not lock_path(record).exists()


def test_a_second_run_skips_what_another_process_is_running_and_says_so(repo, fake_runs, holder, capsys) -> None:
    busy = record_path(Path("local/results"), "resnet", "digits", SMOKE.task_hash("digits"), 0)
    child = holder(repo / busy)
    assert main(["run", "--tier", "smoke", "--models", "resnet,anode", "--tasks", "digits", "--no-progress",
                 "--no-leaderboard"]) == 3  # left undone here: rerun once the other process is done
    err = capsys.readouterr().err
    assert fake_runs["calls"] == [("digits", "anode", 0)]
    assert f"skipping digits resnet seed 0: process {child.pid} on" in err
    assert "1 runs were left to other processes" in err
    states = run_states(SMOKE, repo / "local/results", ["resnet", "anode"], ["digits"], [0], queue={})
    assert states == {("resnet", "digits", 0): "running", ("anode", "digits", 0): "done"}
    child.stdin.close()  # the other process finishes (without a record here); the same command then does the run
    assert child.wait() == 0
    assert main(["run", "--tier", "smoke", "--models", "resnet,anode", "--tasks", "digits", "--no-progress",
                 "--no-leaderboard"]) == 0
    assert fake_runs["calls"][-1] == ("digits", "resnet", 0) and not lock_path(repo / busy).exists()


def test_locks_are_released_when_a_run_fails_or_is_interrupted(tmp_path, monkeypatch) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "run_one", interrupted)
    with pytest.raises(KeyboardInterrupt):
        runner.run_tier(SMOKE, models=["resnet"], tasks=["digits"], results_dir=tmp_path, check_models=False,
                        device=torch.device("cpu"), progress=False)
    assert not list(tmp_path.rglob("*.lock"))
