"""Refinement training vs full depth at equal training time (Queiruga et al. 2020).

The seed (000): "ContinuousNet can also iteratively deepen its graph during training" (000:495), "Save time by
training on shorter graphs initially" (000:571), and the abstract: "an incremental-in-depth training scheme that
improves model quality, while significantly decreasing training time" (000:640).

Both arms are the registry's `continuousnet` (RK4 on a piecewise-linear basis over [0, DEPTH]) with the study recipe
and the same seed (initialisation and data order). `full` has DEPTH elements and DEPTH steps from the start and trains
the recipe's epochs. `refined` starts with 1 element and 1 step and is refined 1 -> 2 -> 4 -> 8
(`train(refine_at_epochs=...)`: each refinement represents the same theta(t) on twice the elements, and the optimiser
state is mapped like the parameters, benchmarks/training/refine.py) and trains for as many whole epochs as fit in the
full arm's measured training time: the time of one training step at each depth is measured (interleaved rounds,
median per depth), an epoch at depth d is predicted as the full arm's epoch time x step(d) / step(DEPTH), and the
largest epoch count whose stages (as even as possible, the remainder to the deepest) fit that budget is trained, its
one-cycle schedule sized for that count. Time-to-target: the training time each arm needs until its validation
accuracy first reaches the full arm's final validation accuracy minus 1 pt (per-epoch history). Times are
`common.study_clock`'s (on CPU the process's CPU time, one torch thread: unaffected by other processes' load).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

import zoo
from benchmarks.evaluation.metrics import evaluate
from benchmarks.protocols import Recipe
from benchmarks.studies.common import WIDTH, Start, begin, run_seeds, save, study_clock
from benchmarks.studies.registry import register_study
from benchmarks.training.train import augment, batch_inputs, seed_everything, train

STUDY = "refinement"
DEPTH = 8  # the stage's depth interval [0, 8], and the final number of elements and RK4 steps
STAGES = 4  # 1 -> 2 -> 4 -> 8 steps
MODEL = "continuousnet"
TARGET_MARGIN = 0.01  # time-to-target: the full arm's final validation accuracy minus 1 pt
TIMING_STEPS = 3  # timed training steps per depth and round (after one untimed warm-up step per depth)
TIMING_ROUNDS = 3  # rounds alternating the depths; the median per depth is kept
MAX_EPOCH_FACTOR = 4  # the refined arm trains at most 4x the full arm's epochs (a guard against a bad timing)


def stage_epochs(epochs: int, stages: int = STAGES) -> list[int]:
    """Epochs per stage, as even as possible; the remainder goes to the deepest stages (the final depth is the one
    evaluated). 10 epochs, 4 stages -> [2, 2, 3, 3]."""
    if stages < 1 or epochs < stages:
        raise ValueError(f"{epochs} epochs cannot give each of {stages} stages an epoch")
    base, extra = divmod(epochs, stages)
    return [base + (1 if k >= stages - extra else 0) for k in range(stages)]


def refine_epochs(lengths: Sequence[int]) -> list[int]:
    """The epochs before which to refine: the first epoch of every stage after the first ([2, 2, 3, 3] -> 3, 5, 8)."""
    starts, epoch = [], 1
    for n in lengths[:-1]:
        epoch += n
        starts.append(epoch)
    return starts


def epochs_that_fit(budget: float, epoch_seconds: Sequence[float], cap: int) -> tuple[int, float]:
    """(E, predicted seconds): the most epochs E (at least one per stage, at most `cap`) whose stages
    `stage_epochs(E)` at `epoch_seconds[k]` per epoch of stage k take at most `budget` seconds."""
    stages = len(epoch_seconds)

    def predicted(epochs: int) -> float:
        return sum(n * s for n, s in zip(stage_epochs(epochs, stages), epoch_seconds))

    epochs = stages
    while epochs < cap and predicted(epochs + 1) <= budget:
        epochs += 1
    return epochs, predicted(epochs)


def time_to_target(marks: Sequence[tuple[float, float]], target: float) -> float | None:
    """The time of the first (validation accuracy, time) mark whose accuracy reaches `target`; None if none does."""
    return next((seconds for val, seconds in marks if val >= target - 1e-12), None)


def step_seconds(start: Start, seed: int, depths: Sequence[int], clock: Callable[[], float]) -> dict[int, float]:
    """Seconds of one training step (batch of the recipe's size, forward, backward, Adam) at each depth: one warm-up
    step per depth, then `TIMING_ROUNDS` rounds that alternate the depths, the median per depth."""
    task, data, recipe, device = start.task, start.data, start.recipe, start.device
    image = len(task.input_shape) == 3
    batch = data.train.x[:recipe.batch_size].to(device)
    labels = data.train.y[:recipe.batch_size].to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    runs = {}
    for depth in depths:
        torch.manual_seed(seed)
        model = zoo.create_model(MODEL, input_shape=task.input_shape, num_classes=task.num_classes, width=WIDTH,
                                 depth=DEPTH, n_basis=depth + 1, n_steps=depth).to(device).train()
        runs[depth] = (model, torch.optim.Adam(model.parameters(), lr=recipe.lr))

    def step(depth: int) -> None:
        model, optimizer = runs[depth]
        x = augment(batch_inputs(batch, image), recipe.augment, generator) if image else batch
        loss = F.cross_entropy(model(x), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for depth in depths:
        step(depth)
    times: dict[int, list[float]] = {d: [] for d in depths}
    for _ in range(TIMING_ROUNDS):
        for depth in depths:
            began = clock()
            for _ in range(TIMING_STEPS):
                step(depth)
            times[depth].append((clock() - began) / TIMING_STEPS)
    return {d: statistics.median(t) for d, t in times.items()}


def train_arm(start: Start, seed: int, recipe: Recipe, first: int, refine_at: Sequence[int],
              clock: Callable[[], float]) -> dict[str, Any]:
    """Train one arm from `first` elements/steps (refined before the epochs `refine_at`); its clock marks per epoch
    (after validation), total time and test accuracy."""
    task, data, device = start.task, start.data, start.device
    seed_everything(seed)
    model = zoo.create_model(MODEL, input_shape=task.input_shape, num_classes=task.num_classes, width=WIDTH,
                             depth=DEPTH, n_basis=first + 1, n_steps=first).to(device)
    marks: list[tuple[float, float]] = []
    began = clock()
    result = train(model, data, task, recipe, device=device, seed=seed, refine_at_epochs=refine_at,
                   on_epoch=lambda entry: marks.append((entry["val"], clock() - began)))
    seconds = clock() - began
    accuracy, _ = evaluate(model, data.test.inputs().to(device), data.test.y.to(device), kind="classification",
                           batch_size=500)
    return {"model": model, "result": result, "marks": marks, "seconds": seconds, "accuracy": accuracy}


NAMES = ("full_accuracy", "refined_accuracy", "accuracy_difference", "time_to_target_ratio", "full_train_seconds",
         "refined_train_seconds")


def one_seed(start: Start, seed: int) -> dict[str, Any]:
    """Both arms of one seed: its per-seed values, its rows and its step timings (picklable: `common.run_seeds`)."""
    recipe, clock = start.recipe, study_clock(start.device)
    depths = [DEPTH // 2 ** k for k in reversed(range(STAGES))]  # 1, 2, 4, 8
    wall = time.perf_counter()
    full = train_arm(start, seed, recipe, DEPTH, (), clock)
    full["wall"] = time.perf_counter() - wall
    steps = step_seconds(start, seed, depths, clock)
    epoch_seconds = [full["seconds"] / recipe.epochs * steps[d] / steps[DEPTH] for d in depths]
    n_epochs, predicted = epochs_that_fit(full["seconds"], epoch_seconds, MAX_EPOCH_FACTOR * recipe.epochs)
    lengths = stage_epochs(n_epochs)
    wall = time.perf_counter()
    refined = train_arm(start, seed, dataclasses.replace(recipe, epochs=n_epochs), depths[0], refine_epochs(lengths),
                        clock)
    refined["wall"] = time.perf_counter() - wall
    target = full["marks"][-1][0] - TARGET_MARGIN
    full_hit, refined_hit = time_to_target(full["marks"], target), time_to_target(refined["marks"], target)
    ratio = (refined["seconds"] if refined_hit is None else refined_hit) / full_hit
    values = dict(zip(NAMES, (full["accuracy"], refined["accuracy"], refined["accuracy"] - full["accuracy"], ratio,
                              full["seconds"], refined["seconds"])))
    rows = []
    for arm, trained, schedule, predicted_seconds, hit in (("full", full, [recipe.epochs], None, full_hit),
                                                            ("refined", refined, lengths, predicted, refined_hit)):
        result = trained["result"]
        rows.append({"arm": arm, "seed": seed, "steps_schedule": _steps(schedule),
                     "stage_epochs": "-".join(map(str, schedule)), "epochs": result.epochs,
                     "final_steps": trained["model"].solvers[0].n_steps, "accuracy": trained["accuracy"],
                     "best_val": result.val_metric, "final_val": trained["marks"][-1][0],
                     "best_epoch": result.best_epoch, "train_seconds": trained["seconds"],
                     "predicted_seconds": predicted_seconds, "wall_seconds": trained["wall"], "target": target,
                     "time_to_target": hit, "reached_target": hit is not None})
    timing = {"step_seconds": {str(d): s for d, s in steps.items()},
              "predicted_epoch_seconds": dict(zip(map(str, depths), epoch_seconds))}
    return {"values": values, "rows": rows, "timing": timing}


@register_study("refinement", title="Refinement training vs full depth at equal training time (Queiruga et al. "
                "2020)", summary="ContinuousNet deepened 1 -> 2 -> 4 -> 8 steps (optimiser state kept) for the full "
                "arm's training time, against 8 steps from the start: test accuracy and time to a validation "
                "target", claims=("queiruga-refinement",), task="fashion-mnist", seeds=(0, 1, 2),
                options=("workers",))
def run(task_name: str, seeds: Sequence[int], results: Path, *, device: torch.device | None = None,
        limit: int | None = None, figure: str | None = None, workers: int = 1, epochs: int | None = None) -> Path:
    """Both arms for every seed; write `results/refinement/<task>.json`. `epochs` replaces the full arm's (tests)."""
    start = begin(task_name, seeds, device, limit)
    if epochs is not None:
        start = start._replace(recipe=dataclasses.replace(start.recipe, epochs=epochs))
    outcomes = run_seeds(one_seed, start, limit=limit, workers=workers)
    per_seed = {name: [o["values"][name] for o in outcomes] for name in NAMES}
    rows = [row for o in outcomes for row in o["rows"]]
    details = {"columns": ["arm", "seed", "steps_schedule", "stage_epochs", "epochs", "final_steps", "accuracy",
                           "best_val", "final_val", "best_epoch", "train_seconds", "predicted_seconds",
                           "wall_seconds", "target", "time_to_target", "reached_target"],
               "model": MODEL, "width": WIDTH, "depth": DEPTH, "stages": STAGES,
               "recipe": dataclasses.asdict(start.recipe), "target_margin": TARGET_MARGIN,
               "timing": {str(seed): o["timing"] for seed, o in zip(start.seeds, outcomes)},
               "timing_steps": TIMING_STEPS, "timing_rounds": TIMING_ROUNDS, "workers": workers,
               "clock": "process CPU time (one torch thread)" if start.device.type == "cpu" else
               "wall time, device synchronised",
               "reference": "Queiruga et al. 2020, arXiv 2008.02389 (seed 000: lines 495, 571, 640)",
               "seconds": round(time.perf_counter() - start.clock, 1),
               "note": "Equal training time: the refined arm trains the whole epochs that fit the full arm's measured "
                       "time (predicted from per-depth step timings), its one-cycle schedule sized for them, its "
                       "optimiser state mapped across refinements; accuracies on the test set, of the best-validation "
                       "epoch (after the last refinement); time_to_target_ratio = refined / full time to the full "
                       f"arm's final validation accuracy - {TARGET_MARGIN * 100:g} pt (a refined arm that never "
                       "reaches it: its total time, reached_target false)"}
    return save(results, study=STUDY, task=start.task.name, seeds=start.seeds, per_seed=per_seed, rows=rows,
                provenance=start.provenance, details=details, figure=figure)


def _steps(lengths: Sequence[int]) -> str:
    """'8' for one stage at full depth, '1 -> 2 -> 4 -> 8' for the refined schedule."""
    if len(lengths) == 1:
        return str(DEPTH)
    return " -> ".join(str(DEPTH // 2 ** (len(lengths) - 1 - k)) for k in range(len(lengths)))
