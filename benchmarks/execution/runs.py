"""One run and its bookkeeping: what every executor (benchmarks/execution/executors.py, slurm.py) shares.

A `Job` is one (task, model, seed) to run, with the path of its record; `RunSettings` are the settings common to
every job of a call. `run_one` trains and measures one model (any exception becomes a failed record), `record_run`
writes its record atomically and drops its training checkpoint. A `RunBook` keeps the account of a call (its
`RunSummary`: written, skipped, failed, busy, postponed, phase seconds), the progress bar and the locks of the runs
in flight, and decides which job starts when (`RunBook.admitted`: time budget, admission rule, another process's
lock).
"""

from __future__ import annotations

import math
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

import zoo
from benchmarks.data.tasks import DataMissingError, Task, TaskData
from benchmarks.evaluation.phases import measure
from benchmarks.evaluation.timing import PhaseTimer
from benchmarks.execution.progress import Progress
from benchmarks.io import DiskFullError
from benchmarks.protocols import Protocol, recipe_for
from benchmarks.store.locks import RunLock
from benchmarks.store.provenance import model_source, now, run_provenance
from benchmarks.store.records import Record, RecordError, load_record, save_record
from benchmarks.training.checkpoint import TrainingCheckpoint
from benchmarks.training.train import TrainingDiverged, TrainResult, seed_everything, train
from zoo import contract

clock = time.monotonic  # the time budget's clock (a module attribute, so a test can drive it)


@dataclass
class RunSummary:
    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[Path] = field(default_factory=list)
    postponed: list[Path] = field(default_factory=list)  # not started: the time budget was spent
    phase_seconds: dict[str, float] = field(default_factory=dict)  # summed over the runs done by this call
    unavailable: list[str] = field(default_factory=list)  # optional tasks left out: their data is not on disk
    failures: dict[str, str] = field(default_factory=dict)  # "task model seed N" -> why, for the runs that failed
    redone: list[Path] = field(default_factory=list)  # damaged records found and run again
    failed_before: list[Path] = field(default_factory=list)  # skipped records of runs that failed earlier
    left_out: dict[str, str] = field(default_factory=dict)  # plugin model -> why: it fails the check (default list)
    busy: dict[str, str] = field(default_factory=dict)  # "task model seed N" -> the other process running it
    submitted: list[Path] = field(default_factory=list)  # handed to Slurm and not waited for (--no-wait)
    unfinished: dict[str, str] = field(default_factory=dict)  # "task model seed N" -> why it has no record yet


@dataclass(frozen=True)
class Job:
    """One run to do: `model` on `task` with `seed`, its record to be written at `path`."""

    task: Task
    model: str
    seed: int
    path: Path

    @property
    def label(self) -> str:
        return f"{self.task.name} {self.model} seed {self.seed}"


@dataclass(frozen=True)
class RunSettings:
    """What every job of one call shares. `optional`: tasks whose missing data leaves them out rather than fails
    the call (never downloaded). Picklable: worker processes receive it."""

    protocol: Protocol
    results_dir: Path
    data_dir: str | Path | None = None
    device: torch.device = torch.device("cpu")
    keep_checkpoints: bool = False
    download: bool = False
    optional: tuple[str, ...] = ()


def _finite(metrics: dict[str, Any]) -> tuple[dict[str, float], list[str]]:
    """JSON has no NaN: a non-finite metric is dropped and flagged rather than written as a number."""
    clean, bad = {}, []
    for key, value in metrics.items():
        if value is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            bad.append(key)
            continue
        clean[key] = value
    return clean, [f"non-finite:{key}" for key in bad]


def solver_settings(model: torch.nn.Module) -> list[dict[str, Any]]:
    """The model's resolved solver per stage (scheme, steps, adaptive method's tolerances, adjoint): what a
    record keeps so that two rows can be told apart by how they integrate, not only by name. [] for a model
    without zoo solvers. The backend is kept only where it is not the default: records made before backends
    existed are torchdiffeq's, and a default-backend record stays the same as theirs."""
    settings = [asdict(solver) for solver in getattr(model, "solvers", ())]
    for entry in settings:
        if entry.get("backend") == "torchdiffeq":
            del entry["backend"]
    return settings


def checkpoint_for(path: Path) -> Path:
    """Where the training checkpoint of the run whose record is `path` lives: beside it, `seed<N>.checkpoint.pt`
    (no record glob, `seed*.json`, matches it)."""
    return Path(path).with_name(f"{Path(path).stem}.checkpoint.pt")


def checkpoint_identity(protocol: Protocol, task: str, model_name: str, seed: int) -> dict[str, Any]:
    """Whose a training checkpoint is: a run resumes only from its own, and adopts a finished one of the same
    "training" (the tier's training hash) kept under another protocol hash (benchmarks/training/checkpoint.py)."""
    return {"model": model_name, "task": task, "protocol": protocol.task_hash(task),
            "training": protocol.training_hash(task), "seed": seed, "epochs": recipe_for(protocol, task).epochs}


