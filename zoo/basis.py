"""Depth bases: parameters as functions of depth, theta(t) = sum_beta phi_beta(t) theta_beta.

`PiecewiseConstant` with one piece per step is a ResNet; `PiecewiseLinear` (continuous hat
functions, the "fem_linear" basis of Queiruga et al.) gives a smooth-enough theta(t) for a
Runge-Kutta method to keep its order. Both can be refined (more basis functions that represent
exactly the same theta(t)) and any basis can be L2-projected onto another.

Evaluation returns Python-float weights chosen from the stage's step (`interval`), so a stage on a
knot reads the piece on its own step's side: half-open intervals done exactly, not by an epsilon.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state

from zoo.integrate import Interval

_KNOT_TOL = 1e-9  # relative distance under which a stage time counts as lying on a knot


class DepthBasis(ABC):
    """`size` functions on [t0, t1] built on `n_elements` equal elements."""

    name: str

    def __init__(self, n_elements: int, t0: float, t1: float) -> None:
        if not isinstance(n_elements, int) or n_elements < 1:
            raise ValueError(f"a depth basis needs a positive number of elements, got {n_elements!r}")
        if not t1 > t0:
            raise ValueError(f"a depth basis needs t1 > t0, got [{t0}, {t1}]")
        self.n_elements, self.t0, self.t1 = n_elements, float(t0), float(t1)

    @property
    @abstractmethod
    def size(self) -> int: ...

    @abstractmethod
    def weights(self, t: float, interval: Interval = None) -> list[tuple[int, float]]:
        """Nonzero (index, phi_index(t)) pairs; the element is chosen from `interval`'s side on a knot."""

    @abstractmethod
    def refined(self) -> tuple[DepthBasis, np.ndarray]:
        """The basis with every element halved, and R such that new coefficients = R @ old ones."""

    def knots(self) -> np.ndarray:
        return np.linspace(self.t0, self.t1, self.n_elements + 1)

    def element(self, t: float, interval: Interval) -> tuple[int, float]:
        """Index of the element holding t, and t's local coordinate in it (0 at its left knot, 1 at its right)."""
        width = (self.t1 - self.t0) / self.n_elements
        u = (t - self.t0) / width
        nearest = round(u)
        if abs(u - nearest) <= _KNOT_TOL * max(1.0, abs(u)):
            # On a knot: belong to the element on the side of the step's interior; without a step, the
            # half-open convention [t_j, t_{j+1}) (and the last element for t = t1).
            left_side = interval is not None and 0.5 * (interval[0] + interval[1]) < t
            index = nearest - 1 if left_side else nearest
        else:
            index = math.floor(u)
        index = min(max(index, 0), self.n_elements - 1)
        return index, u - index

    def values(self, t: float) -> np.ndarray:
        """phi(t) for every basis function, as a dense vector (for quadrature)."""
        out = np.zeros(self.size)
        for index, weight in self.weights(t):
            out[index] = weight
        return out

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and (self.n_elements, self.t0, self.t1) == (
            other.n_elements, other.t0, other.t1)  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_elements={self.n_elements}, t0={self.t0:g}, t1={self.t1:g})"


class PiecewiseConstant(DepthBasis):
    """Indicator functions of the elements: one independent parameter set per element (a ResNet)."""

    name = "piecewise_constant"

    @property
    def size(self) -> int:
        return self.n_elements

    def weights(self, t: float, interval: Interval = None) -> list[tuple[int, float]]:
        return [(self.element(t, interval)[0], 1.0)]

    def refined(self) -> tuple[PiecewiseConstant, np.ndarray]:
        matrix = np.repeat(np.eye(self.size), 2, axis=0)  # each piece copied into its two halves
        return PiecewiseConstant(2 * self.n_elements, self.t0, self.t1), matrix


class PiecewiseLinear(DepthBasis):
    """Continuous hat functions on the knots: theta(t) interpolates linearly between knot values."""

    name = "piecewise_linear"

    @property
    def size(self) -> int:
        return self.n_elements + 1

    def weights(self, t: float, interval: Interval = None) -> list[tuple[int, float]]:
        index, s = self.element(t, interval)
        if s <= _KNOT_TOL:
            return [(index, 1.0)]
        if s >= 1.0 - _KNOT_TOL:
            return [(index + 1, 1.0)]
        return [(index, 1.0 - s), (index + 1, s)]

    def refined(self) -> tuple[PiecewiseLinear, np.ndarray]:
        matrix = np.zeros((2 * self.n_elements + 1, self.size))
        for i in range(self.size):
            matrix[2 * i, i] = 1.0  # old knots keep their values
        for i in range(self.n_elements):
            matrix[2 * i + 1, i] = matrix[2 * i + 1, i + 1] = 0.5  # new midpoints interpolate
        return PiecewiseLinear(2 * self.n_elements, self.t0, self.t1), matrix


