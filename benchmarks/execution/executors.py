"""The ways of running a list of jobs (benchmarks/execution/runs.py): here one at a time (`InProcess`), or several at
once in worker processes sharing the device (`WorkerPool`, `depthbench run --workers N`). `SlurmExecutor`
(benchmarks/execution/slurm.py) submits them as a Slurm job array. Each takes the jobs still to do and a `RunBook`,
and reports every run's end to the book; the results directory stays the only source of truth.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Protocol

import torch

from benchmarks.data.tasks import TaskData, get_task
from benchmarks.execution.preflight import available_cores
from benchmarks.execution.runs import Job, RunBook, RunSettings, phases_of, run_job


class Executor(Protocol):
    """Runs `jobs` (in order, as far as it can) under `book`: each run's end goes to `book.finished`."""

    def run(self, jobs: Sequence[Job], book: RunBook) -> None: ...


class InProcess:
    """One run at a time, in this process."""

    def run(self, jobs: Sequence[Job], book: RunBook) -> None:
        for job, data in book.admitted(jobs):
            path, record = run_job(book.settings, job, data,
                                   on_epoch=lambda epoch, label=job.label: book.bar.epoch(label, epoch))
            book.finished(job, path, record.status, record.error, phases_of(record))


class WorkerPool:
    """At most `workers` runs in flight in spawned processes (CUDA cannot be forked) sharing the device: small models
    leave a GPU mostly idle between kernel launches, so concurrent runs fill it. Results come back in order of
    completion. Each worker keeps the data of its current task, reading the caches the parent filled."""

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def run(self, jobs: Sequence[Job], book: RunBook) -> None:
        threads = max(1, torch.get_num_threads() // self.workers)  # the parent's CPU threads, shared out
        pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=torch.set_num_threads, initargs=(threads,))
        in_flight: dict[Future, Job] = {}

        def collect(done: Any) -> None:
            for future in done:
                job = in_flight.pop(future)
                path, status, error, phases = future.result()  # a worker's own exception becomes a failed record
                book.finished(job, path, status, error, phases)

        def wait_for_slot() -> None:
            while len(in_flight) >= self.workers:
                collect(wait(in_flight, return_when=FIRST_COMPLETED).done)

        try:
            for job, _ in book.admitted(jobs, wait_for_slot):  # a worker is free: admitted waits for one
                in_flight[pool.submit(_run_in_worker, book.settings, job.task.name, job.model, job.seed,
                                      job.path, self.workers)] = job
        finally:
            try:
                collect(wait(in_flight).done)
            finally:
                pool.shutdown(cancel_futures=True)


def affordable_workers(workers: int, runs: int) -> int:
    """`workers`, lowered to the runs to do and the CPU cores here (said when lowered): each worker process needs a
    core, and a worker without a run only costs a process start."""
    cores = available_cores()
    affordable = max(1, min(workers, runs, cores))
    if affordable < workers and runs:
        print(f"depthbench: --workers {workers} lowered to {affordable}: {runs} runs to do, {cores} CPU cores here",
              file=sys.stderr, flush=True)
    return affordable


def local_executor(workers: int, runs: int) -> InProcess | WorkerPool:
    """`WorkerPool` for more than one affordable worker (`affordable_workers`), else `InProcess`."""
    workers = affordable_workers(workers, runs)
    return WorkerPool(workers) if workers > 1 else InProcess()


_WORKER_DATA: dict[tuple, TaskData] = {}


def _run_in_worker(settings: RunSettings, task_name: str, model_name: str, seed: int, path: Path,
                   workers: int) -> tuple[Path, str, str | None, dict]:
    """One run in a worker process: the same `run_job` as in the parent; the record is saved here."""
    task = get_task(task_name)
    key = (task_name, str(settings.data_dir), settings.protocol.data_limit)
    if key not in _WORKER_DATA:
        _WORKER_DATA.clear()  # one task at a time: jobs are ordered by task
        _WORKER_DATA[key] = task.load(settings.data_dir, limit=settings.protocol.data_limit)
    path, record = run_job(settings, Job(task, model_name, seed, path), _WORKER_DATA[key], concurrent_runs=workers)
    return path, record.status, record.error, phases_of(record)