def kept_elsewhere(checkpoint: Path) -> list[Path]:
    """The same run's checkpoints under the store's other protocol hashes (`<task>/<hash>/<model>/seed<N>...`)."""
    checkpoint = Path(checkpoint)
    model_dir = checkpoint.parent
    return sorted(p for p in model_dir.parent.parent.glob(f"*/{model_dir.name}/{checkpoint.name}") if p != checkpoint)


def run_one(protocol: Protocol, task: Task, data: TaskData, model_name: str, seed: int, device: torch.device,
            on_epoch: Callable[[dict[str, float]], None] | None = None, concurrent_runs: int = 1,
            model: torch.nn.Module | None = None,
            train_fn: Callable[[torch.nn.Module], TrainResult] | None = None,
            checkpoint: Path | None = None) -> Record:
    """Train and measure one model; any exception becomes a failed record (interrupts propagate).

    With `checkpoint`, training saves its state there after every epoch and continues from it when it exists (an
    interrupted run resumes from its last epoch with the record an uninterrupted run would have, timings aside).

    `model` and `train_fn` serve `depthbench evaluate` (benchmarks/execution/evaluate.py): an already built model with
    submitted weights, and a stand-in for training that only validates it."""
    started = now()
    phase = PhaseTimer(device)
    record = Record(model=model_name, task=task.name, seed=seed, protocol=protocol.header(task.name))
    source = None  # which code provided the model (None: the model name is unknown)
    try:
        record.card = zoo.model_card(model_name).to_dict()
        source = model_source(model_name)
        seed_everything(seed)
        if model is None:
            model = zoo.create_model(model_name, input_shape=task.input_shape, num_classes=task.num_classes,
                                     **protocol.model_overrides).to(device)
        record.solver = solver_settings(model)
        recipe = recipe_for(protocol, task.name)
        saved = None
        if checkpoint is not None:
            saved = TrainingCheckpoint(checkpoint, checkpoint_identity(protocol, task.name, model_name, seed))
            adopted = saved.adopt(kept_elsewhere(checkpoint)) if train_fn is None else None
            if adopted is not None:  # this record's weights were trained by the run that kept them
                record.provenance["weights_from"] = adopted
        with phase("train"):
            trained = train(model, data, task, recipe, device=device, seed=seed, on_epoch=on_epoch,
                            checkpoint=saved) if train_fn is None else train_fn(model)
        metrics, flags, transfer, profile = measure(model, task, data, protocol, device, trained, phase,
                                                      model_name=model_name, seed=seed)
        record.metrics, bad = _finite(metrics)
        record.flags = flags + bad
        record.depth_transfer = transfer
        record.history = trained.history
        record.trajectory = profile
        record.not_applicable = contract.not_applicable(model)
    except DiskFullError:  # the machine's problem, not the model's: stop, rather than record a failed run
        raise
    except Exception as error:  # noqa: BLE001 - a failing model is a result, not a crash of the suite
        record.status = "failed"
        record.error = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}".strip()
        record.flags = ["diverged"] if isinstance(error, TrainingDiverged) else \
            ["solver-did-not-converge"] if isinstance(error, zoo.SolverDidNotConverge) else \
            ["bad-output"] if isinstance(error, contract.ModelOutputError) else ["error"]
        record.provenance = {"traceback": traceback.format_exc(limit=8)}
    record.provenance = {**run_provenance(device, started), "phase_seconds": phase.seconds,
                         "concurrent_runs": concurrent_runs, **record.provenance}
    if source is not None:
        record.provenance["model_source"] = source
    return record


def record_run(settings: RunSettings, record: Record) -> Path:
    """Write a finished run's record (atomically) and, unless checkpoints are kept, drop its training checkpoint:
    the record is on disk, the run is finished. Returns the record's path."""
    path = save_record(settings.results_dir, record)
    if not settings.keep_checkpoints:
        checkpoint_for(path).unlink(missing_ok=True)
    return path


def run_job(settings: RunSettings, job: Job, data: TaskData, *, concurrent_runs: int = 1,
            on_epoch: Callable[[dict[str, float]], None] | None = None) -> tuple[Path, Record]:
    """`run_one` for `job` (checkpointing beside its record), then `record_run`: the record's path and the record."""
    record = run_one(settings.protocol, job.task, data, job.model, job.seed, settings.device, on_epoch=on_epoch,
                     concurrent_runs=concurrent_runs, checkpoint=checkpoint_for(job.path))
    return record_run(settings, record), record


def phases_of(record: Record) -> dict[str, float]:
    return record.provenance.get("phase_seconds", {})


