"""The continuous-depth engine: tableaus, the fixed-step integrator, depth bases, the ODE block."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from zoo import (
    TABLEAUS,
    DepthVarying,
    ODEBlock,
    PiecewiseConstant,
    PiecewiseLinear,
    Solver,
    SolverDidNotConverge,
    get_tableau,
    integrate_fixed,
    make_basis,
    projection_matrix,
    schemes,
)

pytestmark = pytest.mark.numerics  # float comparisons: run again under each lower CPU capability (cpu_capabilities.py)


def test_schemes_lists_required_methods() -> None:
    assert {"euler", "midpoint", "heun", "rk4", "rk4_38"} <= set(schemes())
    assert "dopri5" in schemes(adaptive=True)
    # The classic RK4 and the 3/8 rule are different methods (torchdiffeq's "rk4" is the 3/8 rule).
    assert get_tableau("rk4").c == (0.0, 0.5, 0.5, 1.0)
    assert get_tableau("rk4_38").b == (0.125, 0.375, 0.375, 0.125)


@pytest.mark.parametrize("name", sorted(TABLEAUS))
def test_measured_order_matches_theory(name: str) -> None:
    """dx/dt = x cos(t) (time-dependent, so c is exercised too) has x(t) = x0 exp(sin t)."""
    tableau = get_tableau(name)

    def rate(t, x, interval):
        return x * math.cos(t)

    x0 = torch.tensor([1.0, -0.5], dtype=torch.float64)
    exact = x0 * math.exp(math.sin(2.0))
    steps = [16, 32, 64, 128]
    errors = [(integrate_fixed(rate, x0, 0.0, 2.0, n, tableau) - exact).abs().max().item() for n in steps]
    slope = np.polyfit(np.log([2.0 / n for n in steps]), np.log(errors), 1)[0]
    assert abs(slope - tableau.order) < 0.25, (name, slope, errors)


def test_tableau_validation_rejects_inconsistent_methods() -> None:
    from zoo import ButcherTableau

    with pytest.raises(ValueError, match="c\\[1\\]"):
        ButcherTableau("bad", a=((), (0.3,)), b=(0.5, 0.5), c=(0.0, 0.5), order=2)
    with pytest.raises(ValueError, match="sum to 1"):
        ButcherTableau("bad", a=((),), b=(0.9,), c=(0.0,), order=1)


class ConstantRate(nn.Module):
    """dx/dt = p: with p piecewise constant in depth the exact solution is sum_k p_k * width_k."""

    def __init__(self) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.zeros(()))

    def forward(self, t, x, interval=None):
        return self.p * torch.ones_like(x)


@pytest.mark.parametrize("scheme", ["euler", "midpoint", "heun", "rk4", "rk4_38"])
def test_stages_on_step_boundaries_read_their_own_piece(scheme: str) -> None:
    """Stages at c = 1 lie on t_{k+1} but belong to step k: half-open intervals, exactly.

    With the reference ContinuousNet's bug (the next slice's weights at t + dt) the sum below is off.
    """
    basis = make_basis("piecewise_constant", 4, 0.0, 4.0)
    func = DepthVarying(ConstantRate, basis)
    with torch.no_grad():
        func.coefficients["p"].copy_(torch.tensor([1.0, 10.0, 100.0, 1000.0]))
    block = ODEBlock(func, Solver(scheme, 4), t1=4.0)
    out = block(torch.zeros(1))
    # integers, exact but for the rounding of the scheme's weights: a few ulps of the result's dtype
    assert out.item() == pytest.approx(1111.0, rel=16 * torch.finfo(out.dtype).eps)


def test_adaptive_blocks_use_half_open_pieces() -> None:
    basis = PiecewiseConstant(2, 0.0, 1.0)
    assert basis.weights(0.5) == [(1, 1.0)]  # [0, 0.5), [0.5, 1]
    assert basis.weights(1.0) == [(1, 1.0)]
    assert basis.weights(0.5, (0.0, 0.5)) == [(0, 1.0)]  # the right end of the first step
    assert basis.weights(0.5, (0.5, 1.0)) == [(1, 1.0)]


def test_piecewise_linear_interpolates_between_knots() -> None:
    basis = PiecewiseLinear(2, 0.0, 2.0)
    assert basis.size == 3
    assert basis.weights(0.25) == [(0, 0.75), (1, 0.25)]
    assert basis.weights(1.0) == [(1, 1.0)]
    assert basis.weights(2.0) == [(2, 1.0)]


@pytest.mark.parametrize("name", ["piecewise_constant", "piecewise_linear"])
def test_refinement_represents_the_same_function(name: str) -> None:
    basis = make_basis(name, 4, 0.0, 3.0)
    coefficients = np.random.default_rng(0).normal(size=basis.size)
    finer, matrix = basis.refined()
    refined = matrix @ coefficients
    for t in np.linspace(0.0, 3.0, 37)[:-1] + 1e-3:
        assert basis.values(t) @ coefficients == pytest.approx(finer.values(t) @ refined)


def test_projection_is_exact_when_the_target_contains_the_function() -> None:
    coarse = make_basis("piecewise_linear", 3, 0.0, 1.0)
    fine, refine = coarse.refined()
    assert np.allclose(projection_matrix(coarse, fine), refine)
    # Projecting back recovers the coarse coefficients.
    assert np.allclose(projection_matrix(fine, coarse) @ refine, np.eye(coarse.size))
    # A constant basis receives the element averages of a linear function.
    pc = make_basis("piecewise_constant", 2, 0.0, 1.0)
    line = np.array([0.0, 0.5, 1.0])  # theta(t) = t on hats at 0, 0.5, 1
    assert np.allclose(projection_matrix(coarse, pc) @ line, [0.25, 0.75])


def test_bad_bases_and_solvers_have_clear_errors() -> None:
    with pytest.raises(ValueError, match="accepted values: piecewise_constant, piecewise_linear"):
        make_basis("chebyshev", 3, 0.0, 1.0)
    with pytest.raises(ValueError, match="accepted values"):
        Solver("rk5", 3)
    with pytest.raises(ValueError, match="positive int"):
        Solver("rk4", 0)
    with pytest.raises(ValueError, match="rtol"):
        Solver("dopri5", rtol=0.0)


def test_depth_varying_refuses_batchnorm() -> None:
    with pytest.raises(ValueError, match="GroupNorm"):
        DepthVarying(lambda: nn.BatchNorm1d(3), make_basis("piecewise_constant", 2, 0.0, 1.0))


class LinearField(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(-1.0))

    def forward(self, t, x, interval=None):
        return self.a * x


@pytest.mark.parametrize("scheme", sorted(TABLEAUS))
def test_fixed_nfe_is_steps_times_stages(scheme: str) -> None:
    block = ODEBlock(LinearField(), Solver(scheme, 7), t1=1.0)
    block(torch.ones(3))
    assert block.nfe == 7 * get_tableau(scheme).stages


@pytest.mark.parametrize("adjoint", [False, True])
def test_adaptive_nfe_forward_and_backward(adjoint: bool) -> None:
    block = ODEBlock(LinearField(), Solver("dopri5", rtol=1e-6, atol=1e-6, adjoint=adjoint), t1=1.0)
    x = torch.ones(3, requires_grad=True)
    out = block(x)
    assert out[0].item() == pytest.approx(math.exp(-1.0), rel=1e-5)
    assert block.nfe >= 8 and block.nfe % 6 == 2  # dopri5: 6 stages a step + 2 for the first step
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert (block.nfe_backward > 0) == adjoint
    assert block.func.a.grad is not None


@pytest.mark.parametrize("method", schemes(adaptive=True)[len(schemes()):])
@pytest.mark.parametrize("adjoint", [False, True])
def test_every_listed_adaptive_method_runs(method: str, adjoint: bool) -> None:
    """Each adaptive scheme the zoo accepts must also be accepted by torchdiffeq at forward time (and backward)."""
    block = ODEBlock(LinearField(), Solver(method, rtol=1e-6, atol=1e-6, adjoint=adjoint), t1=1.0)
    x = torch.ones(3, requires_grad=True)
    out = block(x)
    assert out[0].item() == pytest.approx(math.exp(-1.0), rel=1e-2)  # low-order pairs: global error >> rtol
    assert block.nfe > 0
    out.sum().backward()
    assert x.grad is not None and block.func.a.grad is not None


def test_adaptive_methods_come_from_torchdiffeq() -> None:
    from torchdiffeq._impl.odeint import SOLVERS

    adaptive = schemes(adaptive=True)[len(schemes()):]
    assert {"dopri5", "dopri8", "bosh3", "adaptive_heun"} <= set(adaptive) <= set(SOLVERS)
    assert "tsit5" not in adaptive and "scipy_solver" not in adaptive  # not in torchdiffeq 0.2.5 / no gradients


def test_adaptive_solver_that_never_converges_raises_clearly() -> None:
    class Stiff(nn.Module):
        def forward(self, t, x, interval=None):
            return -1e6 * x

    block = ODEBlock(Stiff(), Solver("dopri5", rtol=1e-9, atol=1e-9, max_num_steps=20), t1=1.0)
    with pytest.raises(SolverDidNotConverge, match="max_num_steps|more than 20 steps"):
        block(torch.ones(2))


def test_with_solver_shares_parameters() -> None:
    block = ODEBlock(LinearField(), Solver("euler", 4), t1=1.0)
    twin = block.with_solver(Solver("rk4", 2))
    assert twin.func.a is block.func.a
    assert block.solver.scheme == "euler" and twin.solver.scheme == "rk4"
    assert twin(torch.ones(1)).item() == pytest.approx(math.exp(-1.0), abs=1e-3)
