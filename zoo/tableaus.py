"""Explicit Runge-Kutta methods as data.

A fixed-step explicit RK method *is* its Butcher tableau (a, b, c); one integrator
(`zoo.integrate.integrate_fixed`) reads any of them. Entries are Python floats so that step
sizes and stage weights never touch the device (no host syncs, compile- and CUDA-graph-friendly).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ButcherTableau:
    """An explicit RK method: stage i evaluates f(t + c_i h, x + h sum_j a_ij k_j) for j < i."""

    name: str
    a: tuple[tuple[float, ...], ...]  # strictly lower-triangular rows; row i has i entries
    b: tuple[float, ...]
    c: tuple[float, ...]
    order: int
    description: str = ""

    def __post_init__(self) -> None:
        stages = len(self.b)
        if len(self.c) != stages or len(self.a) != stages:
            raise ValueError(f"{self.name}: a, b and c must describe the same number of stages")
        for i, row in enumerate(self.a):
            if len(row) != i:
                raise ValueError(f"{self.name}: row {i} of a must have {i} entries (explicit method)")
            # Consistency c_i = sum_j a_ij makes the method exact for dx/dt = 1 and time-dependent f right.
            if abs(sum(row) - self.c[i]) > 1e-12:
                raise ValueError(f"{self.name}: c[{i}] != sum(a[{i}])")
        if abs(sum(self.b) - 1.0) > 1e-12:
            raise ValueError(f"{self.name}: weights b must sum to 1")

    @property
    def stages(self) -> int:
        return len(self.b)


_THIRD = 1.0 / 3.0
_SIXTH = 1.0 / 6.0

TABLEAUS: dict[str, ButcherTableau] = {
    t.name: t
    for t in (
        ButcherTableau("euler", a=((),), b=(1.0,), c=(0.0,), order=1, description="forward Euler = one ResNet block"),
        ButcherTableau(
            "midpoint", a=((), (0.5,)), b=(0.0, 1.0), c=(0.0, 0.5), order=2, description="explicit midpoint"
        ),
        ButcherTableau("heun", a=((), (1.0,)), b=(0.5, 0.5), c=(0.0, 1.0), order=2, description="Heun (trapezoid)"),
        ButcherTableau(
            "ralston",
            a=((), (2.0 / 3.0,)),
            b=(0.25, 0.75),
            c=(0.0, 2.0 / 3.0),
            order=2,
            description="Ralston's minimum-error second-order method",
        ),
        ButcherTableau(
            "rk3",
            a=((), (0.5,), (-1.0, 2.0)),
            b=(_SIXTH, 2.0 / 3.0, _SIXTH),
            c=(0.0, 0.5, 1.0),
            order=3,
            description="Kutta's third-order method",
        ),
        ButcherTableau(
            "rk4",
            a=((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
            b=(_SIXTH, _THIRD, _THIRD, _SIXTH),
            c=(0.0, 0.5, 0.5, 1.0),
            order=4,
            description="classic fourth-order Runge-Kutta (note: torchdiffeq's 'rk4' is the 3/8 rule)",
        ),
        ButcherTableau(
            "rk4_38",
            a=((), (_THIRD,), (-_THIRD, 1.0), (1.0, -1.0, 1.0)),
            b=(0.125, 0.375, 0.375, 0.125),
            c=(0.0, _THIRD, 2.0 / 3.0, 1.0),
            order=4,
            description="Kutta's 3/8 rule",
        ),
    )
}


def _torchdiffeq_adaptive_methods() -> tuple[str, ...]:
    """The adaptive-step methods of the installed torchdiffeq, read from its own solver table.

    A hand-written list drifts: "tsit5" was listed here but torchdiffeq 0.2.5 has no such method and rejected it
    at the first forward. Its fixed-grid methods (ours are the tableaus above) and the SciPy wrapper (no
    gradients) are not adaptive step-size solvers and are left out.
    """
    from torchdiffeq._impl.odeint import SOLVERS  # torchdiffeq exposes no public list of its methods
    from torchdiffeq._impl.solvers import AdaptiveStepsizeODESolver

    return tuple(sorted(name for name, solver in SOLVERS.items() if issubclass(solver, AdaptiveStepsizeODESolver)))


# torchdiffeq's adaptive methods that adaptive ODE blocks accept (with rtol/atol).
ADAPTIVE_METHODS: tuple[str, ...] = _torchdiffeq_adaptive_methods()


def get_tableau(name: str) -> ButcherTableau:
    try:
        return TABLEAUS[name]
    except KeyError:
        raise ValueError(f"unknown fixed-step scheme {name!r}; known: {', '.join(sorted(TABLEAUS))}") from None


def schemes(adaptive: bool = False) -> list[str]:
    """Names of the fixed-step schemes (and torchdiffeq's adaptive methods, if `adaptive`)."""
    names = sorted(TABLEAUS)
    return names + list(ADAPTIVE_METHODS) if adaptive else names
