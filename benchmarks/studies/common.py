"""What every study shares: the CPU study recipe and size, data loading, seeding and writing the study file."""

from __future__ import annotations

import dataclasses
import multiprocessing
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import torch

import zoo
from benchmarks.data.tasks import Task, TaskData, get_task
from benchmarks.evaluation.timing import sync
from benchmarks.execution.runs import checkpoint_for, checkpoint_identity, kept_elsewhere
from benchmarks.protocols import CPU, SMOKE, Protocol, Recipe, recipe_for
from benchmarks.store.provenance import now, run_provenance
from benchmarks.store.records import record_path
from benchmarks.store.studies import write_study
from benchmarks.training.checkpoint import TrainingCheckpoint
from benchmarks.training.train import MAX_SEED, TrainResult, seed_everything, train

TIER = "cpu-study"  # the tier a digits study file names (digits studies train the smoke size for EPOCHS epochs)
# The smoke tier's recipe and size class with more epochs: the smoke tier's 4 epochs leave digits models far from
# converged, and a study compares trainings, so each must have finished learning. 8 epochs split evenly into the
# refinement study's four stages.
EPOCHS = 8
WIDTH = 16
# Where a study's recipe comes from, per task: Fashion-MNIST studies train as the citable cpu tier does (its recipe,
# its size class; a study changes only what it compares), digits studies as above.
BASES: dict[str, Protocol] = {"digits": SMOKE, "fashion-mnist": CPU}
TASKS = tuple(BASES)


def study_recipe(task: str) -> Recipe:
    """The recipe every arm of a study trains with: the cpu tier's on fashion-mnist, the smoke tier's with `EPOCHS`
    epochs on digits."""
    if task not in BASES:
        raise ValueError(f"the studies run on {', '.join(TASKS)}; got task {task!r}")
    recipe = recipe_for(BASES[task], task)
    return dataclasses.replace(recipe, epochs=EPOCHS) if BASES[task] is SMOKE else recipe


def study_tier(task: str) -> str:
    """The tier name a study file of `task` carries (claims rank and cite evidence by it)."""
    return BASES[task].name if task in BASES and BASES[task] is not SMOKE else TIER


def check_seeds(seeds: Sequence[int]) -> list[int]:
    seeds = list(dict.fromkeys(int(s) for s in seeds))
    if not seeds or any(not 0 <= s <= MAX_SEED for s in seeds):
        raise ValueError(f"give one or more seeds from 0 to {MAX_SEED} (numpy's limit), got {seeds}")
    return seeds


def load(task_name: str, limit: int | None = None) -> tuple[Task, TaskData]:
    task = get_task(task_name)
    return task, task.load(None, limit=limit)


def build_and_train(name: str, task: Task, data: TaskData, recipe: Recipe, seed: int, device: torch.device,
                    refine_at_epochs: Sequence[int] = (), transform: Callable[[torch.nn.Module], torch.nn.Module]
                    | None = None, **overrides: Any) -> tuple[torch.nn.Module, TrainResult]:
    """Seed as the tier runner does, build `name` from the registry (`transform` may wrap it), train it."""
    seed_everything(seed)
    model = zoo.create_model(name, input_shape=task.input_shape, num_classes=task.num_classes, **overrides)
    if transform is not None:
        model = transform(model)
    model = model.to(device)
    result = train(model, data, task, recipe, device=device, seed=seed, refine_at_epochs=refine_at_epochs)
    return model, result


class Start(NamedTuple):
    """What every study starts from: checked seeds, the device, its provenance taken at the start, the task, its
    data, the study recipe and the wall clock."""

    seeds: list[int]
    device: torch.device
    provenance: dict[str, Any]
    task: Task
    data: TaskData
    recipe: Recipe
    clock: float


def begin(task_name: str, seeds: Sequence[int], device: torch.device | None, limit: int | None) -> Start:
    """Check the arguments, take the provenance, load the data: the opening of every study's `run`."""
    clock = time.perf_counter()
    seeds = check_seeds(seeds)
    device = device or torch.device("cpu")
    started = provenance(device)
    task, data = load(task_name, limit)
    return Start(seeds, device, started, task, data, study_recipe(task_name), clock)


def provenance(device: torch.device) -> dict[str, Any]:
    """The run's provenance taken when it starts: the git state of the code that runs (the checkout may change
    while a study trains); `save` adds the finishing time."""
    return run_provenance(device, now())


