"""Depth transfer: the trained parameters evaluated under other schemes, step counts and tolerances.

A setting ("manifestation") is one `zoo.Solver` per stage, the zoo's own representation of how a block is
discretised; the grid is built from the trained solvers with `zoo.integrate.replace_solver`, so what a stage keeps
(interval, adjoint, step limit) is what the zoo keeps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

import zoo
from benchmarks.evaluation import timing
from benchmarks.evaluation.metrics import Kind, accuracy_of, forward_all, mse_of
from zoo.integrate import Solver, replace_solver

Setting = tuple[Solver, ...]  # one solver per stage
ADAPTIVE_SCHEME = "dopri5"  # adaptive models: the grid's tolerances and the reference solve use it
REFERENCE_SCHEME = "rk4"  # fixed-step models: the reference solve, at twice the finest steps of the grid
REFERENCE_TOLERANCE = 1e-6  # adaptive models: rtol = atol of the reference solve
FIXED_STEPS_OF_ADAPTIVE = (1, 2, 4, 8)  # adaptive models: steps per stage of every fixed-step scheme tried


def _setting(trained: Setting, **changes: Any) -> Setting:
    return tuple(replace_solver(solver, **changes) for solver in trained)


def _build(model: nn.Module, setting: Setting) -> nn.Module:
    first = setting[0]
    if first.adaptive:
        return model.manifest(first.scheme, rtol=first.rtol, atol=first.atol)
    return model.manifest(first.scheme, [solver.n_steps for solver in setting])


def _scaled(setting: Setting, factor: float, scheme: str | None = None) -> Setting | None:
    """`setting` with `factor` times its steps in every stage, or None where that is no whole number of steps.

    Rounding would evaluate another factor than the one a result is labelled with (half of 3 steps is not 2)."""
    steps = [solver.n_steps * factor for solver in setting]
    if any(k < 1 - 1e-9 or abs(k - round(k)) > 1e-9 for k in steps):
        return None
    return tuple(replace_solver(solver, scheme=scheme or solver.scheme, n_steps=round(k))
                 for solver, k in zip(setting, steps))


def _grid(trained: Setting, factors: Sequence[float], schemes: Sequence[str],
          tolerances: Sequence[float]) -> list[Setting]:
    configs = {trained: None}  # an ordered set: the trained setting first, every setting once
    if trained[0].adaptive:
        configs.update({_setting(trained, scheme=ADAPTIVE_SCHEME, rtol=tol, atol=tol): None for tol in tolerances})
        configs.update({_setting(trained, scheme=s, n_steps=n): None for s in schemes for n in FIXED_STEPS_OF_ADAPTIVE})
    else:
        for scheme in dict.fromkeys([*schemes, trained[0].scheme]):  # dt_delta_* and dt_order need the trained scheme
            configs.update({c: None for f in factors if (c := _scaled(trained, f, scheme)) is not None})
    return list(configs)


def depth_transfer(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, kind: Kind,
    factors: Sequence[float] = (0.25, 0.5, 1, 2, 4), schemes: Sequence[str] = ("euler", "midpoint", "rk4", "rk4_38"),
    tolerances: Sequence[float] = (1e-1, 1e-2, 1e-3, 1e-4), batch_size: int,
    latency_example: torch.Tensor | None = None, device: torch.device | None = None, latency_repeats: int = 5,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Evaluate the trained parameters under other schemes, step counts and tolerances ("manifestations").

    A model that learned an ODE keeps its accuracy when re-discretised and its error falls at the scheme's order;
    one that learned a particular discrete map does not. Fixed-step models are evaluated at each of `factors` times
    their trained steps where that is a whole number of steps in every stage (other factors are skipped, not
    rounded); each entry's `factor` is its steps / the trained steps (None against an adaptive trained model).
    Returns the grid entries and the dt_* summary metrics.
    """
    if kind not in ("classification", "regression"):
        raise ValueError(f"kind must be 'classification' or 'regression', got {kind!r}")
    device = torch.device(device) if device is not None else x.device
    trained = tuple(model.solvers)
    configs = _grid(trained, factors, schemes, tolerances)
    if trained[0].adaptive:
        reference_config = _setting(trained, scheme=ADAPTIVE_SCHEME, rtol=REFERENCE_TOLERANCE, atol=REFERENCE_TOLERANCE)
    else:
        finest = [max(c[i].n_steps for c in configs) for i in range(len(trained))]
        reference_config = tuple(replace_solver(s, scheme=REFERENCE_SCHEME, n_steps=2 * n)
                                 for s, n in zip(trained, finest))
    try:
        reference = forward_all(_build(model, reference_config), x, batch_size)[0]
    except zoo.SolverDidNotConverge:
        reference = None  # errors stay unknown; the entries themselves are still worth having
    metric = "accuracy" if kind == "classification" else "mse"
    one = latency_example[:1].to(device) if latency_example is not None else None
    block = model.blocks[0]
    entries = []
    for config in configs:
        manifest = model if config == trained else _build(model, config)
        first, fixed = config[0], not config[0].adaptive
        entry: dict[str, Any] = {
            "scheme": first.scheme, "n_steps": first.n_steps if fixed else None,
            "dt": (block.t1 - block.t0) / first.n_steps if fixed else None, "rtol": None if fixed else first.rtol,
            "factor": first.n_steps / trained[0].n_steps if fixed and not trained[0].adaptive else None,
            "nfe": None, metric: None, "error": None, "latency_ms": None, "trained": config == trained,
        }
        entries.append(entry)
        try:
            outputs, nfe, _ = forward_all(manifest, x, batch_size)
        except zoo.SolverDidNotConverge as error:
            entry["failed"] = f"solver did not converge: {error}"
            continue
        entry["nfe"] = round(nfe) if fixed else nfe
        if not torch.isfinite(outputs).all():
            entry["failed"] = "non-finite outputs"
            continue
        entry[metric] = accuracy_of(outputs, y) if metric == "accuracy" else mse_of(outputs, y)
        if reference is not None:
            entry["error"] = (outputs - reference).abs().flatten(1).amax(dim=1).double().mean().item()
        if latency_example is not None:
            with torch.no_grad():
                stats = timing.measure(lambda m=manifest: m(one), device=device, warmup=1, repeats=latency_repeats)
            entry["latency_ms"] = stats["median_ms"]
    return entries, _summary(entries, configs, trained, metric)


