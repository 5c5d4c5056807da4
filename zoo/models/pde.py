"""PDE-motivated residual networks (Ruthotto & Haber 2019): stable by construction.

Both families use the symmetric layer F(t, y) = -K(t)^T relu(K(t) y + b(t)), whose Jacobian -K^T D K (D the 0/1
relu mask) is symmetric negative semi-definite whatever the weights:

- parabolic  dy/dt = F(t, y): a gradient flow, so the ODE is non-expansive (two inputs never move apart) and
  forward Euler keeps that whenever h ||K||^2 <= 2;
- hyperbolic d^2y/dt^2 = F(t, y), y'(0) = 0: a conservative (wave-like) system whose linearisation has imaginary
  eigenvalues, discretised by the paper's leapfrog Y_{j+1} = 2 Y_j - Y_{j-1} + h^2 F_j(Y_j) (kick-drift form with
  a half-step velocity: one force evaluation per step, and exactly reversible).

Each layer holds one K (the ResNet's block holds two convolutions), so a `depth`-block size class gets 2 * depth
layers of step h = 1 on [0, 2 * depth], and the width is chosen to match the ResNet's parameter count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from zoo.basis import DepthVarying, make_basis
from zoo.integrate import Interval, ODEBlock, Solver, Track
from zoo.registry import ModelCard, register_model
from zoo.template import (
    DepthModel,
    SecondOrderModel,
    build_matched,
    build_model,
    check_common,
    continuous_stage,
    is_image,
)

LEAPFROG = "leapfrog"

_BIBTEX = """@article{ruthotto2019deep,
  title = {Deep Neural Networks Motivated by Partial Differential Equations},
  author = {Ruthotto, Lars and Haber, Eldad},
  journal = {Journal of Mathematical Imaging and Vision},
  volume = {62},
  pages = {352--364},
  year = {2020},
  eprint = {1804.04272},
  archivePrefix = {arXiv}
}"""

_DIFFERENCES = (
    "No normalisation layer inside F (the paper's N(.) would break the symmetric negative semi-definite "
    "Jacobian the stability argument rests on); relu for sigma; the zoo's shared stem, strided-conv transitions "
    "and GroupNorm head around the PDE stages instead of the paper's opening/pooling layers; step h = 1 with "
    "2 x depth layers per stage (one K per layer) and width matched to the ResNet's parameter count."
)


def _card(name: str, variant: str) -> ModelCard:
    return ModelCard(name=name, family="pde-resnet", title="Deep Neural Networks Motivated by Partial Differential "
                     "Equations", authors="Lars Ruthotto, Eldad Haber", year=2020, arxiv="1804.04272",
                     bibkey="ruthotto2019deep", bibtex=_BIBTEX, variant=variant, differences=_DIFFERENCES,
                     venue="Journal of Mathematical Imaging and Vision", licence="MIT",
                     capabilities=("nfe", "depth_transfer", "trajectories"))


class SymmetricLayer(nn.Module):
    """F(t, y) = -K^T relu(K y + b): a 3x3 convolution and its adjoint (images), or a linear map (vectors).

    The ODE is stable whatever K is, but its explicit discretisation is only stable while the step h satisfies the
    scheme's condition (parabolic forward Euler: h ||K||^2 <= 2; hyperbolic leapfrog: h ||K|| < 2). Training does
    not keep to it unasked (on pendulum it found ||K|| ~ 40 at h = 1 and the states blew up), so K is rescaled to
    `norm_bound` whenever its spectral norm exceeds it: the discrete network is stable by construction too, at the
    training step. The norm is exact (the largest eigenvalue of the smaller Gram matrix; the parameters are
    depth-varying, so no power-iteration state can be kept between calls); for a convolution the bound applies to
    sqrt(kh * kw) times the reshaped kernel's norm, an upper bound of the convolution operator's norm (Tsuzuku et
    al. 2018), so the guarantee holds for images as well.
    """

    def __init__(self, state: int, hidden: int, image: bool, norm_bound: float) -> None:
        super().__init__()
        self.image, self.norm_bound = image, norm_bound
        self.K = nn.Conv2d(state, hidden, 3, padding=1) if image else nn.Linear(state, hidden)
        self.overlap = float(self.K.weight[0, 0].numel()) ** 0.5 if image else 1.0

    def operator_norm_bound(self) -> torch.Tensor:
        """An upper bound of ||K||: the reshaped kernel's spectral norm, times sqrt(kh * kw) for a convolution.

        In the weight's own precision (at least float32) and outside any autocast: a bf16 Gram matrix, or a float64
        layer's norm taken in float32, misses the bound by the coarser dtype's rounding."""
        matrix = self.K.weight.flatten(1)
        if torch.finfo(matrix.dtype).bits < 32:
            matrix = matrix.float()
        with torch.autocast(matrix.device.type, enabled=False):
            gram = matrix @ matrix.T if matrix.shape[0] <= matrix.shape[1] else matrix.T @ matrix
            return self.overlap * torch.linalg.eigvalsh(gram)[-1].clamp_min(0.0).sqrt()

    def weight(self) -> torch.Tensor:
        """K rescaled onto the stability bound when it exceeds it (unchanged below it)."""
        scale = (self.norm_bound / self.operator_norm_bound().clamp_min(1e-12)).clamp(max=1.0)
        return self.K.weight * scale.to(self.K.weight.dtype)

    def forward(self, t: float | torch.Tensor, y: torch.Tensor, interval: Interval = None) -> torch.Tensor:
        weight = self.weight()
        if self.image:
            z = F.relu(F.conv2d(y, weight, self.K.bias, padding=1))
            return -F.conv_transpose2d(z, weight, padding=1)
        z = F.relu(F.linear(y, weight, self.K.bias))
        return -z @ weight  # K^T z for row vectors


# The schemes' stability conditions at h = 1 (leapfrog's is strict, hence the margin).
NORM_BOUND = {"parabolic": 2.0 ** 0.5, "hyperbolic": 0.95 * 2.0}


@dataclass(frozen=True)
class PartitionedSolver(Solver):
    """A Solver that also knows the leapfrog scheme for second-order systems (1 force evaluation per step).

    Any other scheme behaves exactly as `Solver` and integrates the equivalent first-order system (y, v); being a
    subclass, `replace_solver` (hence `manifest`) keeps it, so a hyperbolic model can go back to leapfrog."""

    def __post_init__(self) -> None:
        if self.scheme != LEAPFROG:
            super().__post_init__()
            return
        if not isinstance(self.n_steps, int) or isinstance(self.n_steps, bool) or self.n_steps < 1:
            raise ValueError(f"leapfrog needs n_steps, a positive int, got {self.n_steps!r}")
        if self.adjoint:
            raise ValueError("the adjoint method is only used with adaptive schemes (fixed steps backprop directly)")

    @property
    def fixed_cost(self) -> int | None:
        return self.n_steps if self.scheme == LEAPFROG else super().fixed_cost


class SecondOrderRate(nn.Module):
    """The first-order form of y'' = force(t, y): d(y, v)/dt = (v, force(t, y)), y and v stacked on dim 1."""

    def __init__(self, force: nn.Module) -> None:
        super().__init__()
        self.force = force

    def forward(self, t: float | torch.Tensor, z: torch.Tensor, interval: Interval = None) -> torch.Tensor:
        y, v = z.chunk(2, dim=1)
        return torch.cat([v, self.force(t, y, interval)], dim=1)


def leapfrog(force: nn.Module, y: torch.Tensor, v: torch.Tensor, t0: float, t1: float, n_steps: int,
             states: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Kick-drift leapfrog: v_{j+1/2} = v_{j-1/2} + h F_j(y_j), y_{j+1} = y_j + h v_{j+1/2}; (y_n, v_{n-1/2})."""
    h = (t1 - t0) / n_steps
    for k in range(n_steps):
        start = t0 + k * h
        end = t1 if k == n_steps - 1 else t0 + (k + 1) * h
        v = v + h * force(start, y, (start, end))
        y = y + h * v
        if states is not None:
            states.append(torch.cat([y, v], dim=1))
    return y, v


