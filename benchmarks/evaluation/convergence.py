"""Convergence test of Queiruga et al. (2020, arXiv 2008.02389) on the pendulum task.

The same small tanh rate is trained inside Euler, midpoint and RK4 blocks at one training Δt, frozen, then run with
every scheme while Δt is swept; the error is measured against the task's exact flow (its targets). A model that learned
the ODE converges when Δt is refined, at about its scheme's order; one that learned its own discretisation has its
lowest error at the training Δt (the "dip") and gets worse when refined.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import nn

import zoo
from benchmarks.data.tasks import PENDULUM_DELTA, get_task

SCHEMES = ("euler", "midpoint", "rk4")
ORDERS = {"euler": 1, "midpoint": 2, "rk4": 4}
DT_FACTORS = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)  # evaluation Δt / training Δt
DIP_MARGIN = 1.03  # a dip: RMSE at Δt/2 and at Δt/4 both >= 1.03 x the RMSE at the training Δt


class TanhRate(nn.Module):
    """Autonomous rate f(x) of the state (theta, omega): one tanh hidden layer."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, width), nn.Tanh(), nn.Linear(width, 2))

    def forward(self, t: float, x: torch.Tensor, interval: object = None) -> torch.Tensor:
        return self.net(x)


def build(rate: nn.Module, scheme: str, n_steps: int, t1: float = PENDULUM_DELTA) -> zoo.DepthModel:
    """One ODE stage with identity stem and head: the model is exactly the discretised flow of `rate` over [0, t1]."""
    return zoo.DepthModel(nn.Identity(), [zoo.ODEBlock(rate, zoo.Solver(scheme, n_steps), t1=t1)], [], nn.Identity())


def observed_order(dts: list[float], errors: list[float]) -> float:
    """Least-squares slope of log(error) against log(Δt): error ~ C Δt^p gives p."""
    xs, ys = [math.log(d) for d in dts], [math.log(max(e, 1e-300)) for e in errors]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def has_dip(dts: list[float], errors: list[float], train_dt: float, margin: float = DIP_MARGIN) -> bool:
    """True if the error at the training Δt is below the errors at Δt/2 and Δt/4 by the factor `margin`."""
    at = {round(d / train_dt, 9): e for d, e in zip(dts, errors)}
    if not {1.0, 0.5, 0.25} <= set(at):
        raise ValueError("the dip test needs errors at the training Δt and at Δt/2 and Δt/4")
    return at[0.5] >= margin * at[1.0] and at[0.25] >= margin * at[1.0]


def refined(dts: list[float], errors: list[float], train_dt: float) -> tuple[list[float], list[float]]:
    """The points at or below the training Δt: the refined half, where the observed order is fitted."""
    pairs = [(d, e) for d, e in zip(dts, errors) if d <= train_dt * (1 + 1e-9)]
    return [d for d, _ in pairs], [e for _, e in pairs]


def train_rate(scheme: str, n_steps: int, seed: int, x: torch.Tensor, y: torch.Tensor, steps: int,
               width: int = 32, lr: float = 2e-2) -> nn.Module:
    """Full-batch Adam on the MSE of the discretised flow against the exact flow's targets; the rate is frozen after."""
    torch.manual_seed(seed)
    rate = TanhRate(width)
    model = build(rate, scheme, n_steps)
    optimiser = torch.optim.Adam(rate.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    for _ in range(steps):
        optimiser.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimiser.step()
        schedule.step()
    rate.requires_grad_(False)
    return rate


def run(seeds: int = 3, n_train: int = 8, steps: int = 1000, limit: int | None = None) -> dict[str, Any]:
    """Train every scheme for every seed, evaluate every (train, eval) scheme pair over the Δt sweep.

    Returns plain JSON data: per pair, the RMSE per seed and Δt, and per seed the observed order and dip flag.
    """
    if n_train % 8 or n_train < 8:
        raise ValueError(f"n_train must be a positive multiple of 8 (the sweep goes to 8x Δt), got {n_train}")
    if seeds < 1 or steps < 1:
        raise ValueError(f"seeds and steps must be positive, got seeds={seeds}, steps={steps}")
    data = get_task("pendulum").load(limit=limit)
    train_dt = PENDULUM_DELTA / n_train
    counts = [round(n_train / f) for f in DT_FACTORS]
    dts = [PENDULUM_DELTA / n for n in counts]
    x_test, y_test = data.test.x.double(), data.test.y.double()
    curves: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    for seed in range(seeds):
        for train_scheme in SCHEMES:
            rate = train_rate(train_scheme, n_train, seed, data.train.x, data.train.y, steps).double()
            for eval_scheme in SCHEMES:
                with torch.no_grad():
                    rmse = [float((build(rate, eval_scheme, n)(x_test) - y_test).square().mean().sqrt())
                            for n in counts]
                curve = curves.setdefault(f"{train_scheme}/{eval_scheme}", {
                    "train_scheme": train_scheme, "eval_scheme": eval_scheme, "rmse": [], "order": [], "dip": []})
                curve["rmse"].append(rmse)
                curve["order"].append(observed_order(*refined(dts, rmse, train_dt)))
                curve["dip"].append(has_dip(dts, rmse, train_dt))
    return {
        "task": "pendulum", "reference": "Queiruga et al. 2020, arXiv 2008.02389",
        "error": "test RMSE against the exact flow (the task's targets)",
        "train_dt": train_dt, "n_train": n_train, "dts": dts, "step_counts": counts, "seeds": seeds,
        "train_steps": steps, "width": 32, "dip_margin": DIP_MARGIN, "scheme_orders": ORDERS,
        "seconds": round(time.perf_counter() - started, 1), "curves": list(curves.values()),
    }
