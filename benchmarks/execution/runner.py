"""The runner: task -> model -> training -> metrics -> record, one record per (model, task, protocol, seed).

Resumable by construction: a run whose record exists is skipped, and a record is written atomically
only when its run is complete, so an interrupted bench loses at most the run in progress. A model
that fails (diverges, its solver never converges, it raises) becomes a `failed` record with the
reason, and the suite goes on. A damaged record is no result: it is named and its run done again.

Before the first training, `run_tier` checks what a run needs (arguments, names, recipes, the device, a writable
store, every task's data present and intact), so that a mistake is reported in seconds, not after hours of runs.
"""

from __future__ import annotations

import math
import multiprocessing
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

import zoo
from benchmarks.data.tasks import DataMissingError, Task, TaskData, get_task
from benchmarks.evaluation.check import check_model, require_passing
from benchmarks.evaluation.phases import measure
from benchmarks.evaluation.timing import PhaseTimer
from benchmarks.execution.preflight import (  # noqa: F401 - check_writable, pick_device: the runner's API too
    available_cores,
    check_cache_writable,
    check_writable,
    chosen,
    pick_device,
    refuse_meta,
)
from benchmarks.execution.progress import Progress
from benchmarks.io import DiskFullError
from benchmarks.protocols import Protocol, recipe_for
from benchmarks.store.locations import DEFAULT_RESULTS, LOCAL_RESULTS  # noqa: F401 - where callers look for them
from benchmarks.store.locks import RunLock
from benchmarks.store.provenance import git_state, model_source, now, run_provenance
from benchmarks.store.records import Record, RecordError, load_record, record_path, save_record
from benchmarks.training.checkpoint import TrainingCheckpoint
from benchmarks.training.train import MAX_SEED, TrainingDiverged, TrainResult, seed_everything, train
from zoo import contract

if TYPE_CHECKING:
    from benchmarks.execution.cluster import SlurmSettings

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


def tier_models(protocol: Protocol) -> list[str]:
    """The models a tier runs by default: the protocol's own, then every installed plugin (a `depthbench.models`
    entry point) in name order. Models are outside the protocol hash, so a new plugin orphans no record."""
    plugins = [n for n in zoo.list_models() if n not in protocol.models and zoo.registry.model_distribution(n)]
    return list(protocol.models) + plugins


def checkpoint_for(path: Path) -> Path:
    """Where the training checkpoint of the run whose record is `path` lives: beside it, `seed<N>.checkpoint.pt`
    (no record glob, `seed*.json`, matches it)."""
    return Path(path).with_name(f"{Path(path).stem}.checkpoint.pt")


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
        saved = None if checkpoint is None else TrainingCheckpoint(checkpoint, {
            "model": model_name, "task": task.name, "protocol": protocol.task_hash(task.name), "seed": seed,
            "epochs": recipe.epochs})
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


