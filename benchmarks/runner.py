"""The runner: task -> model -> training -> metrics -> record, one record per (model, task, protocol, seed).

Resumable by construction: a run whose record exists is skipped, and a record is written atomically
only when its run is complete, so an interrupted bench loses at most the run in progress. A model
that fails (diverges, its solver never converges, it raises) becomes a `failed` record with the
reason, and the suite goes on.
"""

from __future__ import annotations

import math
import multiprocessing
import random
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

import zoo
from benchmarks import metrics as M
from benchmarks import timing
from benchmarks.attacks import robustness_suite
from benchmarks.diagnostics import trajectory_diagnostics
from benchmarks.protocols import Protocol, recipe_for
from benchmarks.provenance import git_state, now, provenance
from benchmarks.records import Record, load_record, record_path, save_record
from benchmarks.tasks import DataMissingError, Task, TaskData, get_task
from benchmarks.train import TrainingDiverged, TrainResult, train

DEFAULT_RESULTS = Path("results")
clock = time.monotonic  # the time budget's clock (a module attribute, so a test can drive it)


@dataclass
class RunSummary:
    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[Path] = field(default_factory=list)
    postponed: list[Path] = field(default_factory=list)  # not started: the time budget was spent
    phase_seconds: dict[str, float] = field(default_factory=dict)  # summed over the runs done by this call
    unavailable: list[str] = field(default_factory=list)  # optional tasks left out: their data is not on disk


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class PhaseTimer:
    """Wall time per phase of a run (device-synchronised), kept in the record to show where a tier's time goes."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.seconds = device, {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started


def measure(model: zoo.DepthModel, task: Task, data: TaskData, protocol: Protocol, device: torch.device,
            trained: TrainResult, phase: PhaseTimer | None = None,
            ) -> tuple[dict[str, float], list[str], list[dict[str, Any]], list[dict[str, Any]]]:
    """Every metric of the harness for a trained model (eval mode, fp32); also the depth-transfer entries and
    the stiffness profile along depth that records keep beside the metrics."""
    phase = phase or PhaseTimer(device)
    ev = protocol.evaluation
    model.eval().float()
    x_test, y_test = data.test.inputs().to(device), data.test.y.to(device)
    classification = task.kind == "classification"
    metrics: dict[str, float] = {"epochs": trained.epochs, "train_seconds": trained.train_seconds,
                                 "epoch_seconds": trained.epoch_seconds}
    if trained.peak_memory_mb is not None:
        metrics["peak_train_memory_mb"] = trained.peak_memory_mb
    with phase("clean"):
        if classification:
            metrics["accuracy"] = M.accuracy(model, x_test, y_test, batch_size=ev.eval_batch)
            metrics["val_accuracy"] = trained.val_metric
        else:
            metrics["test_mse"] = M.mse(model, x_test, y_test, batch_size=ev.eval_batch)
            metrics["val_mse"] = trained.val_metric
        metrics["params"] = M.parameter_count(model)
        metrics["flops"] = M.count_flops(model, x_test[:1])
        with torch.no_grad():
            model(x_test[:ev.eval_batch])
        metrics["nfe"] = model.nfe
        if any(s.adjoint for s in model.solvers):
            loss = model(x_test[:64]).float().square().mean()
            loss.backward()
            metrics["nfe_backward"] = model.nfe_backward
            model.zero_grad(set_to_none=True)
    with phase("latency"):
        metrics.update(timing.latency_and_throughput(model, x_test, device=device, batch=ev.throughput_batch,
                                                     warmup=3, repeats=ev.latency_repeats))
    flags: list[str] = []
    if classification and task.attack_eps:
        xs, ys = x_test[:ev.attack_subset], y_test[:ev.attack_subset]
        with phase("attacks"):
            suite = robustness_suite(model, xs, ys, eps_grid=task.attack_eps, headline_eps=task.headline_eps, ev=ev,
                                     batch_size=ev.eval_batch, seed=0)
            metrics.update(suite.metrics)
            flags += suite.flags
        with phase("noise"):
            metrics.update(M.noise_robustness(model, xs, ys, sigmas=task.noise_sigmas, batch_size=ev.eval_batch,
                                              seed=0))
    with phase("diagnostics"):
        shape, profile = trajectory_diagnostics(model, x_test[:ev.diagnostic_subset], points=ev.track_points,
                                                iterations=ev.jacobian_iterations)
        metrics.update(shape)
    with phase("depth_transfer"):
        transfer, summary = M.depth_transfer(
            model, x_test[:ev.transfer_subset], y_test[:ev.transfer_subset], kind=task.kind,
            factors=ev.transfer_factors, schemes=ev.transfer_schemes, tolerances=ev.transfer_tolerances,
            batch_size=ev.eval_batch, latency_example=x_test[:1], device=device,
            latency_repeats=max(3, ev.latency_repeats // 4))
    metrics.update(summary)
    return metrics, flags, transfer, profile


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


def run_one(protocol: Protocol, task: Task, data: TaskData, model_name: str, seed: int, device: torch.device,
            on_epoch: Callable[[dict[str, float]], None] | None = None, concurrent_runs: int = 1) -> Record:
    """Train and measure one model; any exception becomes a failed record (interrupts propagate)."""
    started = now()
    phase = PhaseTimer(device)
    record = Record(model=model_name, task=task.name, seed=seed, protocol=protocol.header())
    try:
        record.card = zoo.model_card(model_name).to_dict()
        seed_everything(seed)
        model = zoo.create_model(model_name, input_shape=task.input_shape, num_classes=task.num_classes,
                                 **protocol.model_overrides).to(device)
        with phase("train"):
            trained = train(model, data, task, recipe_for(protocol, task.name), device=device, seed=seed,
                            on_epoch=on_epoch)
        metrics, flags, transfer, profile = measure(model, task, data, protocol, device, trained, phase)
        record.metrics, bad = _finite(metrics)
        record.flags = flags + bad
        record.depth_transfer = transfer
        record.trajectory = profile
    except Exception as error:  # noqa: BLE001 - a failing model is a result, not a crash of the suite
        record.status = "failed"
        record.error = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}".strip()
        record.flags = ["diverged"] if isinstance(error, TrainingDiverged) else \
            ["solver-did-not-converge"] if isinstance(error, zoo.SolverDidNotConverge) else ["error"]
        record.provenance = {"traceback": traceback.format_exc(limit=8)}
    record.provenance = {**provenance(device, started), "phase_seconds": phase.seconds,
                         "concurrent_runs": concurrent_runs, **record.provenance}
    return record


def pick_device(requested: str | None, protocol: Protocol) -> torch.device:
    if requested is None:
        requested = "cuda" if protocol.device == "cuda" else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"the {protocol.name!r} tier is meant for a CUDA GPU and none is available here; "
                           "run `--tier smoke`, or `--device cpu` to force it onto the CPU (slow)")
    return torch.device(requested)


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
) -> RunSummary:
    """Run every (task, model, seed) of `protocol` that has no record yet under `results_dir`.

    Without explicit `tasks`, the protocol's optional tasks run too where their data is already on disk (they are
    never downloaded for this); the ones left out are listed in `unavailable`.

    With `max_minutes`, no run is started once that much time has passed: the runs left are `postponed`, and
    the same call later resumes them. A job with a wall-clock limit thus ends cleanly between two runs.

    With `workers` > 1, that many runs go at once in separate processes sharing the device: small models leave
    a GPU mostly idle between kernel launches, so concurrent runs fill it. Results are those of a sequential run;
    timings include the contention, and records say how many runs shared the device."""
    if max_minutes is not None and max_minutes < 0:
        raise ValueError(f"max_minutes must be >= 0, got {max_minutes}")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    deadline = None if max_minutes is None else clock() + 60.0 * max_minutes
    models = list(models or protocol.models)
    optional = [] if tasks else [name for name in protocol.optional_tasks if name not in protocol.tasks]
    tasks = list(tasks or protocol.tasks) + optional
    seeds = list(protocol.seeds if seeds is None else seeds)
    unknown = sorted(set(models) - set(zoo.list_models()))
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; known models: {', '.join(zoo.list_models())}")
    task_objects = [get_task(name) for name in tasks]  # unknown task names fail here, before any work
    for task in task_objects:
        recipe_for(protocol, task.name)
    git_state()  # a bad $DEPTHBENCH_GIT_COMMIT fails here, before any work
    device = device or pick_device(None, protocol)
    summary = RunSummary()
    jobs = [(task, model, seed) for task in task_objects for model in models for seed in seeds]
    bar = tqdm(total=len(jobs), desc=f"{protocol.name} {protocol.hash}", disable=not progress, unit="run")
    loaded: dict[str, TaskData] = {}

    def data_for(task: Task) -> TaskData | None:
        """The task's data (loaded once; this also fills the caches that worker processes read), or None."""
        nonlocal loaded
        if task.name not in loaded and task.name not in summary.unavailable:
            try:
                loaded = {task.name: task.load(data_dir, download=download and task.name not in optional,
                                               limit=protocol.data_limit)}
            except DataMissingError:
                if task.name not in optional:
                    raise
                summary.unavailable.append(task.name)
        return loaded.get(task.name)

    def finished(path: Path, label: str, status: str, error: str | None, phases: dict[str, float]) -> None:
        for name, seconds in phases.items():
            summary.phase_seconds[name] = summary.phase_seconds.get(name, 0.0) + seconds
        (summary.failed if status == "failed" else summary.written).append(path)
        if status == "failed":
            tqdm.write(f"FAILED {label}: {error}")
        bar.update()

    pool = _WorkerPool(workers) if workers > 1 else None
    try:
        for task, model_name, seed in jobs:
            path = record_path(results_dir, model_name, task.name, protocol.hash, seed)
            label = f"{task.name} {model_name} seed {seed}"
            if path.exists() and (not retry_failed or load_record(path).status == "ok"):
                summary.skipped.append(path)
                bar.update()
                continue
            if deadline is not None and clock() >= deadline:
                summary.postponed.append(path)
                bar.update()
                continue
            data = data_for(task)
            if data is None:  # an optional task without data
                bar.update()
                continue
            if pool is not None:
                pool.submit(finished, label, protocol, task.name, model_name, seed, results_dir, data_dir,
                            str(device))
                continue
            bar.set_postfix_str(label)
            record = run_one(protocol, task, data, model_name, seed, device,
                             on_epoch=lambda e, label=label: bar.set_postfix_str(
                                 f"{label} epoch {e['epoch']} val {e['val']:.4g}"))
            path = save_record(results_dir, record)
            finished(path, label, record.status, record.error, record.provenance.get("phase_seconds", {}))
    finally:
        if pool is not None:
            pool.close()
        bar.close()
    return summary


