"""Stiffness-regularised ResNet (after Hudson et al. 2023, "Measuring Stiffness in Residual Neural Networks"):
the zoo's ResNet trained with a penalty on the stiffness of its underlying ODE.

The penalty (the contract's `regulariser()`) is `weight` x the mean over layers and samples of sigma_max(df/dx),
the largest singular value of the rate function's Jacobian at each layer's input state, an upper bound on the
spectral radius the stiffness ratio is built on. sigma_max comes from a few power iterations on J^T J (forward-
and reverse-mode products, no Jacobian is formed) with the singular vectors held fixed; the last step,
|J^T u| for the left singular vector u, is taken with a graph, so the penalty is differentiable in the layer's
parameters (the state itself is detached: each layer is penalised for its own Jacobian).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn

from zoo.basis import DepthVarying, make_basis
from zoo.integrate import ODEBlock, Solver, integrate_fixed
from zoo.layers import rate_factory
from zoo.registry import ModelCard, register_model
from zoo.template import DepthModel, build_model, check_common, is_image

_BIBTEX = """@misc{hudson2023measuring,
  title = {Measuring Stiffness in Residual Neural Networks},
  author = {Hudson and Sargsyan, Khachik and others},
  year = {2023},
  howpublished = {\\url{https://www.ksargsyan.net/publication/hudson-2023-a/}}
}"""

STIFFNESS_CARD = ModelCard(
    name="resnet-stiffness", family="resnet", title="Measuring Stiffness in Residual Neural Networks",
    authors="Hudson, Khachik Sargsyan, et al.", year=2023, arxiv="", url="https://www.ksargsyan.net/publication/"
    "hudson-2023-a/", bibkey="hudson2023measuring", bibtex=_BIBTEX, venue="RAMSES (see the publication page)",
    licence="MIT", capabilities=("nfe", "depth_transfer", "trajectories", "regulariser"),
    variant="the zoo's ResNet (GN pre-activation blocks, Euler h = 1) trained with 0.01 x mean sigma_max(df/dx) "
    "over layers, estimated by 3 power iterations on 8 samples of each batch",
    differences="The paper proposes stiffness metrics and suggests them as training penalties; this variant uses "
    "one of its ingredients, the largest singular value of the layer Jacobian (an upper bound on the spectral "
    "radius, not the stiffness ratio), with a fixed weight that was not tuned; the state is detached in the "
    "penalty; the authors list and venue are incomplete (only the publication page could be verified).",
)


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
                 iterations: int) -> None:
        super().__init__(func, solver, t1)
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


@register_model("resnet-stiffness", STIFFNESS_CARD)
def resnet_stiffness(input_shape: tuple[int, ...], num_classes: int, *, width: int = 64, depth: int = 6,
                     stages: int = 1, stiffness_weight: float = 0.01, samples: int = 8,
                     iterations: int = 3) -> DepthModel:
    """The ResNet (same parameters, same count) with the stiffness penalty as its regulariser."""
    check_common(input_shape, num_classes, width, depth, stages)
    if not (isinstance(stiffness_weight, int | float) and stiffness_weight >= 0):
        raise ValueError(f"stiffness_weight must be a number >= 0, got {stiffness_weight!r}")
    for name, value in (("samples", samples), ("iterations", iterations)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    image = is_image(input_shape)

    def block_for(state: int) -> ODEBlock:
        basis = make_basis("piecewise_constant", depth, 0.0, float(depth))

        return StiffnessPenalisedBlock(DepthVarying(rate_factory(state, width, image), basis), Solver("euler", depth),
                                       float(depth), weight=float(stiffness_weight), samples=samples,
                                       iterations=iterations)

    model = build_model(input_shape, num_classes, width=width, stages=stages, block_for=block_for)
    return StiffnessModel(model.stem, list(model.blocks), list(model.transitions), model.head)
