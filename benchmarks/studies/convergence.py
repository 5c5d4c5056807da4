"""Convergence test of Queiruga et al. (2020, arXiv 2008.02389) on the pendulum task.

The same small tanh rate is trained inside Euler, midpoint and RK4 blocks, frozen, then run while Δt is swept; the
error is measured against the task's exact flow (its targets). A model that learned the ODE converges when Δt is
refined, at about its scheme's order, down to its fitting floor; one that learned its own discretisation has its
lowest error at the training Δt (the "dip") and gets worse when refined. The seed (000:246-253): "There's a noticeable
dip in error for ODE-Net(Euler)", "The models embedded in Midpoint and RK4 have no dip".

A dip can only show where the scheme's truncation error at the training Δt is well above the model's fitting error:
below it the model has nothing of the discretisation to learn. So the TRAINING Δt is swept (`N_TRAINS` steps over
the horizon: Δt 1, 0.5, 0.25) and every model reports its dip ratio RMSE(Δt/4) / RMSE(Δt) with its own scheme against
`trunc_over_fit` = (the same scheme at the same Δt on the true rate, against the exact flow) / (the model's own error
at its training Δt): RK4's truncation error at Δt 0.25 (~1.6e-5) is far below its fitting error (~4e-4), at Δt 1 it
is not. The models of Δt 0.25 are also run with every scheme (error vs Δt per scheme pair, observed orders).

Set-up: the model maps a state to the state `HORIZON_STEPS` task intervals later (horizon 1.0, the trajectories of
the task chained), and the rate is fitted by full-batch L-BFGS in float64 (Adam left it at ~1e-2, which hid every
order). The observed order of a curve is fitted only where its error is at least `FLOOR_FACTOR` x the model's fitting
floor (its error with a converged solve): below that the floor, not the scheme, sets the error and the slope would
say nothing about the order.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

import zoo
from benchmarks.data.tasks import PENDULUM_DELTA, Split, get_task, pendulum_rhs
from benchmarks.studies.common import check_seeds, provenance, save
from benchmarks.studies.registry import LineFigure, register_study

SCHEMES = ("euler", "midpoint", "rk4")
ORDERS = {"euler": 1, "midpoint": 2, "rk4": 4}
DT_FACTORS = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0, 2.0, 4.0)  # evaluation Δt / training Δt
HORIZON_STEPS = 4  # task intervals per example: horizon 4 x 0.25 = 1.0
N_TRAINS = (1, 2, 4)  # training steps over the horizon: training Δt 1, 0.5 and 0.25
CROSS_N_TRAIN = 4  # the models evaluated with every scheme (error vs Δt per scheme pair) are those of Δt 0.25
DIP_MARGIN = 1.03  # a dip: RMSE at Δt/2 and at Δt/4 both >= 1.03 x the RMSE at the training Δt
FLOOR_FACTOR = 4.0  # the order is fitted over the points whose RMSE is >= 4 x the fitting floor
MIN_ORDER_POINTS = 3  # fewer such points: no order (the floor dominates the sweep)
REFERENCE_STEPS = 1024  # RK4 steps of the converged solve that measures the fitting floor
ITERATIONS = 500  # L-BFGS iterations per training


class TanhRate(nn.Module):
    """Autonomous rate f(x) of the state (theta, omega): one tanh hidden layer."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, width), nn.Tanh(), nn.Linear(width, 2))

    def forward(self, t: float, x: torch.Tensor, interval: object = None) -> torch.Tensor:
        return self.net(x)


class PendulumRate(nn.Module):
    """The task's true rate (d theta/dt = omega, d omega/dt = -sin theta; g/L = 1): the truncation error reference."""

    def forward(self, t: float, x: torch.Tensor, interval: object = None) -> torch.Tensor:
        return pendulum_rhs(x)


def build(rate: nn.Module, scheme: str, n_steps: int, t1: float = PENDULUM_DELTA) -> zoo.DepthModel:
    """One ODE stage with identity stem and head: the model is exactly the discretised flow of `rate` over [0, t1]."""
    return zoo.DepthModel(nn.Identity(), [zoo.ODEBlock(rate, zoo.Solver(scheme, n_steps), t1=t1)], [], nn.Identity())


