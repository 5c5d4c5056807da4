"""Compression by depth transfer (Queiruga et al. 2020): the cheapest manifestation within 0.5 pt of the trained
accuracy, its NFE and its measured batch-1 latency speed-up.

Every depth-transferable model of `MODELS` is trained with the study recipe, then evaluated on the whole test set
under every scheme of the tier grid at the step counts of `FACTORS` x its trained steps
(`benchmarks.evaluation.depth_transfer`, whose `latency_ms` is the median batch-1 latency after a warm-up, device
synchronised: `timing.measure`). The cheapest setting is the one with the fewest rate evaluations whose accuracy is
at most 0.5 pt below the trained setting's (ties: the trained setting, so no speed-up is claimed from a tie) — the
rule of the records' `dt_fewest_nfe`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.evaluation.depth_transfer import depth_transfer
from benchmarks.protocols import SMOKE
from benchmarks.studies.common import WIDTH, begin, build_and_train, save
from benchmarks.studies.registry import register_study

STUDY = "compression"
DEPTH = 8
# Fixed-step models: these multiples of the trained steps (8 -> 1, 2, 3, 4, 5, 6, 8, 16 steps); fractions such as
# 3/8 and 6/8 reach step counts like the paper's 32 -> 6.
FACTORS = (0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 1.0, 2.0)
# n_basis = DEPTH + 1 hat functions: DEPTH elements, so the RK4 model takes DEPTH steps (Euler: 2 x DEPTH), like the
# ResNet's DEPTH blocks, and the fractional factors give whole step counts.
MODELS = {"continuousnet": {"n_basis": DEPTH + 1}, "continuousnet-euler": {"n_basis": DEPTH + 1}, "resnet": {}}
HEADLINE = "continuousnet"  # the RK4-trained model the summary quantities are of
TOLERANCE = 0.005  # 0.5 pt of accuracy
LATENCY_REPEATS = 30
PAPER = {
    "label": "Queiruga et al. 2020 (CIFAR-10, their numbers)",
    "trained_accuracy": "0.9357 (RK4, 32-32-32 steps)",
    "compressed_accuracy": "0.9228 (RK4-3/8, 6-6-6 steps)",
    "latency_speedup": "5.21 (32.55 s -> 6.25 s)",
    "nfe_ratio": "5.33 (32 -> 6 steps per stage, 4-stage schemes both)",
}


def cheapest(entries: Sequence[dict[str, Any]], tolerance: float = TOLERANCE) -> tuple[dict[str, Any],
                                                                                        dict[str, Any]]:
    """(trained entry, cheapest entry within `tolerance` of its accuracy) of a depth-transfer grid."""
    trained = next(e for e in entries if e["trained"])
    good = [e for e in entries if "failed" not in e and e["accuracy"] >= trained["accuracy"] - tolerance - 1e-12]
    return trained, min(good, key=lambda e: (e["nfe"], not e["trained"]))


@register_study("compression", title="Compression by depth transfer: the cheapest manifestation within 0.5 pt "
                "(Queiruga et al. 2020)", summary="a trained ContinuousNet re-run with fewer steps and cheaper "
                "schemes: accuracy, NFE and latency of the cheapest setting within 0.5 pt",
                claims=("queiruga-compression",), task="digits")
def run(task_name: str, seeds: Sequence[int], results: Path, *, device: torch.device | None = None,
        limit: int | None = None, figure: str | None = None, models: dict[str, dict[str, Any]] | None = None) -> Path:
    """Train every model for every seed, find its cheapest manifestation; write `results/compression/<task>.json`."""
    models = MODELS if models is None else models
    if HEADLINE not in models:
        raise ValueError(f"the compression study summarises {HEADLINE}; include it in the models")
    seeds, device, started, task, data, recipe, clock = begin(task_name, seeds, device, limit)
    schemes = SMOKE.evaluation.transfer_schemes
    x_test, y_test = data.test.inputs().to(device), data.test.y.to(device)
    per_seed: dict[str, list[float]] = {k: [] for k in ("trained_accuracy", "compressed_accuracy",
                                                         "latency_speedup", "nfe_ratio")}
    rows = []
    for seed in seeds:
        for name, overrides in models.items():
            model, _ = build_and_train(name, task, data, recipe, seed, device, width=WIDTH, depth=DEPTH, **overrides)
            entries, _ = depth_transfer(model, x_test, y_test, kind="classification", factors=FACTORS,
                                        schemes=schemes, tolerances=(), batch_size=500, latency_example=x_test[:1],
                                        device=device, latency_repeats=LATENCY_REPEATS)
            trained, best = cheapest(entries)
            speedup, ratio = trained["latency_ms"] / best["latency_ms"], trained["nfe"] / best["nfe"]
            rows.append({"model": name, "seed": seed, "trained": f"{trained['scheme']} x{trained['n_steps']}",
                         "trained_accuracy": trained["accuracy"], "trained_nfe": trained["nfe"],
                         "trained_latency_ms": trained["latency_ms"],
                         "cheapest": f"{best['scheme']} x{best['n_steps']}",
                         "cheapest_scheme": best["scheme"], "cheapest_steps": best["n_steps"],
                         "cheapest_accuracy": best["accuracy"], "cheapest_nfe": best["nfe"],
                         "cheapest_latency_ms": best["latency_ms"], "nfe_ratio": ratio, "latency_speedup": speedup})
            if name == HEADLINE:
                for key, value in (("trained_accuracy", trained["accuracy"]), ("compressed_accuracy",
                                   best["accuracy"]), ("latency_speedup", speedup), ("nfe_ratio", ratio)):
                    per_seed[key].append(value)
    details = {"columns": ["model", "seed", "trained", "trained_accuracy", "trained_nfe", "trained_latency_ms",
                           "cheapest", "cheapest_accuracy", "cheapest_nfe", "cheapest_latency_ms", "nfe_ratio",
                           "latency_speedup", "cheapest_scheme", "cheapest_steps"],
               "headline_model": HEADLINE, "models": list(models), "width": WIDTH, "depth": DEPTH,
               "recipe": dataclasses.asdict(recipe), "factors": list(FACTORS), "schemes": list(schemes),
               "tolerance": TOLERANCE, "latency": f"batch-1 median of {LATENCY_REPEATS} (1 warm-up), one thread",
               "paper": PAPER, "seconds": round(time.perf_counter() - clock, 1),
               "note": f"Summary quantities are of {HEADLINE} (RK4, trained at {DEPTH} steps); cheapest = fewest NFE "
                       f"within {TOLERANCE * 100:g} pt of the trained accuracy on the whole test set, over "
                       f"{', '.join(schemes)} at {', '.join(f'{f:g}' for f in FACTORS)} x the trained steps; latency "
                       "is batch-1, median after a warm-up; the paper's column is CIFAR-10, not measured here"}
    return save(results, study=STUDY, task=task.name, seeds=seeds, per_seed=per_seed, rows=rows, provenance=started,
                details=details, figure=figure)
