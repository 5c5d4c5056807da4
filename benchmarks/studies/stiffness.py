"""Stiffness penalty (after Hudson et al. 2023): ContinuousNet trained plain vs with a penalty on its rate
Jacobian's spectral radius (`zoo.penalty.penalise_stiffness`: sigma_max(df/dx) by power iteration, differentiable),
same recipe otherwise, and the effect on

- accuracy (test set);
- robust accuracy at the task's headline radius: the attack suite of `benchmarks/evaluation/attacks.py` at the
  smoke tier's small budget, on the first `ATTACK_SUBSET` test examples;
- depth-transfer error: the mean |accuracy change| over the fixed-step manifestations of the smoke tier's grid
  (every scheme at 0.5x, 1x and 2x the trained steps, the trained setting itself left out), a fraction;
- the stiffness diagnostic of `benchmarks/evaluation/diagnostics.py`: T x sigma_max of the rate Jacobian along the
  test trajectories (`jacobian_sigma_max`, 20 power iterations, on `DIAGNOSTIC_SUBSET` test examples).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from benchmarks.evaluation.attacks import robustness_suite
from benchmarks.evaluation.depth_transfer import depth_transfer
from benchmarks.evaluation.diagnostics import trajectory_diagnostics
from benchmarks.evaluation.metrics import accuracy
from benchmarks.protocols import SMOKE
from benchmarks.specs import MetricKey
from benchmarks.studies.common import WIDTH, begin, build_and_train, save
from benchmarks.studies.registry import register_study
from zoo.penalty import penalise_stiffness

STUDY = "stiffness"
MODEL = "continuousnet"
DEPTH = 6  # and DEPTH + 1 hat functions: DEPTH elements, DEPTH RK4 steps (0.5x of it is a whole number)
WEIGHT = 0.01  # the penalty weight of the zoo's resnet-stiffness (not tuned)
ATTACK_SUBSET = 200
DIAGNOSTIC_SUBSET = 128


def transfer_error(entries: Sequence[dict]) -> float:
    """Mean |accuracy - trained accuracy| over the manifestations other than the trained one (a failed one counts as
    accuracy 0: all of the trained accuracy lost)."""
    trained = next(e for e in entries if e["trained"])
    others = [e for e in entries if not e["trained"]]
    if not others:
        raise ValueError("a depth-transfer grid with only the trained setting has no transfer error")
    return statistics.fmean(abs((e["accuracy"] if "failed" not in e else 0.0) - trained["accuracy"])
                            for e in others)


@register_study("stiffness", title="Stiffness penalty on the rate Jacobian's largest singular value",
                summary="ResNet trained plain and with the engine's stiffness penalty: accuracy, robustness, "
                "stiffness, depth transfer", task="digits")
def run(task_name: str, seeds: Sequence[int], results: Path, *, device: torch.device | None = None,
        limit: int | None = None, figure: str | None = None, weight: float = WEIGHT) -> Path:
    """Train both arms for every seed and measure them; write `results/stiffness/<task>.json`."""
    seeds, device, started, task, data, recipe, clock = begin(task_name, seeds, device, limit)
    ev = SMOKE.evaluation
    headline = task.headline_eps
    x_test, y_test = data.test.inputs().to(device), data.test.y.to(device)
    per_seed: dict[str, list[float]] = {f"{arm}_{q}": [] for arm in ("plain", "penalised") for q in (
        "accuracy", "robust_accuracy", "stiffness", "transfer_error")}
    rows = []
    for seed in seeds:
        for arm, transform in (("plain", None), ("penalised", lambda m: penalise_stiffness(m, weight))):
            model, trained = build_and_train(MODEL, task, data, recipe, seed, device, transform=transform,
                                             width=WIDTH, depth=DEPTH, n_basis=DEPTH + 1)
            model.eval()
            acc = accuracy(model, x_test, y_test, batch_size=500)
            suite = robustness_suite(model, x_test[:ATTACK_SUBSET], y_test[:ATTACK_SUBSET], eps_grid=(headline,),
                                     headline_eps=headline, ev=ev, batch_size=500, seed=0)
            robust = suite.metrics[str(MetricKey("robust", headline))]
            entries, _ = depth_transfer(model, x_test, y_test, kind="classification", factors=ev.transfer_factors,
                                        schemes=ev.transfer_schemes, tolerances=(), batch_size=500)
            error = transfer_error(entries)
            diagnostics, _ = trajectory_diagnostics(model, x_test[:DIAGNOSTIC_SUBSET], points=ev.track_points,
                                                    iterations=20)
            stiffness = diagnostics["jacobian_sigma_max"]
            for key, value in (("accuracy", acc), ("robust_accuracy", robust), ("stiffness", stiffness),
                               ("transfer_error", error)):
                per_seed[f"{arm}_{key}"].append(value)
            rows.append({"arm": arm, "seed": seed, "weight": weight if arm == "penalised" else 0.0, "accuracy": acc,
                         "robust_accuracy": robust, "transfer_error": error, "stiffness": stiffness,
                         "h_sigma_max": diagnostics.get("jacobian_h_sigma_max"), "flags": ",".join(suite.flags),
                         "train_seconds": trained.train_seconds})
    details = {"columns": ["arm", "seed", "weight", "accuracy", "robust_accuracy", "transfer_error", "stiffness",
                           "h_sigma_max", "flags", "train_seconds"],
               "model": MODEL, "width": WIDTH, "depth": DEPTH, "weight": weight, "recipe": dataclasses.asdict(recipe),
               "headline_eps": headline, "attack_subset": ATTACK_SUBSET, "attack_budget": "smoke tier's evaluation",
               "transfer_factors": list(ev.transfer_factors), "transfer_schemes": list(ev.transfer_schemes),
               "seconds": round(time.perf_counter() - clock, 1),
               "reference": "Hudson et al. 2023, Measuring Stiffness in Residual Neural Networks",
               "note": f"{MODEL} (RK4, {DEPTH} steps, width {WIDTH}) plain vs with {weight:g} x mean sigma_max(df/dx) "
                       "(3 power iterations on 8 samples per batch) added to the loss; robust = worst case of the "
                       f"attack suite (smoke budget) at eps {headline:.4g} on {ATTACK_SUBSET} test examples; "
                       "transfer_error = mean |accuracy change| over the other fixed-step manifestations "
                       f"({', '.join(ev.transfer_schemes)} at {', '.join(f'{f:g}' for f in ev.transfer_factors)} x "
                       "steps); stiffness = T x sigma_max of the rate Jacobian along the test trajectories (mean over "
                       f"{DIAGNOSTIC_SUBSET} examples of the max over depth)"}
    return save(results, study=STUDY, task=task.name, seeds=seeds, per_seed=per_seed, rows=rows, provenance=started,
                details=details, figure=figure)