def observed_order(dts: list[float], errors: list[float]) -> float:
    """Least-squares slope of log(error) against log(Δt): error ~ C Δt^p gives p."""
    xs, ys = [math.log(d) for d in dts], [math.log(max(e, 1e-300)) for e in errors]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def order_above_floor(dts: list[float], errors: list[float], floor: float, factor: float = FLOOR_FACTOR,
                      min_points: int = MIN_ORDER_POINTS) -> float | None:
    """The observed order over the points whose error is >= factor x floor; None where fewer than min_points are."""
    points = [(d, e) for d, e in zip(dts, errors) if e >= factor * floor]
    if len(points) < min_points:
        return None
    return observed_order([d for d, _ in points], [e for _, e in points])


def _at(dts: list[float], errors: list[float], train_dt: float) -> dict[float, float]:
    return {round(d / train_dt, 9): e for d, e in zip(dts, errors)}


def has_dip(dts: list[float], errors: list[float], train_dt: float, margin: float = DIP_MARGIN) -> bool:
    """True if the error at the training Δt is below the errors at Δt/2 and Δt/4 by the factor `margin`."""
    at = _at(dts, errors, train_dt)
    if not {1.0, 0.5, 0.25} <= set(at):
        raise ValueError("the dip test needs errors at the training Δt and at Δt/2 and Δt/4")
    return at[0.5] >= margin * at[1.0] and at[0.25] >= margin * at[1.0]


def horizon_pairs(split: Split, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(state, state k task intervals later) along the split's trajectories, in float64.

    The task stores consecutive pairs of each trajectory in order (y of one pair is x of the next), so the
    trajectories are found where that chain breaks; no knowledge of the task's trajectory length is needed."""
    x, y = split.x.double(), split.y.double()
    breaks = [0, *(i + 1 for i in range(len(x) - 1) if not torch.equal(y[i], x[i + 1])), len(x)]
    xs, ys = [], []
    for start, end in zip(breaks, breaks[1:]):
        if end - start >= k:
            xs.append(x[start:end - k + 1])
            ys.append(y[start + k - 1:end])
    if not xs:
        raise ValueError(f"no trajectory of the pendulum split holds {k} consecutive intervals; use a larger --limit")
    return torch.cat(xs), torch.cat(ys)


def train_rate(scheme: str, n_steps: int, seed: int, x: torch.Tensor, y: torch.Tensor, iterations: int,
               width: int = 32, horizon: float = PENDULUM_DELTA) -> nn.Module:
    """Full-batch L-BFGS (float64) on the MSE of the discretised flow against the exact flow; frozen after."""
    torch.manual_seed(seed)
    rate = TanhRate(width).double()
    model = build(rate, scheme, n_steps, t1=horizon)
    optimiser = torch.optim.LBFGS(rate.parameters(), lr=1.0, max_iter=iterations, history_size=50,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-12, tolerance_change=1e-15)

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    optimiser.step(closure)
    rate.requires_grad_(False)
    return rate


def _rmse(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x) - y).square().mean().sqrt())


def step_counts(n_train: int) -> list[int]:
    """The evaluation step counts of a model trained with `n_train` steps: `DT_FACTORS` x its Δt, down to Δt/16 and
    up to the coarsest whole step count (n_train 1: 16, 8, 4, 2, 1 steps)."""
    counts = [n_train / f for f in DT_FACTORS]
    return [round(n) for n in counts if n >= 1 - 1e-9 and abs(n - round(n)) < 1e-9]


