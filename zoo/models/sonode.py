"""Second-order ODE-Net (SONODE, Norcliffe et al. 2020): x'' = a(t, x, x'), with a learned initial velocity
x'(0) = g(x(0)), integrated in its first-order form d(x, v)/dt = (v, a(t, x, v)) by the same adaptive solver as
the Neural ODE; the stage's output is the position x(1). No special case in the engine: the block is an
`ODEBlock` on the state (x, v) stacked on dim 1, preceded by g and followed by taking the position.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from zoo.integrate import Interval, ODEBlock, Solver, Track
from zoo.layers import group_norm
from zoo.registry import ModelCard, register_model
from zoo.template import (
    DepthModel,
    SecondOrderModel,
    adaptive_capabilities,
    adaptive_solver,
    build_matched,
    build_model,
    check_common,
    is_image,
)

_BIBTEX = """@inproceedings{norcliffe2020second,
  title = {On Second Order Behaviour in Augmented Neural {ODE}s},
  author = {Norcliffe, Alexander and Bodnar, Cristian and Day, Ben and Simidjievski, Nikola and Li{\\`o}, Pietro},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  year = {2020},
  eprint = {2006.07220},
  archivePrefix = {arXiv}
}"""

SONODE_CARD = ModelCard(
    name="sonode", family="sonode", title="On Second Order Behaviour in Augmented Neural ODEs",
    authors="Alexander Norcliffe, Cristian Bodnar, Ben Day, Nikola Simidjievski, Pietro Lio", year=2020,
    arxiv="2006.07220", bibkey="norcliffe2020second", bibtex=_BIBTEX,
    venue="Advances in Neural Information Processing Systems (NeurIPS)", licence="MIT",
    capabilities=adaptive_capabilities(),
    variant="x'' = a(t, x, x') with a = GN-ReLU-ConcatConv(2C -> C)-GN-ReLU-ConcatConv-GN (a tanh MLP for "
    "vectors), x'(0) = conv3x3(x(0)) (linear for vectors), on [0, 1] by dopri5 rtol = atol = 1e-3",
    differences="The acceleration network is torchdiffeq's GroupNorm ODEfunc widened to read (x, v) rather than "
    "the paper's task-specific MLPs; the initial velocity is one convolution (linear map) of the initial position; "
    "the zoo's shared stem and head; width matched to the ResNet's parameter count.",
)


class Acceleration(nn.Module):
    """a(t, x, v) from the stacked state (x, v): 2C channels (features) in, C out, time-concatenated."""

    def __init__(self, state: int, hidden: int, image: bool) -> None:
        super().__init__()
        self.image = image
        if image:
            self.norm1, self.norm2, self.norm3 = group_norm(2 * state), group_norm(state), group_norm(state)
            self.conv1 = nn.Conv2d(2 * state + 1, state, 3, padding=1)
            self.conv2 = nn.Conv2d(state + 1, state, 3, padding=1)
        else:
            self.layers = nn.ModuleList([nn.Linear(2 * state + 1, hidden), nn.Linear(hidden + 1, hidden),
                                         nn.Linear(hidden + 1, state)])

    @staticmethod
    def _with_time(t: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.ones_like(x[:, :1]) * t, x], dim=1)

    def forward(self, t: float | torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if self.image:
            out = self.conv1(self._with_time(t, F.relu(self.norm1(z))))
            out = self.conv2(self._with_time(t, F.relu(self.norm2(out))))
            return self.norm3(out)
        for i, layer in enumerate(self.layers):
            z = layer(self._with_time(t, z))
            if i < len(self.layers) - 1:
                z = torch.tanh(z)
        return z


class SecondOrderRate(nn.Module):
    """d(x, v)/dt = (v, a(t, x, v))."""

    def __init__(self, acceleration: nn.Module) -> None:
        super().__init__()
        self.acceleration = acceleration

    def forward(self, t: float | torch.Tensor, z: torch.Tensor, interval: Interval = None) -> torch.Tensor:
        return torch.cat([z.chunk(2, dim=1)[1], self.acceleration(t, z)], dim=1)


class SONODEBlock(ODEBlock):
    """x(1) from x(0) = input, x'(0) = velocity(x(0)) under x'' = a(t, x, x')."""

    def __init__(self, acceleration: nn.Module, velocity: nn.Module, solver: Solver, t1: float) -> None:
        super().__init__(SecondOrderRate(acceleration), solver, t1)
        self.velocity = velocity

    def start(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.velocity(x)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.start(x)).chunk(2, dim=1)[0]

    def trajectory(self, x: torch.Tensor, points: int = 8) -> Track:
        """States (x, v) stacked on dim 1, as the rate function sees them."""
        return super().trajectory(self.start(x), points)


def sonode_model(input_shape: Sequence[int], num_classes: int, *, width: int, depth: int, stages: int,
                 channels: int | None, scheme: str, rtol: float, atol: float, adjoint: bool,
                 backend: str | None = None) -> DepthModel:
    check_common(input_shape, num_classes, width, depth, stages)
    solver = adaptive_solver("SONODE trains", scheme, rtol=rtol, atol=atol, adjoint=adjoint, backend=backend)
    image = is_image(input_shape)

    def build(size: int) -> DepthModel:
        def block_for(state: int) -> ODEBlock:
            velocity = nn.Conv2d(state, state, 3, padding=1) if image else nn.Linear(state, state)
            return SONODEBlock(Acceleration(state, size, image), velocity, solver, 1.0)

        model = build_model(input_shape, num_classes, width=size if image else width, stages=stages,
                            block_for=block_for)
        return SecondOrderModel(model.stem, list(model.blocks), list(model.transitions), model.head)

    return build_matched(build, channels, input_shape, num_classes, width=width, depth=depth, stages=stages,
                         multiples=(8, 2, 1) if image else (1,))


@register_model(SONODE_CARD)
def sonode(input_shape: tuple[int, ...], num_classes: int, *, width: int = 64, depth: int = 6, stages: int = 1,
           channels: int | None = None, scheme: str = "dopri5", rtol: float = 1e-3, atol: float = 1e-3,
           adjoint: bool = False, backend: str | None = None) -> DepthModel:
    return sonode_model(input_shape, num_classes, width=width, depth=depth, stages=stages, channels=channels,
                        scheme=scheme, rtol=rtol, atol=atol, adjoint=adjoint, backend=backend)
