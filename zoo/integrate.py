"""One integrator for every continuous-depth block.

`integrate_fixed` reads any Butcher tableau; `ODEBlock` integrates a rate function over a fixed
depth interval [t0, t1] with either a fixed-step scheme (our tableaus) or one of torchdiffeq's
adaptive methods, and counts function evaluations (NFE) of its last forward (and, with the adjoint,
backward) pass. An adaptive solver's `backend` says who chooses the steps: torchdiffeq, one step sequence for
the whole batch (the default), or `zoo.per_example` (torchode), one per example, so that no example's output or
NFE depends on the rest of its batch. Changing the solver never changes the interval: that is what makes depth transfer
("manifestation") a re-discretisation of the same ODE rather than a different model.

Rate functions are called as ``func(t, x, interval)``: ``t`` is the stage time (a Python float on
fixed grids, a 0-d tensor under torchdiffeq) and ``interval`` is the step ``(t_k, t_{k+1})`` the
stage belongs to, or ``None`` for adaptive solvers. Depth-varying parameters use it to evaluate
theta(t) on the step's own side of a basis knot: a stage at c = 1 lies on t_{k+1} but belongs to
step k, so it must read the piece of [t_k, t_{k+1}), not the next one (the reference ContinuousNet
reads the next slice there; its float32 "t - 1e-15" fix is a no-op).
"""

from __future__ import annotations

import bisect
import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, TypeVar

import torch
import torchdiffeq
from torch import nn

from zoo.tableaus import ADAPTIVE_METHODS, TABLEAUS, ButcherTableau, get_tableau

if TYPE_CHECKING:
    from zoo.per_example import PerExampleSolve

M = TypeVar("M", bound=nn.Module)

Interval = tuple[float, float] | None  # the step (t_k, t_{k+1}) a stage belongs to; None under adaptive solvers
RateFn = Callable[[float | torch.Tensor, torch.Tensor, Interval], torch.Tensor]


class SolverDidNotConverge(RuntimeError):
    """An adaptive solver hit its step limit: the dynamics are too stiff for the tolerances."""


# Who chooses an adaptive solver's steps: torchdiffeq, one sequence for the whole batch from an error norm over all
# of it (so an example's output depends on its batch companions), or torchode per example (zoo/per_example.py).
BACKENDS: tuple[str, ...] = ("torchdiffeq", "per-example")


@dataclass(frozen=True)
class Solver:
    """How an ODE block is discretised: a fixed-step scheme with `n_steps`, or an adaptive method (whose steps are
    chosen per batch by torchdiffeq, or per example with backend="per-example")."""

    scheme: str
    n_steps: int | None = None
    rtol: float = 1e-3
    atol: float = 1e-3
    adjoint: bool = False
    max_num_steps: int = 1000
    backend: str = "torchdiffeq"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; accepted values: {', '.join(BACKENDS)}")
        if self.scheme in ADAPTIVE_METHODS:
            if not (self.rtol > 0 and self.atol > 0):
                raise ValueError(f"adaptive scheme {self.scheme!r} needs rtol > 0 and atol > 0")
            if self.backend == "per-example":
                from zoo.per_example import PER_EXAMPLE_METHODS  # imports this module: only once it is loaded

                if self.scheme not in PER_EXAMPLE_METHODS:
                    raise ValueError(f"the per-example backend has no {self.scheme!r}; it offers "
                                     f"{', '.join(PER_EXAMPLE_METHODS)} (or use backend='torchdiffeq')")
            return
        if self.backend != "torchdiffeq":
            raise ValueError(f"backend {self.backend!r} is for adaptive schemes: fixed-step {self.scheme!r} solves "
                             "every example on the same grid already (leave backend at 'torchdiffeq')")
        if self.scheme not in TABLEAUS:
            known = ", ".join(sorted(TABLEAUS) + list(ADAPTIVE_METHODS))
            raise ValueError(f"unknown scheme {self.scheme!r}; accepted values: {known}")
        if not isinstance(self.n_steps, int) or isinstance(self.n_steps, bool) or self.n_steps < 1:
            raise ValueError(f"fixed-step scheme {self.scheme!r} needs n_steps, a positive int, got {self.n_steps!r}")
        if self.adjoint:
            raise ValueError("the adjoint method is only used with adaptive schemes (fixed steps backprop directly)")

    @property
    def adaptive(self) -> bool:
        return self.scheme in ADAPTIVE_METHODS

    @property
    def batch_coupled(self) -> bool:
        """Whether one example's solution can depend on the rest of its batch (torchdiffeq's adaptive steps)."""
        return self.adaptive and self.backend == "torchdiffeq"

    @property
    def tableau(self) -> ButcherTableau:
        return get_tableau(self.scheme)

    @property
    def fixed_cost(self) -> int | None:
        """Function evaluations per forward for fixed-step schemes (steps x stages); None if adaptive."""
        return None if self.adaptive else self.n_steps * self.tableau.stages

    def describe(self) -> str:
        if self.adaptive:
            per_example = ", per example" if self.backend == "per-example" else ""
            return (f"{self.scheme}(rtol={self.rtol:g}, atol={self.atol:g}{', adjoint' if self.adjoint else ''}"
                    f"{per_example})")
        return f"{self.scheme}x{self.n_steps}"