def _summary(entries: list[dict[str, Any]], configs: list[Setting], trained: Setting, metric: str,
             ) -> dict[str, float]:
    by_config = dict(zip(configs, entries))
    base = by_config[trained]
    summary: dict[str, float] = {}
    if "failed" in base:
        return summary
    ok = [e for e in entries if "failed" not in e]
    if not trained[0].adaptive:
        for name, factor in (("dt_delta_2x", 2.0), ("dt_delta_half", 0.5)):
            other = by_config.get(_scaled(trained, factor))
            if other is None or other is base or "failed" in other:
                continue
            if metric == "accuracy":
                summary[name] = 100.0 * (other[metric] - base[metric])
            elif base[metric] > 0:
                summary[name] = other[metric] / base[metric] - 1.0
    if metric == "accuracy":
        good = [e for e in ok if e[metric] >= base[metric] - 0.005 - 1e-12]
    else:
        good = [e for e in ok if e[metric] <= 1.1 * base[metric]]
    cheapest = min(good, key=lambda e: (e["nfe"], not e["trained"]))  # ties: no speedup to claim
    summary["dt_fewest_nfe"] = cheapest["nfe"]
    if base["latency_ms"] and cheapest["latency_ms"]:
        summary["dt_speedup"] = base["latency_ms"] / cheapest["latency_ms"]
    if not trained[0].adaptive:
        points = {e["dt"]: e["error"] for e in ok if e["scheme"] == trained[0].scheme
                  and e["dt"] <= base["dt"] * (1 + 1e-9) and e["error"] and math.isfinite(e["error"])}
        if len(points) >= 2:
            slope = np.polyfit(np.log(list(points)), np.log(list(points.values())), 1)[0]
            summary["dt_order"] = float(slope)
    return summary