BASES: dict[str, type[DepthBasis]] = {cls.name: cls for cls in (PiecewiseConstant, PiecewiseLinear)}


def make_basis(name: str, size: int, t0: float, t1: float) -> DepthBasis:
    """A basis of `name` with `size` functions on [t0, t1]."""
    if name not in BASES:
        raise ValueError(f"unknown depth basis {name!r}; accepted values: {', '.join(sorted(BASES))}")
    n_elements = size if name == "piecewise_constant" else size - 1
    if n_elements < 1:
        raise ValueError(f"basis {name!r} needs at least {2 if name == 'piecewise_linear' else 1} functions")
    return BASES[name](n_elements, t0, t1)


def projection_matrix(source: DepthBasis, target: DepthBasis) -> np.ndarray:
    """P such that target coefficients P @ c are the L2 projection of sum_i c_i source_i onto `target`.

    Solves M P = B with M = (target_i, target_j) and B = (target_i, source_k), integrated exactly (both
    bases are piecewise polynomials of degree <= 1) by 7-point Gauss-Legendre on the union of knots.
    """
    if (source.t0, source.t1) != (target.t0, target.t1):
        raise ValueError("can only project between bases on the same depth interval")
    nodes, quad_weights = np.polynomial.legendre.leggauss(7)
    knots = np.union1d(source.knots(), target.knots())
    gram = np.zeros((target.size, target.size))
    mixed = np.zeros((target.size, source.size))
    for left, right in zip(knots[:-1], knots[1:]):
        half = 0.5 * (right - left)
        for node, weight in zip(nodes, quad_weights):
            t = left + half * (node + 1.0)
            phi, psi = target.values(t), source.values(t)
            gram += half * weight * np.outer(phi, phi)
            mixed += half * weight * np.outer(phi, psi)
    return np.linalg.solve(gram, mixed)


class DepthVarying(nn.Module):
    """Makes every parameter of a rate-function module a function of depth t in a basis.

    `make()` builds one member of the family (a module called as ``member(t, x)``); `basis.size`
    independently initialised members are stacked so coefficient beta holds member beta's
    parameters. At time t the template is called with theta(t) = sum phi_beta(t) theta_beta. With one
    nonzero weight of 1.0 (piecewise constant) theta(t) *is* the stored slice, bit for bit.
    """

    def __init__(self, make: Callable[[], nn.Module], basis: DepthBasis) -> None:
        super().__init__()
        members = [make() for _ in range(basis.size)]
        params, buffers = stack_module_state(members)
        if buffers:
            raise ValueError("depth-varying rate functions must not hold buffers (use GroupNorm, not BatchNorm)")
        self.basis = basis
        self._names = list(params)
        self.coefficients = nn.ParameterDict({_key(n): nn.Parameter(p.detach().clone()) for n, p in params.items()})
        # The template only lends its structure to functional_call; it is kept out of the module tree so its own
        # (unused) parameters are neither counted, trained nor moved.
        object.__setattr__(self, "_template", members[0].to("meta"))

    def theta(self, t: float, interval: Interval = None) -> dict[str, torch.Tensor]:
        weights = self.basis.weights(t, interval)
        out = {}
        for name in self._names:
            stack = self.coefficients[_key(name)]
            if len(weights) == 1 and weights[0][1] == 1.0:
                out[name] = stack[weights[0][0]]
            else:
                out[name] = sum(w * stack[i] for i, w in weights)
        return out

    def forward(self, t: float | torch.Tensor, x: torch.Tensor, interval: Interval) -> torch.Tensor:
        if isinstance(t, torch.Tensor) and t.numel() > 1:
            raise ValueError("depth-varying parameters are evaluated at one time per call, but the per-example "
                             "backend gives every example its own time: solve this model with backend='torchdiffeq' "
                             "or a fixed-step scheme")
        time = float(t)  # a host sync only under adaptive solvers, whose step control syncs anyway
        return functional_call(self._template, self.theta(time, interval), (t, x))

    def rebase(self, basis: DepthBasis, matrix: np.ndarray) -> None:
        """Replace the coefficients by `matrix @ coefficients` in `basis` (new Parameter objects)."""
        for name in self._names:
            old = self.coefficients[_key(name)]
            mixing = torch.as_tensor(matrix, dtype=old.dtype, device=old.device)
            new = torch.tensordot(mixing, old.detach(), dims=1)
            self.coefficients[_key(name)] = nn.Parameter(new, requires_grad=old.requires_grad)
        self.basis = basis

    def refine(self) -> None:
        """Deepen: twice as many basis functions representing exactly the same theta(t)."""
        self.rebase(*self.basis.refined())

    def project(self, basis: DepthBasis) -> None:
        """Re-express theta(t) in another basis by L2 projection (exact when `basis` contains it)."""
        self.rebase(basis, projection_matrix(self.basis, basis))

    def extra_repr(self) -> str:
        return f"basis={self.basis!r}"


def _key(name: str) -> str:
    return name.replace(".", "__")