def integrate_fixed(
    func: RateFn, x: torch.Tensor, t0: float, t1: float, n_steps: int, tableau: ButcherTableau,
    states: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Integrate dx/dt = func(t, x, interval) from t0 to t1 with `n_steps` equal steps of `tableau`.

    Step sizes and stage weights are Python floats: nothing here synchronises with the device.
    Step ends are computed as t0 + k h (not accumulated) so that grids of different step counts
    share their knots exactly. With `states`, the state after every step is appended to it.
    """
    h = (t1 - t0) / n_steps
    for k in range(n_steps):
        start = t0 + k * h
        end = t1 if k == n_steps - 1 else t0 + (k + 1) * h
        stages: list[torch.Tensor] = []
        for a_row, c in zip(tableau.a, tableau.c):
            x_stage = x
            for a, k_j in zip(a_row, stages):
                if a != 0.0:
                    x_stage = x_stage + (h * a) * k_j
            stages.append(func(start + c * h, x_stage, (start, end)))
        for b, k_i in zip(tableau.b, stages):
            if b != 0.0:
                x = x + (h * b) * k_i
        if states is not None:
            states.append(x)
    return x


def depth_grid(t0: float, t1: float, points: int) -> list[float]:
    """`points` + 1 equally spaced depths from t0 to t1 (both exact), computed as t0 + k h like fixed-step grids."""
    if not isinstance(points, int) or points < 1:
        raise ValueError(f"points must be a positive int, got {points!r}")
    h = (t1 - t0) / points
    return [t0 + k * h for k in range(points)] + [t1]


@dataclass
class Track:
    """A block's state along depth: x(times[k]) = states[k]; `steps[k]` is the fixed-grid step (t_k, t_k+1)
    that starts at times[k] (None on an adaptive solver's output grid)."""

    times: list[float]
    states: list[torch.Tensor]
    steps: list[Interval]

    def sample(self, times: Sequence[float]) -> Track:
        """The track at other depths within its span, so that tracks of different models can be compared point
        for point. A time on one of the track's own (to 1e-9 of the span) takes that state; any other lies on the
        straight segment between its neighbours, x_k + theta (x_k+1 - x_k): the order-1 continuous extension that
        every Runge-Kutta step has (weights theta b_i), and Euler's (a ResNet's) own interpolant."""
        own, span = self.times, self.times[-1] - self.times[0]
        tol = 1e-9 * abs(span)
        states = []
        for t in times:
            if not own[0] - tol <= t <= own[-1] + tol:
                raise ValueError(f"depth {t} lies outside the track's span [{own[0]}, {own[-1]}]")
            k = min(max(bisect.bisect_right(own, t) - 1, 0), len(own) - 2)
            if abs(t - own[k]) <= tol:
                states.append(self.states[k])
            elif abs(t - own[k + 1]) <= tol:
                states.append(self.states[k + 1])
            else:
                theta = (t - own[k]) / (own[k + 1] - own[k])
                states.append(torch.lerp(self.states[k], self.states[k + 1], theta))
        return Track(list(times), states, [None] * (len(states) - 1))


class _CountingFunc:
    """torchdiffeq's view of a rate function: (t, x) -> dx/dt, counting calls (forward and adjoint).

    Deliberately not an nn.Module: the block keeps the last one to read the adjoint's count, and a registered
    submodule would put a second copy of every rate-function parameter into the block's state_dict, which a
    fresh model (that has not run yet) then refuses to load strictly.
    """

    def __init__(self, func: nn.Module) -> None:
        self.func = func
        self.calls = 0

    def __call__(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.func(t, x, None)


class ODEBlock(nn.Module):
    """x(t1) from x(t0) = input under dx/dt = func(t, x): one continuous-depth stage of a model."""

    def __init__(self, func: nn.Module, solver: Solver, t1: float, t0: float = 0.0) -> None:
        super().__init__()
        if not t1 > t0:
            raise ValueError(f"ODE block needs t1 > t0, got [{t0}, {t1}]")
        self.func = func
        self.solver = solver
        self.t0, self.t1 = float(t0), float(t1)
        self.nfe = 0  # function evaluations in the last forward pass (per-example backend: the mean per example)
        self._counter: _CountingFunc | None = None
        # The per-example backend's counts of the last forward (zoo.per_example.PerExampleSolve), else None.
        self.per_example_solve: PerExampleSolve | None = None

    @property
    def nfe_per_example(self) -> torch.Tensor | None:
        """Each example's function evaluations in the last forward (int64, one per example) under the per-example
        backend; None otherwise (torchdiffeq gives every example of a batch the batch's `nfe`)."""
        return None if self.per_example_solve is None else self.per_example_solve.nfe_per_example

    @property
    def nfe_backward(self) -> int | float:
        """Function evaluations of the adjoint solve since the last forward (0 without the adjoint; per-example
        backend: the mean per example)."""
        if self.per_example_solve is not None:
            backward = self.per_example_solve.nfe_backward_per_example
            return 0 if backward is None else int(backward.sum()) / len(backward)
        if self._counter is None:
            return 0
        return self._counter.calls - self.nfe

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        solver = self.solver
        if torch.is_autocast_enabled(x.device.type):
            # Under mixed precision the rate function runs in bf16/fp16 but the state accumulates in fp32:
            # sums of many small steps (and adaptive error control at rtol ~ 1e-3) need more than bf16's 8 bits.
            x = x.float()
        self.per_example_solve = None
        if not solver.adaptive:
            self._counter = None
            self.nfe = solver.fixed_cost
            return integrate_fixed(self.func, x, self.t0, self.t1, solver.n_steps, solver.tableau)
        if solver.backend == "per-example":
            self._counter = None
            states, self.per_example_solve = self._solve_per_example(x, [self.t0, self.t1], adjoint=solver.adjoint)
            self.nfe = int(self.per_example_solve.nfe_per_example.sum()) / len(x)  # integers summed, divided once
            return states[-1]
        counter = _CountingFunc(self.func)
        out = self._solve_adaptive(counter, x, torch.tensor([self.t0, self.t1], dtype=x.dtype, device=x.device))
        self._counter = counter
        self.nfe = counter.calls
        return out[-1]

    def _solve_adaptive(self, func: _CountingFunc, x: torch.Tensor, t: torch.Tensor, adjoint: bool | None = None
                        ) -> torch.Tensor:
        """torchdiffeq's solve of `func` from x at t[0] to every t, with the block's solver settings."""
        solver = self.solver
        adjoint = solver.adjoint if adjoint is None else adjoint
        kwargs = dict(rtol=solver.rtol, atol=solver.atol, method=solver.scheme,
                      options={"max_num_steps": solver.max_num_steps})
        try:
            if adjoint:
                return torchdiffeq.odeint_adjoint(func, x, t, adjoint_params=tuple(self.func.parameters()), **kwargs)
            return torchdiffeq.odeint(func, x, t, **kwargs)
        except AssertionError as error:  # torchdiffeq signals the step limit with an assert
            if "max_num_steps" in str(error):
                raise SolverDidNotConverge(
                    f"{solver.describe()} took more than {solver.max_num_steps} steps on [{self.t0}, {self.t1}]: "
                    "loosen rtol/atol, raise max_num_steps, or the model's dynamics have blown up"
                ) from error
            raise

    def _solve_per_example(self, x: torch.Tensor, times: list[float], adjoint: bool
                           ) -> tuple[list[torch.Tensor], PerExampleSolve]:
        """torchode's solve of every example on its own (zoo/per_example.py) to each of times[1:]."""
        from zoo import per_example  # it imports this module

        solver = self.solver
        return per_example.solve(self.func, x, times, scheme=solver.scheme, rtol=solver.rtol, atol=solver.atol,
                                 max_steps=solver.max_num_steps, adjoint=adjoint)

    def trajectory(self, x: torch.Tensor, points: int = 8) -> Track:
        """x(t) at every step boundary of a fixed grid (a ResNet's layer outputs), or at `points` + 1 equally
        spaced times from an adaptive solver's dense output."""
        solver = self.solver
        if not solver.adaptive:
            h = (self.t1 - self.t0) / solver.n_steps
            states = [x]
            integrate_fixed(self.func, x, self.t0, self.t1, solver.n_steps, solver.tableau, states)
            times = [self.t0 + k * h for k in range(solver.n_steps)] + [self.t1]
            return Track(times, states, [(times[k], times[k + 1]) for k in range(solver.n_steps)])
        times = depth_grid(self.t0, self.t1, points)
        if solver.backend == "per-example":  # each example's own steps, read at the common depths (dense output)
            states, _ = self._solve_per_example(x, times, adjoint=False)
            return Track(times, [x, *states], [None] * points)
        grid = torch.tensor(times, dtype=x.dtype, device=x.device)
        out = self._solve_adaptive(_CountingFunc(self.func), x, grid, adjoint=False)  # states only: no gradients
        return Track(times, list(out), [None] * points)

    def with_solver(self, solver: Solver) -> ODEBlock:
        """The same block (same parameter objects) discretised by another solver."""
        twin = shallow_twin(self)
        twin.solver = solver
        twin.nfe, twin._counter, twin.per_example_solve = 0, None, None
        return twin

    def extra_repr(self) -> str:
        return f"t=[{self.t0:g}, {self.t1:g}], solver={self.solver.describe()}"


def shallow_twin(module: M) -> M:
    """A copy of `module` that shares every parameter, buffer and submodule object but has its own registries, so
    rebinding a submodule or attribute on the copy (another solver, other blocks) leaves the original untouched."""
    twin = copy.copy(module)
    twin._modules = dict(module._modules)
    twin._parameters = dict(module._parameters)
    twin._buffers = dict(module._buffers)
    return twin


def replace_solver(solver: Solver, **changes: object) -> Solver:
    """`dataclasses.replace` that drops what the new kind of scheme does not use.

    Switching to an adaptive method clears `n_steps`; switching to a fixed-step scheme turns the
    adjoint off (fixed grids backpropagate through the stored graph) and sets the backend back to the default
    unless one is asked for (fixed grids are per example already; Solver refuses another backend for them). An
    adaptive solver keeps its backend, so a per-example model's depth-transfer grid stays per example.
    """
    changes = {key: value for key, value in changes.items() if value is not None}
    scheme = changes.get("scheme", solver.scheme)
    if scheme in ADAPTIVE_METHODS:
        if changes.get("n_steps") is not None:
            raise ValueError(f"adaptive scheme {scheme!r} chooses its own steps: give rtol/atol, not n_steps")
        changes["n_steps"] = None
    else:
        changes["adjoint"] = False
        changes.setdefault("backend", "torchdiffeq")
    return replace(solver, **changes)