def run_tier(
    protocol: Protocol,
    *,
    models: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    results_dir: Path = DEFAULT_RESULTS,
    data_dir: str | Path | None = None,
    download: bool = False,
    device: torch.device | None = None,
    retry_failed: bool = False,
    progress: bool = True,
    max_minutes: float | None = None,
    workers: int = 1,
    check_models: bool = True,
    keep_checkpoints: bool = False,
    slurm: SlurmSettings | None = None,
    admit: Callable[[Task, str, int], bool] | None = None,
) -> RunSummary:
    """Run every (task, model, seed) of `protocol` that has no record yet under `results_dir`.

    Without explicit `tasks`, the protocol's optional tasks run too where their data is already on disk (they are
    never downloaded for this); the ones left out are listed in `unavailable`.

    With `max_minutes`, no run is started once that much time has passed: the runs left are `postponed`, and
    the same call later resumes them. A job with a wall-clock limit thus ends cleanly between two runs.

    With `workers` > 1, that many runs go at once in separate processes sharing the device: small models leave
    a GPU mostly idle between kernel launches, so concurrent runs fill it. Results are those of a sequential run;
    timings include the contention, and records say how many runs shared the device. More workers than runs to
    do or than CPU cores here are not started (each worker needs a core of its own): the number is lowered, said.

    With `check_models` (the default), every model first passes the contract (`depthbench check`) at the protocol's
    size on its tasks' input shapes; a model that fails raises ModelCheckFailed with the report, before any run,
    except for an installed plugin that joined the default model list (`models` not given): it is left out, with
    the reason in `left_out`, so that one broken plugin never stops the built-in models.

    Each local run holds a lock beside its record (benchmarks/store/locks.py): a run another process is doing is
    skipped and listed in `busy`, so two `depthbench run`s on one store share the work instead of doing it twice.

    Training checkpoints every epoch beside the record (`checkpoint_for`), so an interrupted run resumes from its
    last epoch; a finished run's checkpoint is removed unless `keep_checkpoints`.

    With `admit`, a run starts only if `admit(task, model, seed)` is true at the moment it would start (once a
    worker is free); otherwise it is postponed like a run past `max_minutes` (a GPU session's budget uses this to
    skip what would not finish in time, benchmarks/execution/device_session.py).

    With `slurm` (benchmarks/execution/slurm.py), the runs are submitted as one Slurm job array through submitit
    instead of run here; the results directory stays the only source of truth."""
    # Everything a run needs is checked here, before the first training: arguments, names, recipes, the device,
    # the results store and every task's data, so that a mistake costs seconds rather than a lost run.
    if max_minutes is not None and not (math.isfinite(max_minutes) and max_minutes >= 0):
        raise ValueError(f"max_minutes must be a finite number >= 0, got {max_minutes}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if slurm is not None and (workers > 1 or max_minutes is not None or admit is not None):
        raise ValueError("--workers and --max-minutes are for the local executor; on Slurm every run is its own "
                         "array job (set --slurm-array-parallelism and --slurm-time instead)")
    explicit_models = models is not None
    models = chosen("models", models, tier_models(protocol))
    optional = [] if tasks is not None else [name for name in protocol.optional_tasks if name not in protocol.tasks]
    tasks = chosen("tasks", tasks, protocol.tasks) + optional
    seeds = chosen("seeds", seeds, protocol.seeds)
    bad_seeds = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED]
    if bad_seeds:
        raise ValueError(f"seeds must be non-negative integers up to {MAX_SEED} (2**32 - 1, numpy's limit), got "
                         f"{', '.join(map(repr, bad_seeds))}")
    unknown = sorted(set(models) - set(zoo.list_models()))
    if unknown:
        raise ValueError(zoo.registry.unknown_model_message(unknown))
    task_objects = [get_task(name) for name in tasks]  # unknown task names fail here, before any work
    for task in task_objects:
        recipe_for(protocol, task.name)
    git_state()  # a bad $DEPTHBENCH_GIT_COMMIT fails here, before any work
    summary = RunSummary()
    if check_models:  # the model contract on CPU first: a broken model fails in seconds, not after its training
        plugins = [] if explicit_models else [m for m in models if m not in protocol.models]
        require_passing([m for m in models if m not in plugins], task_objects, protocol.model_overrides)
        summary.left_out = _failing(plugins, task_objects, protocol)
        models = [m for m in models if m not in summary.left_out]
    device = device or pick_device(None, protocol)
    refuse_meta(device, str(device))
    check_writable(results_dir)
    check_cache_writable()
    for task in task_objects:
        try:
            task.check(data_dir)
        except DataMissingError:
            if task.name in optional:
                summary.unavailable.append(task.name)
            elif download:  # fetch it now, so that a failing download too comes before any training
                task.load(data_dir, download=True, limit=protocol.data_limit)
                task.check(data_dir)
            else:
                raise
    task_objects = [task for task in task_objects if task.name not in summary.unavailable]
    jobs = [(task, model, seed) for task in task_objects for model in models for seed in seeds]
    deadline = None if max_minutes is None else clock() + 60.0 * max_minutes
    todo, seen = [], {}
    for task, model_name, seed in jobs:
        path = record_path(results_dir, model_name, task.name, protocol.task_hash(task.name), seed)
        if path.exists():
            seen[path] = path.stat().st_mtime_ns
            try:
                done = load_record(path, results_dir)
            except RecordError as error:  # a damaged record is no result: run it again, overwriting it atomically
                print(f"depthbench: will redo a damaged record: {error}", file=sys.stderr, flush=True)
                summary.redone.append(path)
            else:
                if not retry_failed or done.status == "ok":
                    summary.skipped.append(path)
                    if done.status != "ok":
                        summary.failed_before.append(path)
                    continue
        todo.append((task, model_name, seed, path))
    workers = _affordable_workers(workers, len(todo))
    bar = Progress(len(jobs), len(todo), f"{protocol.name} v{protocol.version}", progress)
    bar.bar.update(len(summary.skipped))
    loaded: dict[str, TaskData] = {}

    def data_for(task: Task) -> TaskData | None:
        """The task's data (loaded once; this also fills the caches that worker processes read), or None."""
        nonlocal loaded
        if task.name not in loaded and task.name not in summary.unavailable:
            try:
                bar.say(f"loading the data of {task.name}")
                loaded = {task.name: task.load(data_dir, download=download and task.name not in optional,
                                               limit=protocol.data_limit)}
            except DataMissingError:
                if task.name not in optional:
                    raise
                summary.unavailable.append(task.name)
        return loaded.get(task.name)

    locks: dict[str, RunLock] = {}

    def finished(path: Path, label: str, status: str, error: str | None, phases: dict[str, float]) -> None:
        for name, seconds in phases.items():
            summary.phase_seconds[name] = summary.phase_seconds.get(name, 0.0) + seconds
        (summary.failed if status == "failed" else summary.written).append(path)
        if status == "failed":
            summary.failures[label] = error or "no error message"
        if label in locks:
            locks.pop(label).release()
        bar.finish(label, status, error, sum(phases.values()))

    def claim(path: Path, label: str) -> bool:
        """Take the run's lock; False (said, and listed) when another process has it or has just finished it."""
        lock = RunLock(path)
        if not lock.acquire():
            summary.busy[label] = lock.describe()
            bar.say(f"skipping {label}: {lock.describe()} is running it")
            return False
        if path.exists() and path.stat().st_mtime_ns != seen.get(path):  # written by another process since the scan
            try:
                load_record(path, results_dir)
            except RecordError:
                pass
            else:
                lock.release()
                summary.skipped.append(path)
                bar.say(f"skipping {label}: another process has just recorded it")
                return False
        locks[label] = lock
        return True

    if slurm is not None:
        from benchmarks.execution.slurm import run_on_slurm  # submitit is imported only when asked for

        try:  # the parent loads each task once first: the jobs then read the caches it filled
            todo = [job for job in todo if data_for(job[0]) is not None]
            run_on_slurm(slurm, protocol, todo, summary, finished, bar, results_dir=results_dir,
                         data_dir=data_dir, device=device, keep_checkpoints=keep_checkpoints)
        finally:
            bar.close()
        return summary
    pool = _WorkerPool(workers) if workers > 1 else None
    try:
        for task, model_name, seed, path in todo:
            label = f"{task.name} {model_name} seed {seed}"
            if deadline is not None and clock() >= deadline:
                summary.postponed.append(path)
                bar.skip()
                continue
            data = data_for(task)
            if data is not None and pool is not None:
                pool.wait_for_slot()
            if data is not None and admit is not None and not admit(task, model_name, seed):
                summary.postponed.append(path)  # before the run is claimed: another process may take it
                bar.skip()
                continue
            if data is None or not claim(path, label):  # an optional task without data, or another's run
                bar.skip()
                continue
            bar.start(label)
            if pool is not None:
                pool.submit(finished, label, protocol, task.name, model_name, seed, results_dir, data_dir,
                            str(device), keep_checkpoints)
                continue
            record = run_one(protocol, task, data, model_name, seed, device,
                             on_epoch=lambda e, label=label: bar.epoch(label, e), checkpoint=checkpoint_for(path))
            path = save_record(results_dir, record)
            if not keep_checkpoints:  # the record is on disk: the run is finished, its checkpoint no longer needed
                checkpoint_for(path).unlink(missing_ok=True)
            finished(path, label, record.status, record.error, record.provenance.get("phase_seconds", {}))
    finally:
        try:
            if pool is not None:
                pool.close()
        finally:
            for lock in locks.values():  # interrupted or failed: the runs in flight are nobody's now
                lock.release()
            bar.close()
    return summary


