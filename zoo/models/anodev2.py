"""ANODEV2 (Zhang et al. 2019): a coupled system in which the rate function's parameters follow their own ODE.

    dz/dt = f(z, theta(t)),    dtheta/dt = q(theta(t); p),    theta(0) = theta_0

Only theta_0 (one set of rate-function parameters) and p are trained. q is a reaction-diffusion-like map on each
weight tensor: every 3x3 convolution filter (or a linear layer's weight matrix) is treated as an image and
q(W) = tanh(p_W * W) with a learned 3x3 kernel p_W (biases and GroupNorm parameters stay at theta_0). theta(t)
comes from `weight_steps` forward-Euler steps of the weight ODE on [t0, t1] (Euler's continuous extension between
knots), computed for every stage the z-solver asks for: it is a function of t alone, so re-discretising z
(`manifest`) integrates the same coupled ODE.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from zoo.integrate import Interval, ODEBlock, Solver
from zoo.layers import ConvRate, MLPRate
from zoo.registry import ModelCard, register_model
from zoo.template import DepthModel, build_matched, build_model, check_common, is_image

_BIBTEX = """@article{zhang2019anodev2,
  title = {{ANODEV2}: A Coupled Neural {ODE} Evolution Framework},
  author = {Zhang, Tianjun and Yao, Zhewei and Gholami, Amir and Keutzer, Kurt and Gonzalez, Joseph and
            Biros, George and Mahoney, Michael W.},
  journal = {arXiv preprint arXiv:1906.04596},
  year = {2019}
}"""

ANODEV2_CARD = ModelCard(
    name="anodev2", family="anodev2", title="ANODEV2: A Coupled Neural ODE Evolution Framework",
    authors="Tianjun Zhang, Zhewei Yao, Amir Gholami, Kurt Keutzer, Joseph Gonzalez, George Biros, Michael W. Mahoney",
    year=2019, arxiv="1906.04596", bibkey="zhang2019anodev2", bibtex=_BIBTEX, venue="arXiv preprint arXiv:1906.04596",
    licence="MIT", capabilities=("nfe", "depth_transfer", "trajectories"),
    variant="one GN pre-activation residual branch whose weights evolve by dW/dt = tanh(p_W * W) (a learned 3x3 "
    "kernel per weight tensor) over [0, 1]; activations and weights both by forward Euler with `depth` steps",
    differences="The weight ODE is a single reaction-diffusion-like term tanh(p * W) per weight tensor (the paper "
    "explores several, e.g. reaction-diffusion-advection), and only convolution/linear weights evolve; the "
    "activations' ODE is the zoo's GroupNorm residual branch instead of the paper's ResNet blocks with BatchNorm; "
    "z and theta are integrated on the same Euler grid without ANODE's checkpointed adjoint; width matched to "
    "the ResNet's parameter count.",
)


def _key(name: str) -> str:
    return name.replace(".", "__")


class EvolvingRate(nn.Module):
    """f(t, z) = template(z; theta(t)), theta(t) the Euler solution of dtheta/dt = q(theta; p) from theta_0."""

    def __init__(self, make: Callable[[], nn.Module], t0: float, t1: float, weight_steps: int) -> None:
        super().__init__()
        template = make()
        self._names = [name for name, _ in template.named_parameters()]
        self.initial = nn.ParameterDict({_key(n): nn.Parameter(p.detach().clone())
                                         for n, p in template.named_parameters()})
        # A 3x3 kernel per weight tensor, small so that at initialisation the weights drift slowly in depth.
        self.kernels = nn.ParameterDict({_key(n): nn.Parameter(0.3 * torch.randn(1, 1, 3, 3))
                                         for n, p in template.named_parameters() if p.dim() >= 2})
        self.t0, self.t1, self.weight_steps = float(t0), float(t1), weight_steps
        object.__setattr__(self, "_template", template.to("meta"))  # structure only, as in zoo.basis.DepthVarying

    def rate_of(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        """q(W) = tanh(p_W * W): each filter (or the whole matrix) convolved as an image with its kernel."""
        kernel = self.kernels[_key(name)]
        images = weight.reshape(-1, 1, *weight.shape[-2:])
        return torch.tanh(F.conv2d(images, kernel, padding=1)).reshape(weight.shape)

    def theta(self, t: float) -> dict[str, torch.Tensor]:
        """theta(t): Euler knots of the weight ODE up to t, then Euler's straight line to t."""
        h = (self.t1 - self.t0) / self.weight_steps
        u = (t - self.t0) / h
        knots = min(max(math.floor(u + 1e-9), 0), self.weight_steps)
        out = {n: self.initial[_key(n)] for n in self._names}
        evolving = [n for n in self._names if _key(n) in self.kernels]
        for _ in range(knots):
            out.update({n: out[n] + h * self.rate_of(n, out[n]) for n in evolving})
        rest = (u - knots) * h
        if rest > 1e-9 * h:
            out.update({n: out[n] + rest * self.rate_of(n, out[n]) for n in evolving})
        return out

    def forward(self, t: float | torch.Tensor, z: torch.Tensor, interval: Interval = None) -> torch.Tensor:
        return functional_call(self._template, self.theta(float(t)), (t, z))


def anodev2_model(input_shape: Sequence[int], num_classes: int, *, width: int, depth: int, stages: int,
                  channels: int | None) -> DepthModel:
    check_common(input_shape, num_classes, width, depth, stages)
    image = is_image(input_shape)
    solver = Solver("euler", depth)

    def build(size: int) -> DepthModel:
        def block_for(state: int) -> ODEBlock:
            def make() -> nn.Module:
                return ConvRate(state) if image else MLPRate(state, size)

            return ODEBlock(EvolvingRate(make, 0.0, 1.0, depth), solver, t1=1.0)

        return build_model(input_shape, num_classes, width=size if image else width, stages=stages,
                           block_for=block_for)

    return build_matched(build, channels, input_shape, num_classes, width=width, depth=depth, stages=stages,
                         multiples=(8, 2, 1) if image else (1,))


@register_model(ANODEV2_CARD)
def anodev2(input_shape: tuple[int, ...], num_classes: int, *, width: int = 64, depth: int = 6, stages: int = 1,
            channels: int | None = None) -> DepthModel:
    return anodev2_model(input_shape, num_classes, width=width, depth=depth, stages=stages, channels=channels)
