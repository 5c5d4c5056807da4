"""The stiffness penalty (after Hudson et al. 2023), an engine option any fixed-step model can train with.

`penalise_stiffness(model, weight)` turns every fixed-step stage of a `DepthModel` into a `StiffnessPenalisedBlock`
(same rate function and parameters, same solver) and returns it as a `StiffnessModel`, whose `regulariser()` (the
contract's optional training-loss term, added by the training loop) is `weight` x the mean over steps and samples of
sigma_max(df/dx) at each step's start: the largest singular value of the rate function's Jacobian, an upper bound
on its spectral radius. sigma_max comes from a few power iterations on J^T J (forward- and reverse-mode products,
no Jacobian is formed) with the singular vectors held fixed; the last step, |J^T u| for the left singular vector u,
is taken with a graph, so the penalty is differentiable in the rate's parameters (the state itself is detached: each
step is penalised for its own Jacobian). `resnet-stiffness` is the ResNet built this way.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn

from zoo.integrate import ODEBlock, Solver, integrate_fixed
from zoo.template import DepthModel


def _norms(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / _norms(x).clamp_min(torch.finfo(x.dtype).tiny).view((-1,) + (1,) * (x.dim() - 1))


def sigma_max(rate: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, iterations: int = 3,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample largest singular value of d rate(x) / dx, differentiable in rate's parameters (x is detached)."""
    x = x.detach()
    v = _unit(torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype))
    with torch.no_grad(), warnings.catch_warnings():
        # torch's first forward-mode call scripts its decompositions (a deprecated API): not ours to fix
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
        _, pull_back = torch.func.vjp(rate, x)
        for _ in range(iterations):
            _, jv = torch.func.jvp(rate, (x,), (v,))
            v = _unit(pull_back(jv)[0])
        _, jv = torch.func.jvp(rate, (x,), (v,))
        u = _unit(jv)
    with torch.enable_grad():
        inputs = x.clone().requires_grad_(True)
        (jtu,) = torch.autograd.grad(rate(inputs), inputs, grad_outputs=u, create_graph=True)
    return _norms(jtu)  # |J^T u| = sigma_max once u, v are the top singular pair


class StiffnessPenalisedBlock(ODEBlock):
    """A fixed-step block that, in training mode, also estimates sigma_max(df/dx) at every step's start."""

    def __init__(self, func: nn.Module, solver: Solver, t1: float, *, weight: float, samples: int,
                 iterations: int, t0: float = 0.0) -> None:
        super().__init__(func, solver, t1, t0)
        self.weight, self.samples, self.iterations = weight, samples, iterations
        self.penalty: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.weight > 0) or self.solver.adaptive:
            self.penalty = None
            return super().forward(x)
        solver, states = self.solver, [x]
        self.nfe = solver.fixed_cost
        out = integrate_fixed(self.func, x, self.t0, self.t1, solver.n_steps, solver.tableau, states)
        h = (self.t1 - self.t0) / solver.n_steps
        sigmas = []
        # In fp32 outside any autocast (bf16 training): torch.func's jvp/vjp do not mix with autocast's casts.
        with torch.autocast(x.device.type, enabled=False):
            for k, state in enumerate(states[:-1]):
                start = self.t0 + k * h
                step = (start, start + h)
                sigmas.append(sigma_max(lambda z, t=start, s=step: self.func(t, z, s), state[:self.samples].float(),
                                        iterations=self.iterations).mean())
        self.penalty = self.weight * torch.stack(sigmas).mean()
        return out


class StiffnessModel(DepthModel):
    def regulariser(self) -> torch.Tensor:
        """The stiffness penalty of the last training forward (0 after an eval forward)."""
        terms = [block.penalty for block in self.blocks if getattr(block, "penalty", None) is not None]
        return torch.stack(terms).sum() if terms else next(self.parameters()).new_zeros(())


def check_penalty(weight: float, samples: int, iterations: int) -> None:
    if not (isinstance(weight, int | float) and not isinstance(weight, bool) and weight >= 0):
        raise ValueError(f"stiffness_weight must be a number >= 0, got {weight!r}")
    for name, value in (("samples", samples), ("iterations", iterations)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def penalise_stiffness(model: DepthModel, weight: float, *, samples: int = 8, iterations: int = 3) -> StiffnessModel:
    """`model` (its stem, transitions, head and every rate function: the same objects) with the stiffness penalty as
    its regulariser; its stages must be fixed-step (adaptive solvers have no step states to penalise)."""
    check_penalty(weight, samples, iterations)
    if not isinstance(model, DepthModel) or type(model) not in (DepthModel, StiffnessModel):
        raise ValueError(f"the stiffness penalty applies to a plain DepthModel, got {type(model).__name__}")
    if any(block.solver.adaptive for block in model.blocks):
        raise ValueError("the stiffness penalty needs fixed-step stages; this model has an adaptive solver")
    blocks = [StiffnessPenalisedBlock(block.func, block.solver, block.t1, t0=block.t0, weight=float(weight),
                                      samples=samples, iterations=iterations) for block in model.blocks]
    penalised = StiffnessModel(model.stem, blocks, list(model.transitions), model.head)
    penalised.card = model.card
    return penalised