def sweep(seeds: Sequence[int] | int = 3, n_trains: Sequence[int] = N_TRAINS, iterations: int = 500, width: int = 32,
          limit: int | None = None) -> dict[str, Any]:
    """Train every scheme at every training Δt (`n_trains` steps over the horizon) for every seed.

    Every model is evaluated with its own scheme over its Δt sweep (`dt_sweep`: fitting error, the scheme's
    truncation error on the true rate at the same Δt, dip ratio); the models trained with `CROSS_N_TRAIN` steps are
    also evaluated with every scheme (`curves`: per (train, eval) pair the RMSE per seed and Δt, and per seed the
    fitting floor, the observed order (None where the floor dominates), the dip flag and the ratios RMSE(Δt/4) /
    RMSE(Δt) and RMSE(finest) / RMSE(Δt)). Returns plain JSON data.
    """
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    n_trains = sorted(set(n_trains))
    if CROSS_N_TRAIN not in n_trains or any(not isinstance(n, int) or n < 1 for n in n_trains):
        raise ValueError(f"n_trains must be positive step counts including {CROSS_N_TRAIN} (the cross-scheme "
                         f"evaluation), got {n_trains}")
    if not seeds or iterations < 1 or width < 1:
        raise ValueError(f"give seeds, and positive iterations and width; got {seeds}, {iterations}, {width}")
    data = get_task("pendulum").load(limit=limit)
    horizon = HORIZON_STEPS * PENDULUM_DELTA
    x_train, y_train = horizon_pairs(data.train, HORIZON_STEPS)
    x_test, y_test = horizon_pairs(data.test, HORIZON_STEPS)
    train_dt = horizon / CROSS_N_TRAIN
    counts = step_counts(CROSS_N_TRAIN)
    dts = [horizon / n for n in counts]
    curves: dict[str, dict[str, Any]] = {}
    floors: dict[str, list[float]] = {s: [] for s in SCHEMES}
    dt_sweep: list[dict[str, Any]] = []
    started = time.perf_counter()
    for seed in seeds:
        for train_scheme in SCHEMES:
            for n_train in n_trains:
                rate = train_rate(train_scheme, n_train, seed, x_train, y_train, iterations, width, horizon)
                dt_sweep.append(own_scheme_sweep(rate, train_scheme, n_train, seed, horizon, x_test, y_test))
                if n_train != CROSS_N_TRAIN:
                    continue
                floor = _rmse(build(rate, "rk4", REFERENCE_STEPS, t1=horizon), x_test, y_test)
                floors[train_scheme].append(floor)
                for eval_scheme in SCHEMES:
                    rmse = [_rmse(build(rate, eval_scheme, n, t1=horizon), x_test, y_test) for n in counts]
                    at = _at(dts, rmse, train_dt)
                    curve = curves.setdefault(f"{train_scheme}/{eval_scheme}", {
                        "train_scheme": train_scheme, "eval_scheme": eval_scheme, "rmse": [], "order": [],
                        "dip": [], "dip_ratio": [], "refine_ratio": []})
                    curve["rmse"].append(rmse)
                    curve["order"].append(order_above_floor(dts, rmse, floor))
                    curve["dip"].append(has_dip(dts, rmse, train_dt))
                    curve["dip_ratio"].append(at[0.25] / at[1.0])
                    curve["refine_ratio"].append(rmse[0] / at[1.0])
    return {
        "task": "pendulum", "reference": "Queiruga et al. 2020, arXiv 2008.02389",
        "error": f"test RMSE against the exact flow (the task's trajectories) over a horizon of {horizon:g}",
        "horizon": horizon, "train_dt": train_dt, "n_train": CROSS_N_TRAIN, "dts": dts, "step_counts": counts,
        "n_trains": n_trains, "seeds": len(seeds), "train_iterations": iterations,
        "optimiser": "full-batch L-BFGS, float64", "width": width,
        "train_pairs": len(x_train), "test_pairs": len(x_test), "dip_margin": DIP_MARGIN,
        "floor_factor": FLOOR_FACTOR, "min_order_points": MIN_ORDER_POINTS, "reference_steps": REFERENCE_STEPS,
        "scheme_orders": ORDERS, "floors": floors, "seconds": round(time.perf_counter() - started, 1),
        "curves": list(curves.values()), "dt_sweep": dt_sweep,
    }