def _failing(plugins: Sequence[str], tasks: Sequence[Task], protocol: Protocol) -> dict[str, str]:
    """The plugins among `plugins` that fail the contract -> why (their failed checks), each said at once."""
    failing = {}
    for name in plugins:
        try:
            report = check_model(name, tasks, protocol.model_overrides)
            problems = "; ".join(f"{c.name}: {c.detail}" for c in report.failures)
        except (ValueError, KeyError) as error:  # e.g. a name two plugins claim
            problems = str(error)
        if problems:
            failing[name] = problems
            print(f"depthbench: warning: plugin model {name} fails `depthbench check` and is left out of this run "
                  f"({problems})", file=sys.stderr, flush=True)
    return failing


def _affordable_workers(workers: int, runs: int) -> int:
    """`workers`, lowered to the runs to do and the CPU cores here (said when lowered): each worker process needs a
    core, and a worker without a run only costs a process start."""
    cores = available_cores()
    affordable = max(1, min(workers, runs, cores))
    if affordable < workers and runs:
        print(f"depthbench: --workers {workers} lowered to {affordable}: {runs} runs to do, {cores} CPU cores here",
              file=sys.stderr, flush=True)
    return affordable


class _WorkerPool:
    """At most `workers` runs in flight in spawned processes (CUDA cannot be forked); results come back in order
    of completion. Each worker keeps the data of its current task, reading the caches the parent filled."""

    def __init__(self, workers: int) -> None:
        threads = max(1, torch.get_num_threads() // workers)  # the parent's CPU threads, shared out
        self.workers = workers
        self.executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=torch.set_num_threads, initargs=(threads,))
        self.in_flight: dict[Future, tuple[Callable, str]] = {}

    def wait_for_slot(self) -> None:
        while len(self.in_flight) >= self.workers:
            self._collect(wait(self.in_flight, return_when=FIRST_COMPLETED).done)

    def submit(self, finished: Callable, label: str, *job: Any) -> None:
        self.wait_for_slot()
        self.in_flight[self.executor.submit(_run_in_worker, *job, self.workers)] = (finished, label)

    def _collect(self, done: Any) -> None:
        for future in done:
            finished, label = self.in_flight.pop(future)
            path, status, error, phases = future.result()  # a worker's own exception becomes a failed record
            finished(path, label, status, error, phases)

    def close(self) -> None:
        try:
            self._collect(wait(self.in_flight).done)
        finally:
            self.executor.shutdown(cancel_futures=True)


_WORKER_DATA: dict[tuple, TaskData] = {}


def _run_in_worker(protocol: Protocol, task_name: str, model_name: str, seed: int, results_dir: Path,
                   data_dir: str | Path | None, device: str, keep_checkpoints: bool,
                   workers: int) -> tuple[Path, str, str | None, dict]:
    """One run in a worker process: the same `run_one` as in the parent; the record is saved here."""
    task = get_task(task_name)
    key = (task_name, str(data_dir), protocol.data_limit)
    if key not in _WORKER_DATA:
        _WORKER_DATA.clear()  # one task at a time: jobs are ordered by task
        _WORKER_DATA[key] = task.load(data_dir, limit=protocol.data_limit)
    path = record_path(results_dir, model_name, task_name, protocol.task_hash(task_name), seed)
    record = run_one(protocol, task, _WORKER_DATA[key], model_name, seed, torch.device(device),
                     concurrent_runs=workers, checkpoint=checkpoint_for(path))
    path = save_record(results_dir, record)
    if not keep_checkpoints:
        checkpoint_for(path).unlink(missing_ok=True)
    return path, record.status, record.error, record.provenance.get("phase_seconds", {})