class _WorkerPool:
    """At most `workers` runs in flight in spawned processes (CUDA cannot be forked); results come back in order
    of completion. Each worker keeps the data of its current task, reading the caches the parent filled."""

    def __init__(self, workers: int) -> None:
        threads = max(1, torch.get_num_threads() // workers)  # the parent's CPU threads, shared out
        self.workers = workers
        self.executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=torch.set_num_threads, initargs=(threads,))
        self.in_flight: dict[Future, tuple[Callable, str]] = {}

    def submit(self, finished: Callable, label: str, *job: Any) -> None:
        while len(self.in_flight) >= self.workers:
            self._collect(wait(self.in_flight, return_when=FIRST_COMPLETED).done)
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
                   data_dir: str | Path | None, device: str, workers: int) -> tuple[Path, str, str | None, dict]:
    """One run in a worker process: the same `run_one` as in the parent; the record is saved here."""
    task = get_task(task_name)
    key = (task_name, str(data_dir), protocol.data_limit)
    if key not in _WORKER_DATA:
        _WORKER_DATA.clear()  # one task at a time: jobs are ordered by task
        _WORKER_DATA[key] = task.load(data_dir, limit=protocol.data_limit)
    record = run_one(protocol, task, _WORKER_DATA[key], model_name, seed, torch.device(device),
                     concurrent_runs=workers)
    path = save_record(results_dir, record)
    return path, record.status, record.error, record.provenance.get("phase_seconds", {})