def pending(jobs: Sequence[Job], settings: RunSettings, summary: RunSummary,
            retry_failed: bool = False) -> tuple[list[Job], dict[Path, int]]:
    """The jobs without a usable record (the others are listed as skipped; damaged records are redone), and the
    modification time of each record seen, so that one written meanwhile by another process is noticed."""
    todo, seen = [], {}
    for job in jobs:
        path = job.path
        if path.exists():
            seen[path] = path.stat().st_mtime_ns
            try:
                done = load_record(path, settings.results_dir)
            except RecordError as error:  # a damaged record is no result: run it again, overwriting it atomically
                print(f"depthbench: will redo a damaged record: {error}", file=sys.stderr, flush=True)
                summary.redone.append(path)
            else:
                if not retry_failed or done.status == "ok":
                    summary.skipped.append(path)
                    if done.status != "ok":
                        summary.failed_before.append(path)
                    continue
        todo.append(job)
    return todo, seen


class RunBook:
    """The account of one call: its summary, progress bar and the locks of the runs in flight, the data of the task
    at hand (loaded once per task), and the rules for starting a run (`deadline` on `clock`, `admit`)."""

    def __init__(self, settings: RunSettings, summary: RunSummary, bar: Progress, seen: dict[Path, int], *,
                 deadline: float | None = None, admit: Callable[[Task, str, int], bool] | None = None) -> None:
        self.settings, self.summary, self.bar, self.seen = settings, summary, bar, seen
        self.deadline, self.admit = deadline, admit
        self.locks: dict[str, RunLock] = {}
        self.loaded: dict[str, TaskData] = {}

    def data_for(self, task: Task) -> TaskData | None:
        """The task's data (loaded once; this also fills the caches that worker processes and Slurm jobs read), or
        None for an optional task whose data is missing."""
        settings, summary = self.settings, self.summary
        if task.name not in self.loaded and task.name not in summary.unavailable:
            try:
                self.bar.say(f"loading the data of {task.name}")
                self.loaded = {task.name: task.load(settings.data_dir,
                                                    download=settings.download and task.name not in settings.optional,
                                                    limit=settings.protocol.data_limit)}
            except DataMissingError:
                if task.name not in settings.optional:
                    raise
                summary.unavailable.append(task.name)
        return self.loaded.get(task.name)

    def admitted(self, jobs: Sequence[Job], wait_for_slot: Callable[[], None] = lambda: None,
                 ) -> Iterator[tuple[Job, TaskData]]:
        """The jobs to start now, each with its task's data and its lock taken, in order. A job is postponed once the
        deadline has passed or when `admit` refuses it (judged once `wait_for_slot` returns, i.e. when a worker is
        free for it), skipped when its optional task has no data or another process has it."""
        for job in jobs:
            if self.deadline is not None and clock() >= self.deadline:
                self.summary.postponed.append(job.path)
                self.bar.skip()
                continue
            data = self.data_for(job.task)
            if data is not None:
                wait_for_slot()
            if data is not None and self.admit is not None and not self.admit(job.task, job.model, job.seed):
                self.summary.postponed.append(job.path)  # before the run is claimed: another process may take it
                self.bar.skip()
                continue
            if data is None or not self.claim(job):  # an optional task without data, or another's run
                self.bar.skip()
                continue
            self.bar.start(job.label)
            yield job, data

    def claim(self, job: Job) -> bool:
        """Take the run's lock; False (said, and listed) when another process has it or has just finished it."""
        path, label = job.path, job.label
        lock = RunLock(path)
        if not lock.acquire():
            self.summary.busy[label] = lock.describe()
            self.bar.say(f"skipping {label}: {lock.describe()} is running it")
            return False
        if path.exists() and path.stat().st_mtime_ns != self.seen.get(path):  # written by another since the scan
            try:
                load_record(path, self.settings.results_dir)
            except RecordError:
                pass
            else:
                lock.release()
                self.summary.skipped.append(path)
                self.bar.say(f"skipping {label}: another process has just recorded it")
                return False
        self.locks[label] = lock
        return True

    def finished(self, job: Job, path: Path, status: str, error: str | None, phases: dict[str, float]) -> None:
        """A run has ended with its record at `path`: counted, its lock released, said."""
        summary = self.summary
        for name, seconds in phases.items():
            summary.phase_seconds[name] = summary.phase_seconds.get(name, 0.0) + seconds
        (summary.failed if status == "failed" else summary.written).append(path)
        if status == "failed":
            summary.failures[job.label] = error or "no error message"
        if job.label in self.locks:
            self.locks.pop(job.label).release()
        self.bar.finish(job.label, status, error, sum(phases.values()))

    def close(self) -> None:
        """The end of the call, interrupted or not: the runs still in flight are nobody's now."""
        try:
            for lock in self.locks.values():
                lock.release()
        finally:
            self.bar.close()
