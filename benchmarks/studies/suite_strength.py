"""Is the cpu tier's reduced attack suite as strong as the full-strength one? The check that justifies its budgets.

The standard tier attacks with AutoAttack's budgets (PGD 50 steps x 5 starts, APGD 100 steps x 5 starts, 9 target
classes, Square with 5,000 queries); on a CPU that costs more than 20 minutes per 100 images of an adaptive model,
so the `cpu` tier runs the same suite (every attack, same order, same seeds) with smaller budgets. This study
trains the tier's models (or reuses their weights, kept by `depthbench run --tier cpu --keep-checkpoints`), attacks
the first `EXAMPLES` test images with both budgets at every radius of the task and reports the robust accuracy of
each: the reduced suite may be at most `TOLERANCE` (1 point) weaker, per model and radius.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from benchmarks.evaluation.attacks import robustness_suite
from benchmarks.evaluation.surrogate import resnet_surrogate
from benchmarks.protocols import CPU, Evaluation, Protocol
from benchmarks.specs import MetricKey
from benchmarks.store.provenance import now, run_provenance
from benchmarks.store.studies import write_study
from benchmarks.studies.common import load, trained_model
from benchmarks.studies.registry import register_study

STUDY = "suite-strength"
MODELS = ("resnet", "continuousnet", "neural-ode")  # a ResNet, a fixed-step ODE model and an adaptive one
EXAMPLES = 200
TOLERANCE = 0.01  # the reduced suite's robust accuracy may exceed the full suite's by at most 1 point
BUDGETS = ("pgd_steps", "pgd_restarts", "apgd_steps", "apgd_restarts", "square_queries", "autoattack_targets")


FULL_BUDGETS = {f.name: f.default for f in dataclasses.fields(Evaluation) if f.name in BUDGETS}
"""Full strength: `Evaluation`'s defaults, AutoAttack's standard budgets (50x5 PGD, 100-step APGD, all 9 target classes,
5,000 Square queries). Not a tier's: the standard tier v3 itself reduces them to fit a GPU lent by the minute."""


def full_strength(tier: Protocol = CPU, budgets: Mapping[str, int] = FULL_BUDGETS) -> Evaluation:
    """The tier's evaluation with the full-strength attack budgets (FULL_BUDGETS; tests pass small ones)."""
    return dataclasses.replace(tier.evaluation, **budgets)


@register_study("suite-strength", title="The cpu tier's reduced attack budgets against the full-strength suite",
                summary="robust accuracy of the cpu tier's models under the tier's attack budgets and under "
                "AutoAttack's, on the same images", task="fashion-mnist", seeds=(0,), options=("checkpoints",))
def run(task_name: str, seeds: Sequence[int], results: Path, *, device: torch.device | None = None,
        limit: int | None = None, figure: str | None = None, checkpoints: Path | None = None,
        models: Sequence[str] = MODELS, examples: int = EXAMPLES, tier: Protocol = CPU,
        full_budgets: Mapping[str, int] = FULL_BUDGETS) -> Path:
    """Attack each model with the tier's budgets and with the full-strength ones (FULL_BUDGETS); write
    `results/suite-strength/<task>.json`."""
    clock = time.perf_counter()
    device = device or torch.device("cpu")
    started = run_provenance(device, now())
    task, data = load(task_name, tier.data_limit if limit is None else limit)  # the tier's data, as its runs
    reduced, full = tier.evaluation, full_strength(tier, full_budgets)
    x, y = data.test.inputs()[:examples].to(device), data.test.y[:examples].to(device)
    rows, gaps = [], {int(s): [] for s in seeds}
    for seed in seeds:
        for name in models:
            model, source = trained_model(name, tier, task, data, seed, device, checkpoints)
            surrogate = resnet_surrogate(task, data, tier, seed, device, name)
            outcome = {}
            for label, ev in (("reduced", reduced), ("full", full)):
                tick = time.perf_counter()
                suite = robustness_suite(model, x, y, eps_grid=task.attack_eps, headline_eps=task.headline_eps,
                                         ev=ev, batch_size=ev.eval_batch, seed=0, surrogate=surrogate)
                outcome[label] = (suite.metrics, time.perf_counter() - tick)
            for eps in task.attack_eps:
                key = str(MetricKey("robust", eps))
                low, high = outcome["reduced"][0][key], outcome["full"][0][key]
                gaps[int(seed)].append(low - high)
                rows.append({"model": name, "seed": int(seed), "eps": eps, "reduced": low, "full": high,
                             "difference": low - high, "within_tolerance": low - high <= TOLERANCE + 1e-12,
                             "reduced_seconds": round(outcome["reduced"][1], 1),
                             "full_seconds": round(outcome["full"][1], 1), "weights": source})
    per_seed = {"largest_gap": [max(gaps[int(s)]) for s in seeds],
                "mean_gap": [sum(gaps[int(s)]) / len(gaps[int(s)]) for s in seeds]}
    details = {"columns": ["model", "seed", "eps", "reduced", "full", "difference", "within_tolerance",
                           "reduced_seconds", "full_seconds", "weights"],
               "tier": tier.name, "tier_hash": tier.task_hash(task.name), "examples": examples,
               "models": list(models), "tolerance": TOLERANCE,
               "reduced_budgets": {k: getattr(reduced, k) for k in BUDGETS},
               "full_budgets": {k: getattr(full, k) for k in BUDGETS},
               "passed": all(r["within_tolerance"] for r in rows),
               "seconds": round(time.perf_counter() - clock, 1),
               "note": f"Robust accuracy (per-example worst case over the whole suite) on the first {examples} test "
                       f"images under the {tier.name} tier's reduced budgets and under the full-strength ones "
                       f"({', '.join(f'{k} {getattr(full, k)}' for k in BUDGETS)}); difference = reduced - full, "
                       f"allowed at most {TOLERANCE * 100:g} point per model and radius"}
    return write_study(results, study=STUDY, task=task.name, tier=tier.name, seeds=list(seeds), per_seed=per_seed,
                       rows=rows, provenance={**started, "finished": now()}, figure=figure, details=details)
