"""Refinement training (Queiruga et al. 2020): ContinuousNet deepened on a schedule vs trained at full depth.

Both arms are the registry's `continuousnet` (RK4, piecewise-linear basis over [0, DEPTH]) with the same recipe and
the same total epochs. The full arm has 8 elements and 8 steps from the start; the refined arm starts with 1 element
and 1 step and is refined before epochs 3, 5 and 7 (1 -> 2 -> 4 -> 8 steps, two epochs per stage) by
`train(..., refine_at_epochs=...)`, which calls `model.refine()`: each refinement represents exactly the same
theta(t) on twice the elements, so the network is the same ODE on a grid of twice the steps. Both end with the same
architecture; their test accuracy and `train()`'s wall-clock training time (refinements included) are compared.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from benchmarks.evaluation.metrics import accuracy
from benchmarks.studies.common import WIDTH, begin, build_and_train, save
from benchmarks.studies.registry import register_study

STUDY = "refinement"
DEPTH = 8  # the stage's depth interval [0, 8], and the final number of elements and RK4 steps
STAGES = 4  # 1 -> 2 -> 4 -> 8 steps
MODEL = "continuousnet"


def schedule(epochs: int, stages: int = STAGES) -> list[int]:
    """Epochs before which to refine so that `stages` stages get equal shares of `epochs` (e.g. 8, 4 -> 3, 5, 7)."""
    if stages < 1 or epochs < stages or epochs % stages:
        raise ValueError(f"{epochs} epochs do not split into {stages} equal stages")
    return [1 + k * epochs // stages for k in range(1, stages)]


@register_study("refinement", title="Refinement training vs full depth (Queiruga et al. 2020)",
                summary="ContinuousNet deepened 1 -> 2 -> 4 -> 8 steps during training against full depth from the "
                "start", claims=("queiruga-refinement",), task="digits")
def run(task_name: str, seeds: Sequence[int], results: Path, *, device: torch.device | None = None,
        limit: int | None = None, figure: str | None = None, epochs: int | None = None) -> Path:
    """Train both arms for every seed; write `results/refinement/<task>.json`."""
    seeds, device, started, task, data, recipe, clock = begin(task_name, seeds, device, limit)
    if epochs is not None:
        recipe = dataclasses.replace(recipe, epochs=epochs)
    refine_at = schedule(recipe.epochs)
    first = DEPTH // 2 ** len(refine_at)  # elements (= RK4 steps) of the first stage
    arms = {
        "refined": dict(n_basis=first + 1, n_steps=first, refine_at_epochs=refine_at),
        "full": dict(n_basis=DEPTH + 1, n_steps=DEPTH, refine_at_epochs=()),
    }
    per_seed: dict[str, list[float]] = {f"{arm}_{q}": [] for arm in arms for q in ("accuracy", "train_seconds")}
    rows = []
    x_test, y_test = data.test.inputs().to(device), data.test.y.to(device)
    for seed in seeds:
        for arm, setting in arms.items():
            model, trained = build_and_train(MODEL, task, data, recipe, seed, device, width=WIDTH, depth=DEPTH,
                                             **setting)
            acc = accuracy(model, x_test, y_test, batch_size=500)
            per_seed[f"{arm}_accuracy"].append(acc)
            per_seed[f"{arm}_train_seconds"].append(trained.train_seconds)
            schedule_text = _steps(setting["n_steps"], setting["refine_at_epochs"])
            rows.append({"arm": arm, "seed": seed, "steps_schedule": schedule_text,
                         "final_steps": model.solvers[0].n_steps, "params": sum(p.numel() for p in model.parameters()),
                         "accuracy": acc, "val_accuracy": trained.val_metric, "best_epoch": trained.best_epoch,
                         "train_seconds": trained.train_seconds})
    details = {"columns": ["arm", "seed", "steps_schedule", "final_steps", "params", "accuracy", "val_accuracy",
                           "best_epoch", "train_seconds"], "model": MODEL, "width": WIDTH, "depth": DEPTH,
        "recipe": dataclasses.asdict(recipe), "refine_at_epochs": refine_at, "first_steps": first,
        "reference": "Queiruga et al. 2020, arXiv 2008.02389 (refinement training)",
        "seconds": round(time.perf_counter() - clock, 1),
        "note": "train_seconds: train()'s wall clock over all epochs (refinements and validation included); "
                "the refined arm keeps the best validation epoch after its last refinement; after a refinement "
                "the optimizer is new and the learning-rate schedule continues"}
    return save(results, study=STUDY, task=task.name, seeds=seeds, per_seed=per_seed, rows=rows, provenance=started,
                details=details, figure=figure)


def _steps(first: int, refine_at: Sequence[int]) -> str:
    return " -> ".join(str(first * 2**k) for k in range(len(refine_at) + 1))
