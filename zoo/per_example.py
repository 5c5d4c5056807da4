"""Per-example adaptive solves (issue #24): every example of a batch takes its own step sizes.

torchdiffeq controls the error of the whole batch at once (one RMS norm over all of it), so one example's steps,
output and NFE change with the other examples of its batch and with the batch size. torchode (Lienen & Guennemann
2022) keeps one time, step size and error norm per example and advances them together: each call of the rate
function still gets the whole batch, but an example whose solve has reached t1 only rides along with a zero step
and is not updated, so its result is the one it would get alone (to the rounding of batched kernels).

This module is the bridge: `solve` takes a zoo rate function ``func(t, x, interval)`` and a state of any shape and
returns the state at the requested depths with each example's own NFE. The rate function is called with states of
the block's shape and with ``t`` a tensor of shape (batch, 1, ..., 1), one time per example, which broadcasts
against the state as a 0-d time does (the zoo's time-concatenating layers need nothing else); under the adjoint's
vmap it is called on one example at a time, (1, *shape) with t of shape (1, 1, ..., 1).

Settings mean what they mean under torchdiffeq: the same tableau (Dormand-Prince 5(4), or Heun-Euler 2(1) for
adaptive_heun), the same error ratio (RMS of error / (atol + rtol max(|y0|, |y1|)), here over one example's
elements), a pure integral controller with torchdiffeq's safety 0.9 and step factors in [0.2, 10] (torchdiffeq
also never shrinks the step after accepting one; torchode's may), and Hairer's initial step. Alone, an example takes
torchdiffeq's number of steps to within one (tests/test_per_example.py). torchode is imported on first use: the
torchdiffeq path never needs it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from zoo.integrate import SolverDidNotConverge

# zoo scheme name (torchdiffeq's) -> torchode step method: the adaptive methods both libraries implement.
PER_EXAMPLE_METHODS: dict[str, str] = {"dopri5": "Dopri5", "adaptive_heun": "Heun"}

# torchdiffeq's step-size controller constants for its RK solvers (safety, dfactor, ifactor), used here too so that
# both backends answer the same tolerances with the same controller, only per batch or per example.
_SAFETY, _FACTOR_MIN, _FACTOR_MAX = 0.9, 0.2, 10.0

# Rate evaluations before the first step: Hairer's initial step size takes f(t0, y0) (which an FSAL method then
# reuses as its first stage) and one trial evaluation (torchode's _select_initial_step, as torchdiffeq's).
_START_EVALS = 2

# torchode's status codes (torchode.status_codes), what each means for a block.
_FAILURES = {2: "its step size fell below the minimum", 3: "it reached the step limit",
             4: "its error norm became non-finite (NaN or inf in the state: the dynamics blew up)"}


class _Rate(nn.Module):
    """torchode's view of a zoo rate function: flat states (batch, features) and one time per example (batch,).

    An nn.Module because torchode's adjoint takes the rate function's parameters from it (named_parameters) for its
    per-example vector-Jacobian products; it is built per solve and never registered on a block, so it adds no
    second copy of the parameters to a state_dict.
    """

    def __init__(self, func: Callable[..., torch.Tensor], shape: Sequence[int]) -> None:
        super().__init__()
        self.func = func
        self.shape = tuple(shape)

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = y.reshape(-1, *self.shape)
        time = t.reshape(-1, *([1] * len(self.shape)))
        # Under autocast the rate may come back in bf16/fp16; the state, the stages and the error control stay in
        # the state's dtype (as ODEBlock keeps the state in fp32).
        return self.func(time, x, None).reshape(y.shape).to(y.dtype)


@dataclass
class PerExampleSolve:
    """What a solve cost each example (kept by the block after its forward; the states are not kept)."""

    nfe_per_example: torch.Tensor  # int64 (batch,): rate evaluations each example's own solve needed
    calls: int  # rate-function calls on the whole batch (what the wall clock pays: every call evaluates all rows)
    _stats: dict[str, Any] = field(default_factory=dict, repr=False)  # torchode's; the adjoint adds to it
    _evals_per_step: int = 0

    @property
    def nfe_backward_per_example(self) -> torch.Tensor | None:
        """Rate evaluations of each example's adjoint solve, once a backward has run (None before, or without)."""
        backward = self._stats.get("backsolve") or []
        if not backward:
            return None
        return sum(_per_example_nfe(stats, self._evals_per_step) for stats in backward)


def _per_example_nfe(stats: dict[str, Any], evals_per_step: int) -> torch.Tensor:
    """Each example's own evaluations: the start-up's and those of the steps it tried (accepted or rejected) while
    it was running. The loop calls the rate function on the whole batch until the last example is done, so
    examples that finished earlier ride along with zero steps; those calls are not theirs (torchode's `n_f_evals`
    counts them, and its adjoint's augmented term counts nothing, so steps are what is counted on)."""
    return _START_EVALS + evals_per_step * stats["n_steps"].cpu()


