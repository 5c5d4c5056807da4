"""TisODE (Yan et al. 2020): a time-invariant Neural ODE trained with a steady-state regulariser.

The rate function f(x) does not see t (torchdiffeq's ODEfunc without the time channels), so the flow is
autonomous: trajectories of distinct inputs never cross and, in the paper's argument, small input perturbations
stay bounded. The steady-state term pushes the trajectory to have come to rest by T: in training, every forward
also integrates on past T to 2T and adds `weight` x mean over samples of int_T^2T |f(x(t))|_1 / dim dt to the loss
(the contract's `regulariser()` capability), so x(T) approaches a fixed point of f.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from zoo.integrate import ODEBlock, Solver
from zoo.layers import ConvRate, MLPRate
from zoo.registry import ModelCard, register_model
from zoo.template import (
    DepthModel,
    adaptive_capabilities,
    adaptive_solver,
    build_matched,
    build_model,
    check_common,
    is_image,
)

_BIBTEX = """@inproceedings{yan2020robustness,
  title = {On Robustness of Neural Ordinary Differential Equations},
  author = {Yan, Hanshu and Du, Jiawei and Tan, Vincent Y. F. and Feng, Jiashi},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year = {2020},
  eprint = {1910.05513},
  archivePrefix = {arXiv}
}"""

TISODE_CARD = ModelCard(
    name="tisode", family="tisode", title="On Robustness of Neural Ordinary Differential Equations",
    authors="Hanshu Yan, Jiawei Du, Vincent Y. F. Tan, Jiashi Feng", year=2020, arxiv="1910.05513",
    bibkey="yan2020robustness", bibtex=_BIBTEX, venue="International Conference on Learning Representations (ICLR)",
    licence="MIT", capabilities=adaptive_capabilities("regulariser"),
    variant="time-invariant torchdiffeq ODEfunc (GN-ReLU-conv-GN-ReLU-conv-GN, no time channels) on [0, 1], "
    "dopri5 rtol = atol = 1e-3; steady-state regulariser weight 0.1 on [1, 2] by 4 Euler steps",
    differences="The steady-state integral int_T^2T |f(x(t))| dt is a left Riemann sum over 4 forward-Euler steps "
    "past T (the paper integrates it with the ODE solver) and is normalised by the state size; its weight is "
    "fixed at 0.1, not tuned; the rate function is torchdiffeq's GroupNorm ODEfunc and the width is matched to "
    "the ResNet's parameter count; the zoo's shared stem and head.",
)


class TimeInvariantBlock(ODEBlock):
    """An ODE block that, in training mode, also measures how far its final state is from rest."""

    def __init__(self, func: nn.Module, solver: Solver, t1: float, *, weight: float, tail_steps: int) -> None:
        super().__init__(func, solver, t1)
        self.weight, self.tail_steps = weight, tail_steps
        self.penalty: torch.Tensor | None = None

    def steady_state(self, x_t1: torch.Tensor) -> torch.Tensor:
        """Mean over samples of the left Riemann sum of int_T^2T |f(x)|_1 / dim dt along forward-Euler steps."""
        h = (self.t1 - self.t0) / self.tail_steps
        x, total = x_t1, x_t1.new_zeros(())
        for k in range(self.tail_steps):
            t = self.t1 + k * h
            rate = self.func(t, x, (t, t + h))
            total = total + h * rate.abs().flatten(1).mean(1).mean()
            x = x + h * rate
        return total

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        self.penalty = self.weight * self.steady_state(out) if self.training and self.weight > 0 else None
        return out


class TisODEModel(DepthModel):
    def regulariser(self) -> torch.Tensor:
        """The steady-state penalty of the last training forward (0 after an eval forward)."""
        terms = [block.penalty for block in self.blocks if getattr(block, "penalty", None) is not None]
        return torch.stack(terms).sum() if terms else next(self.parameters()).new_zeros(())


def tisode_model(input_shape: Sequence[int], num_classes: int, *, width: int, depth: int, stages: int,
                 channels: int | None, weight: float, scheme: str, rtol: float, atol: float,
                 backend: str | None = None) -> DepthModel:
    check_common(input_shape, num_classes, width, depth, stages)
    if not (isinstance(weight, int | float) and weight >= 0):
        raise ValueError(f"weight (the steady-state regulariser's) must be a number >= 0, got {weight!r}")
    solver = adaptive_solver("TisODE trains", scheme, rtol=rtol, atol=atol, backend=backend)
    image = is_image(input_shape)

    def build(size: int) -> DepthModel:
        def block_for(state: int) -> ODEBlock:
            func: nn.Module = ConvRate(state, out_norm=True) if image else MLPRate(state, size)
            return TimeInvariantBlock(func, solver, 1.0, weight=float(weight), tail_steps=4)

        model = build_model(input_shape, num_classes, width=size if image else width, stages=stages,
                            block_for=block_for)
        return TisODEModel(model.stem, list(model.blocks), list(model.transitions), model.head)

    return build_matched(build, channels, input_shape, num_classes, width=width, depth=depth, stages=stages,
                         multiples=(8, 2, 1) if image else (1,))  # small widths need odd sizes


@register_model(TISODE_CARD)
def tisode(input_shape: tuple[int, ...], num_classes: int, *, width: int = 64, depth: int = 6, stages: int = 1,
           channels: int | None = None, weight: float = 0.1, scheme: str = "dopri5", rtol: float = 1e-3,
           atol: float = 1e-3, backend: str | None = None) -> DepthModel:
    return tisode_model(input_shape, num_classes, width=width, depth=depth, stages=stages, channels=channels,
                        weight=weight, scheme=scheme, rtol=rtol, atol=atol, backend=backend)
