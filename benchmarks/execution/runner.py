"""The runner: task -> model -> training -> metrics -> record, one record per (model, task, protocol, seed).

Resumable by construction: a run whose record exists is skipped, and a record is written atomically
only when its run is complete, so an interrupted bench loses at most the run in progress. A model
that fails (diverges, its solver never converges, it raises) becomes a `failed` record with the
reason, and the suite goes on. A damaged record is no result: it is named and its run done again.

Before the first training, `run_tier` checks what a run needs (arguments, names, recipes, the device, a writable
store, every task's data present and intact), so that a mistake is reported in seconds, not after hours of runs.
It then hands the runs to do to an executor (benchmarks/execution/executors.py: here, or a pool of worker processes;
benchmarks/execution/slurm.py: a Slurm job array); one run and its bookkeeping are benchmarks/execution/runs.py.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

import zoo
from benchmarks.data.tasks import DataMissingError, Task, get_task
from benchmarks.evaluation.check import check_model, require_passing
from benchmarks.execution import runs
from benchmarks.execution.executors import Executor, local_executor
from benchmarks.execution.preflight import (  # noqa: F401 - check_writable, pick_device: the runner's API too
    check_cache_writable,
    check_writable,
    chosen,
    pick_device,
    refuse_meta,
)
from benchmarks.execution.progress import Progress
from benchmarks.execution.runs import (  # noqa: F401 - RunSummary, run_one, ...: the runner's API too
    Job,
    RunBook,
    RunSettings,
    RunSummary,
    checkpoint_for,
    pending,
    run_one,
    solver_settings,
)
from benchmarks.protocols import Protocol, recipe_for
from benchmarks.store.locations import DEFAULT_RESULTS, LOCAL_RESULTS  # noqa: F401 - where callers look for them
from benchmarks.store.provenance import git_state
from benchmarks.store.records import record_path
from benchmarks.training.train import MAX_SEED

if TYPE_CHECKING:
    from benchmarks.execution.cluster import SlurmSettings


def tier_models(protocol: Protocol) -> list[str]:
    """The models a tier runs by default: the protocol's own, then every installed plugin (a `depthbench.models`
    entry point) in name order. Models are outside the protocol hash, so a new plugin orphans no record."""
    plugins = [n for n in zoo.list_models() if n not in protocol.models and zoo.registry.model_distribution(n)]
    return list(protocol.models) + plugins


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
    if max_minutes is not None and not (math.isfinite(max_minutes) and max_minutes >= 0):
        raise ValueError(f"max_minutes must be a finite number >= 0, got {max_minutes}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if slurm is not None and (workers > 1 or max_minutes is not None or admit is not None):
        raise ValueError("--workers and --max-minutes are for the local executor; on Slurm every run is its own "
                         "array job (set --slurm-array-parallelism and --slurm-time instead)")
    settings, jobs, summary = plan(protocol, models=models, tasks=tasks, seeds=seeds, results_dir=results_dir,
                                   data_dir=data_dir, download=download, device=device, check_models=check_models,
                                   keep_checkpoints=keep_checkpoints)
    deadline = None if max_minutes is None else runs.clock() + 60.0 * max_minutes
    todo, seen = pending(jobs, settings, summary, retry_failed)
    executor: Executor
    if slurm is not None:
        from benchmarks.execution.slurm import SlurmExecutor  # submitit is imported only when asked for

        executor = SlurmExecutor(slurm)
    else:
        executor = local_executor(workers, len(todo))
    bar = Progress(len(jobs), len(todo), f"{protocol.name} v{protocol.version}", progress)
    bar.bar.update(len(summary.skipped))
    book = RunBook(settings, summary, bar, seen, deadline=deadline, admit=admit)
    try:
        executor.run(todo, book)
    finally:
        book.close()
    return summary


def plan(protocol: Protocol, *, models: Sequence[str] | None, tasks: Sequence[str] | None,
         seeds: Sequence[int] | None, results_dir: Path, data_dir: str | Path | None, download: bool,
         device: torch.device | None, check_models: bool, keep_checkpoints: bool,
         ) -> tuple[RunSettings, list[Job], RunSummary]:
    """Everything a run needs, checked before the first training (arguments, names, recipes, the device, the results
    store and every task's data), so that a mistake costs seconds rather than a lost run; then every job of the call
    (task by task, model by model, seed by seed), and the summary so far (plugins left out, optional tasks without
    data)."""
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
    settings = RunSettings(protocol, results_dir, data_dir, device, keep_checkpoints, download, tuple(optional))
    jobs = [Job(task, model, seed, record_path(results_dir, model, task.name, protocol.task_hash(task.name), seed))
            for task in task_objects if task.name not in summary.unavailable for model in models for seed in seeds]
    return settings, jobs, summary


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
