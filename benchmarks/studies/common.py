"""What every study shares: the CPU study recipe and size, data loading, seeding and writing the study file."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

import zoo
from benchmarks.data.tasks import Task, TaskData, get_task
from benchmarks.protocols import SMOKE, Recipe, recipe_for
from benchmarks.store.provenance import now, run_provenance
from benchmarks.store.studies import write_study
from benchmarks.training.train import MAX_SEED, TrainResult, seed_everything, train

TIER = "cpu-study"
# The smoke tier's recipe and size class with more epochs: the smoke tier's 4 epochs leave digits models far from
# converged, and a study compares trainings, so each must have finished learning. 8 epochs split evenly into the
# refinement study's four stages.
EPOCHS = 8
WIDTH = 16
TASKS = ("digits",)


def study_recipe(task: str) -> Recipe:
    """The recipe every arm of a study trains with (the smoke tier's for `task`, `EPOCHS` epochs)."""
    if task not in TASKS:
        raise ValueError(f"the studies run on {', '.join(TASKS)}; got task {task!r}")
    return dataclasses.replace(recipe_for(SMOKE, task), epochs=EPOCHS)


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
         figure: str | None = None) -> Path:
    """The study file, with the recipe and the run's provenance."""
    return write_study(results, study=study, task=task, tier=TIER, seeds=seeds, per_seed=per_seed, rows=rows,
                       provenance={**provenance, "finished": now()}, figure=figure, details=details)