def own_scheme_sweep(rate: nn.Module, scheme: str, n_train: int, seed: int, horizon: float, x: torch.Tensor,
                     y: torch.Tensor) -> dict[str, Any]:
    """One trained rate run with its own scheme over its Δt sweep: its fitting error (RMSE at the training Δt), the
    scheme's truncation error at that Δt (the same scheme on the pendulum's true rate, against the exact flow), and
    the dip ratio RMSE(Δt/4) / RMSE(Δt)."""
    counts = step_counts(n_train)
    rmse = [_rmse(build(rate, scheme, n, t1=horizon), x, y) for n in counts]
    fit, refined = rmse[counts.index(n_train)], rmse[counts.index(4 * n_train)]
    truncation = _rmse(build(PendulumRate(), scheme, n_train, t1=horizon), x, y)
    return {"train_scheme": scheme, "n_train": n_train, "train_dt": horizon / n_train, "seed": seed,
            "dts": [horizon / n for n in counts], "rmse": rmse, "fit": fit, "truncation": truncation,
            "dip_ratio": refined / fit, "trunc_over_fit": truncation / fit}


def per_seed_summary(result: dict[str, Any]) -> dict[str, list[float]]:
    """The numbers a claim cites, one value per seed (study-file summary): per (train scheme, training Δt) the dip
    ratio and truncation error / fitting error; for the cross-scheme evaluation, dip flags and ratios for every
    curve, fitting floors, and the order of the curves that have one in every seed."""
    out: dict[str, list[float]] = {f"{s}/floor": v for s, v in result["floors"].items()}
    for entry in result.get("dt_sweep", []):  # in seed order
        key = f"{entry['train_scheme']}/dt{entry['train_dt']:g}"
        out.setdefault(f"{key}/dip_ratio", []).append(entry["dip_ratio"])
        out.setdefault(f"{key}/trunc_over_fit", []).append(entry["trunc_over_fit"])
    for c in result["curves"]:
        key = f"{c['train_scheme']}/{c['eval_scheme']}"
        out[f"{key}/dip"] = [float(d) for d in c["dip"]]
        out[f"{key}/dip_ratio"] = c["dip_ratio"]
        out[f"{key}/refine_ratio"] = c["refine_ratio"]
        if all(o is not None for o in c["order"]):
            out[f"{key}/order"] = c["order"]
    return out


ROW_COLUMNS = ("train_scheme", "n_train", "train_dt", "seed", "dip_ratio", "trunc_over_fit", "fit", "truncation")


@register_study("convergence", title="Convergence test on the pendulum (Queiruga et al. 2020)",
                summary="Euler-, midpoint- and RK4-trained rates at training Δt 1, 0.5 and 0.25, re-run while Δt is "
                "swept: dip ratio against truncation error / fitting error; at Δt 0.25 every scheme pair, error vs "
                "Δt, observed orders", claims=("queiruga-dip",), task="pendulum", seeds=(0, 1, 2, 3, 4),
                figure=LineFigure(x="trunc_over_fit", y="dip_ratio", series="train_scheme",
                                  xlabel="truncation error / fitting error at the training Δt",
                                  ylabel="dip ratio RMSE(Δt/4) / RMSE(Δt)", logx=True, logy=True))
def run(task_name: str, seeds: Sequence[int], results: Path, *, device: torch.device | None = None,
        limit: int | None = None, figure: str | None = None) -> Path:
    """The sweep for `seeds`; write `results/convergence/pendulum.json` (float64 on CPU whatever the device)."""
    if task_name != "pendulum":
        raise ValueError(f"the convergence test runs on the pendulum task (its exact flow is known), not {task_name!r}")
    seeds = check_seeds(seeds)
    started = provenance(torch.device("cpu"))
    result = sweep(seeds=seeds, iterations=ITERATIONS, limit=limit)
    rows = [{k: entry[k] for k in ROW_COLUMNS} for entry in result["dt_sweep"]]
    return save(results, study="convergence", task="pendulum", seeds=seeds, per_seed=per_seed_summary(result),
                rows=rows, provenance=started, details={**result, "columns": list(ROW_COLUMNS)}, figure=figure)