def _failure(status: torch.Tensor, what: str, max_steps: int) -> SolverDidNotConverge | None:
    """The error for a solve in which any example stopped early (None if every example reached its end)."""
    status = status.cpu()
    codes = sorted({int(code) for code in status.unique() if int(code) != 0})
    if not codes:
        return None
    reasons = "; ".join(_FAILURES.get(code, f"torchode status {code}") for code in codes)
    return SolverDidNotConverge(
        f"per-example {what}: {int((status != 0).sum())} of {len(status)} examples stopped early ({reasons}, "
        f"limit {max_steps} steps): loosen rtol/atol, raise max_num_steps, or the model's dynamics have blown up")


def _loop_limit(max_steps: int) -> int:
    """torchode's loop limit for at most `max_steps` steps per example, torchdiffeq's meaning of max_num_steps:
    torchode flags an example as soon as it has made `max_steps` steps, even one that has just finished."""
    return max_steps + 1


class _CheckedLoop(nn.Module):
    """torchode's solver loop that raises SolverDidNotConverge when an example stops early: its backsolve adjoint
    drops the backward solve's status (and sets no step limit), which would return wrong gradients silently."""

    def __init__(self, loop: nn.Module, what: str, max_steps: int) -> None:
        super().__init__()
        self.loop, self.what, self.max_steps = loop, what, max_steps
        loop.max_steps = _loop_limit(max_steps)

    def solve(self, *args: Any, **kwargs: Any) -> Any:
        solution = self.loop.solve(*args, **kwargs)
        error = _failure(solution.status, self.what, self.max_steps)
        if error is not None:
            raise error
        return solution


def solve(func: Callable[..., torch.Tensor], x: torch.Tensor, times: Sequence[float], *, scheme: str, rtol: float,
          atol: float, max_steps: int, adjoint: bool = False) -> tuple[list[torch.Tensor], PerExampleSolve]:
    """Solve dx/dt = func(t, x, None) for every example of `x` on its own from times[0]: the states at every time
    after the first, each (batch, *x.shape[1:]) (with two times, only the end state, without dense output), and the
    solve's counts. SolverDidNotConverge if any example stops early (the step limit, a non-finite error norm)."""
    try:
        import torchode
    except ImportError as error:  # a declared dependency; say what to do if an environment predates it
        raise ImportError("the per-example backend needs torchode: pip install 'torchode>=1.0'") from error
    if scheme not in PER_EXAMPLE_METHODS:
        raise ValueError(f"the per-example backend has no {scheme!r}; it offers {', '.join(PER_EXAMPLE_METHODS)}")
    shape, batch = x.shape[1:], x.shape[0]
    term = torchode.ODETerm(_Rate(func, shape))
    method = getattr(torchode, PER_EXAMPLE_METHODS[scheme])(term=term)
    controller = torchode.IntegralController(atol=atol, rtol=rtol, term=term, safety=_SAFETY,
                                             factor_min=_FACTOR_MIN, factor_max=_FACTOR_MAX).to(x.device)
    grid = torch.tensor(list(times), dtype=x.dtype, device=x.device)
    t_eval = None if len(times) == 2 else grid.expand(batch, -1)  # None: the end state only, torchode's fast path
    problem = torchode.InitialValueProblem(x.reshape(batch, -1), t_start=grid[0].expand(batch),
                                           t_end=grid[-1].expand(batch), t_eval=t_eval)
    if adjoint:
        solver = torchode.BacksolveAdjoint(term, method, controller)
        solver.forward_adjoint = _CheckedLoop(solver.forward_adjoint, "solve", max_steps)
        solver.backward_adjoint = _CheckedLoop(solver.backward_adjoint, "adjoint solve", max_steps)
    else:
        # Direct backpropagation treats the chosen steps as constants, as torchdiffeq does (its step-size update
        # runs under no_grad): through torchode's step-size control the gradients are the controller's as well,
        # 49% off a converged reference at rtol = atol = 1e-6 on an untrained 28x28 neural-ode stage (float64),
        # where the steps held constant agree to 0.04%.
        solver = torchode.AutoDiffAdjoint(method, controller, max_steps=_loop_limit(max_steps),
                                          backprop_through_step_size_control=False)
    solution = solver.solve(problem)
    error = _failure(solution.status, "solve", max_steps)
    if error is not None:
        raise error
    ys = solution.ys  # (batch, points, features)
    states = [ys[:, k].reshape(batch, *shape) for k in range(ys.shape[1])]
    if t_eval is not None:
        states = states[1:]  # torchode also reports times[0] itself
    evals_per_step = method.tableau.n_stages - int(method.tableau.fsal)  # FSAL reuses the last stage
    return states, PerExampleSolve(_per_example_nfe(solution.stats, evals_per_step),
                                   int(solution.stats["n_f_evals"][0]), solution.stats, evals_per_step)