def leapfrog_backward(force: nn.Module, y: torch.Tensor, v: torch.Tensor, t0: float, t1: float,
                      n_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The leapfrog run backwards: from (y_n, v_{n-1/2}) back to (y_0, v_{-1/2}) (exact up to rounding)."""
    h = (t1 - t0) / n_steps
    for k in reversed(range(n_steps)):
        start = t0 + k * h
        end = t1 if k == n_steps - 1 else t0 + (k + 1) * h
        y = y - h * v
        v = v - h * force(start, y, (start, end))
    return y, v


class SecondOrderBlock(ODEBlock):
    """y(t1) from y(t0) = input and y'(t0) = 0 under y'' = force(t, y); `func` is the first-order form on (y, v)."""

    def __init__(self, force: nn.Module, solver: Solver, t1: float, t0: float = 0.0) -> None:
        super().__init__(SecondOrderRate(force), solver, t1, t0)

    def _start(self, y: torch.Tensor) -> torch.Tensor:
        return torch.cat([y, torch.zeros_like(y)], dim=1)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if self.solver.scheme != LEAPFROG:
            return super().forward(self._start(y)).chunk(2, dim=1)[0]
        self._counter, self.nfe = None, self.solver.n_steps
        if torch.is_autocast_enabled(y.device.type):
            y = y.float()  # as ODEBlock: the state accumulates in fp32
        return leapfrog(self.func.force, y, torch.zeros_like(y), self.t0, self.t1, self.solver.n_steps)[0]

    def trajectory(self, y: torch.Tensor, points: int = 8) -> Track:
        """States (y, v) stacked on dim 1 (the rate function's state), at every step boundary."""
        if self.solver.scheme != LEAPFROG:
            return super().trajectory(self._start(y), points)
        n = self.solver.n_steps
        h = (self.t1 - self.t0) / n
        states = [self._start(y)]
        leapfrog(self.func.force, y, torch.zeros_like(y), self.t0, self.t1, n, states)
        times = [self.t0 + k * h for k in range(n)] + [self.t1]
        return Track(times, states, [(times[k], times[k + 1]) for k in range(n)])


def pde_model(input_shape: Sequence[int], num_classes: int, *, width: int, depth: int, stages: int,
              kind: str, hidden: int | None, scheme: str | None, n_steps: int | None) -> DepthModel:
    """2 * depth layers of F (parabolic: forward Euler; hyperbolic: leapfrog), h = 1; hidden=None matches params."""
    check_common(input_shape, num_classes, width, depth, stages)
    image = is_image(input_shape)
    layers = 2 * depth
    steps = layers if n_steps is None else n_steps
    if kind == "parabolic":
        solver = Solver(scheme or "euler", steps)
    else:
        solver = PartitionedSolver(scheme or LEAPFROG, steps)

    def build(size: int) -> DepthModel:
        def block_for(state: int) -> ODEBlock:
            # Images: K maps the stage's channels to themselves (size sets the stem width); vectors: K lifts the
            # state to `size` hidden features.
            def make() -> nn.Module:
                return SymmetricLayer(state, state if image else size, image, NORM_BOUND[kind])

            basis = make_basis("piecewise_constant", layers, 0.0, float(layers))
            if kind == "parabolic":
                return continuous_stage(make, basis, solver)
            return SecondOrderBlock(DepthVarying(make, basis), solver, t1=float(layers))

        model = build_model(input_shape, num_classes, width=size if image else width, stages=stages,
                            block_for=block_for)
        if kind == "hyperbolic":
            model = SecondOrderModel(model.stem, list(model.blocks), list(model.transitions), model.head)
        return model

    return build_matched(build, hidden, input_shape, num_classes, width=width, depth=depth, stages=stages,
                         multiples=(8, 2) if image else (1,))


@register_model(_card(
    "pde-parabolic", "parabolic ResNet y' = -K(t)^T relu(K(t) y + b(t)): forward Euler, 2 x depth layers of h = 1"))
def pde_parabolic(input_shape: tuple[int, ...], num_classes: int, *, width: int = 64, depth: int = 6,
                  stages: int = 1, hidden: int | None = None, n_steps: int | None = None) -> DepthModel:
    return pde_model(input_shape, num_classes, width=width, depth=depth, stages=stages, kind="parabolic",
                     hidden=hidden, scheme=None, n_steps=n_steps)


@register_model(_card(
    "pde-hyperbolic", "hyperbolic ResNet y'' = -K(t)^T relu(K(t) y + b(t)), y'(0) = 0: leapfrog, 2 x depth layers "
    "of h = 1"))
def pde_hyperbolic(input_shape: tuple[int, ...], num_classes: int, *, width: int = 64, depth: int = 6,
                   stages: int = 1, hidden: int | None = None, n_steps: int | None = None) -> DepthModel:
    return pde_model(input_shape, num_classes, width=width, depth=depth, stages=stages, kind="hyperbolic",
                     hidden=hidden, scheme=None, n_steps=n_steps)