def save(results: Path, *, study: str, task: str, seeds: Sequence[int], per_seed: Mapping[str, Sequence[float]],
         rows: Sequence[Mapping[str, Any]], provenance: Mapping[str, Any], details: Mapping[str, Any],
         figure: str | None = None, tier: str | None = None) -> Path:
    """The study file, with the study's declaration (title, claims, figure spec), the recipe and the provenance."""
    from benchmarks.studies.registry import STUDIES

    header = STUDIES[study].header() if study in STUDIES else {}
    return write_study(results, study=study, task=task, tier=tier or study_tier(task), seeds=seeds,
                       per_seed=per_seed, rows=rows, provenance={**provenance, "finished": now()}, figure=figure,
                       details={**header, **details})


def study_clock(device: torch.device) -> Callable[[], float]:
    """The clock a study times its arms with (training time, inference throughput). On CPU: the process's CPU time;
    with the one torch thread `depthbench study` sets, that is the wall time the work takes on a core of its own,
    where wall time on a shared machine would also measure the neighbours' load. On a GPU: wall time, device
    synchronised before each reading."""
    if device.type == "cpu":
        return time.process_time

    def wall() -> float:
        sync(device)
        return time.perf_counter()

    return wall


def run_seeds(work: Callable[..., Any], start: Start, *, limit: int | None, workers: int = 1,
              variants: Sequence[Mapping[str, Any]] = ({},), **options: Any) -> list[Any]:
    """`work(start, seed, **options, **variant)` for every variant and seed of `start`, results variant by variant,
    each in seed order. With `workers` > 1 (CPU only), in that many spawned processes of one torch thread each: each
    loads the task and its data itself (`limit` as the parent did), so `work` must be a module-level function
    returning picklable values. Calls start in that order as workers free up: give the costliest variant first (a
    study's arms as variants spread over both cores where its seeds alone would not). A call's result does not depend
    on the process it ran in (seeded; one thread)."""
    calls = [(seed, {**options, **variant}) for variant in variants for seed in start.seeds]
    if min(int(workers), len(calls)) <= 1:
        return [work(start, seed, **kwargs) for seed, kwargs in calls]
    if start.device.type != "cpu":
        raise ValueError(f"workers > 1 runs seeds in CPU processes; on {start.device} give workers 1")
    bare = start._replace(task=None, data=None)  # a Task holds its loader (not picklable): children load by name
    return in_processes(_seed_in_child, [(work, bare, start.task.name, limit, seed, kwargs) for seed, kwargs in calls],
                        workers)


def in_processes(work: Callable[..., Any], calls: Sequence[tuple[Any, ...]], workers: int) -> list[Any]:
    """`work(*args)` for every `args` of `calls`, results in order: here when `workers` <= 1, else in that many
    spawned processes of one torch thread each (`work` module-level, its arguments and result picklable)."""
    workers = min(int(workers), len(calls))
    if workers <= 1:
        return [work(*args) for args in calls]
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=torch.set_num_threads, initargs=(1,)) as pool:
        return [future.result() for future in [pool.submit(work, *args) for args in calls]]


def _seed_in_child(work: Callable[..., Any], bare: Start, task_name: str, limit: int | None, seed: int,
                   options: dict[str, Any]) -> Any:
    task, data = load(task_name, limit)
    return work(bare._replace(task=task, data=data), seed, **options)


def trained_model(name: str, tier: Protocol, task: Any, data: Any, seed: int, device: torch.device,
                  checkpoints: Path | None) -> tuple[torch.nn.Module, str]:
    """The tier's model `name` of `seed`: the best weights kept beside its record in `checkpoints` (a store run with
    `--keep-checkpoints`) when they are that run's, else trained here exactly as the tier's runner trains it."""
    seed_everything(seed)
    model = zoo.create_model(name, input_shape=task.input_shape, num_classes=task.num_classes,
                             **tier.model_overrides).to(device)
    recipe = recipe_for(tier, task.name)
    if checkpoints is not None:  # its own kept weights, else those of the same training under another tier hash
        own = checkpoint_for(record_path(checkpoints, name, task.name, tier.task_hash(task.name), seed))
        kept = TrainingCheckpoint(own, checkpoint_identity(tier, task.name, name, seed))
        found = kept.finished_twin([own, *kept_elsewhere(own)], device)
        if found is not None:
            model.load_state_dict(found[1]["best_state"])
            return model.eval(), f"weights of {found[0]}"
    train(model, data, task, recipe, device=device, seed=seed)
    return model.eval(), "trained here with the tier's recipe"
