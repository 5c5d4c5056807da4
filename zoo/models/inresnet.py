"""In-ResNet (Yang et al. 2020): the damped ODE dx/dt = -lambda x + rho(lambda) f(x).

One forward-Euler step of size 1 gives the paper's blocks:
  In-ResNet          x_{n+1} = (1 - relu(lambda_n)) x_n + f(x_n)                      (rho = 1)
  lambda-In-ResNet   x_{n+1} = (1 - relu(lambda_n)) x_n + (1 + relu(lambda_n)) f(x_n)  (rho = 1 + lambda)
lambda_n is a learnable scalar per block, i.e. a piecewise-constant function of depth, drawn at initialisation
from U(lambda_init) (the paper's U(0.2, 0.25) by default; its sensitivity study tries U(0, 0.1) .. U(0.3, 0.4)).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from zoo.basis import make_basis
from zoo.integrate import Interval, Solver
from zoo.layers import rate_factory
from zoo.registry import ModelCard, register_model
from zoo.template import DepthModel, build_model, check_common, continuous_stage, is_image

_BIBTEX = """@article{yang2020interpolation,
  title = {Interpolation between Residual and Non-Residual Networks},
  author = {Yang, Zonghan and Liu, Yang and Bao, Chenglong and Shi, Zuoqiang},
  journal = {Proceedings of the 37th International Conference on Machine Learning (ICML)},
  year = {2020},
  eprint = {2006.05749},
  archivePrefix = {arXiv}
}"""

_DIFFERENCES = (
    "Every block is damped (the reference keeps the first block and the downsampling blocks plain residual); "
    "lambda is stored directly (the reference stores k = 1 - lambda, so its weight decay pulls lambda towards 1, "
    "ours towards 0); GroupNorm instead of BatchNorm."
)


def _card(name: str, variant: str) -> ModelCard:
    return ModelCard(name=name, family="inresnet", title="Interpolation between Residual and Non-Residual Networks",
                     authors="Zonghan Yang, Yang Liu, Chenglong Bao, Zuoqiang Shi", year=2020, arxiv="2006.05749",
                     bibkey="yang2020interpolation", bibtex=_BIBTEX, variant=variant, differences=_DIFFERENCES,
                     venue="International Conference on Machine Learning (ICML)", licence="MIT",
                     capabilities=("nfe", "depth_transfer", "trajectories"))


LAMBDA_INIT = (0.2, 0.25)  # the paper's initialisation range of lambda_n


def check_lambda_init(lambda_init: tuple[float, float]) -> tuple[float, float]:
    """(low, high) of lambda's uniform initialisation: two finite numbers with low <= high."""
    try:
        low, high = (float(v) for v in lambda_init)
    except (TypeError, ValueError):
        raise ValueError(f"lambda_init must be a pair (low, high) of numbers, got {lambda_init!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        raise ValueError(f"lambda_init must be finite with low <= high, got {lambda_init!r}")
    return low, high


class DampedRate(nn.Module):
    """-relu(lambda) x + rho f(x), lambda initialised U(lambda_init) (the paper's U(0.2, 0.25) by default)."""

    def __init__(self, inner: nn.Module, amplify: bool, lambda_init: tuple[float, float] = LAMBDA_INIT) -> None:
        super().__init__()
        self.inner = inner
        self.amplify = amplify
        self.lam = nn.Parameter(torch.empty(()).uniform_(*lambda_init))

    def forward(self, t: float | torch.Tensor, x: torch.Tensor, interval: Interval = None) -> torch.Tensor:
        damping = F.relu(self.lam)
        out = self.inner(t, x)
        if self.amplify:
            out = (1.0 + damping) * out
        return out - damping * x


def inresnet_model(
    input_shape: tuple[int, ...], num_classes: int, *, width: int, depth: int, stages: int, amplify: bool,
    lambda_init: tuple[float, float] = LAMBDA_INIT,
) -> DepthModel:
    check_common(input_shape, num_classes, width, depth, stages)
    lambda_init = check_lambda_init(lambda_init)
    image = is_image(input_shape)

    def block_for(state: int):
        inner = rate_factory(state, width, image)
        basis = make_basis("piecewise_constant", depth, 0.0, float(depth))
        return continuous_stage(lambda: DampedRate(inner(), amplify, lambda_init), basis, Solver("euler", depth))

    return build_model(input_shape, num_classes, width=width, stages=stages, block_for=block_for)


@register_model(_card("inresnet", "In-ResNet: (1 - relu(lambda_n)) x + f(x), lambda_n ~ U(0.2, 0.25)"))
def inresnet(
    input_shape: tuple[int, ...], num_classes: int, *, width: int = 64, depth: int = 6, stages: int = 1,
    lambda_init: tuple[float, float] = LAMBDA_INIT,
) -> DepthModel:
    return inresnet_model(input_shape, num_classes, width=width, depth=depth, stages=stages, amplify=False,
                          lambda_init=lambda_init)


@register_model(_card(
    "inresnet-lambda", "lambda-In-ResNet: (1 - relu(lambda_n)) x + (1 + relu(lambda_n)) f(x), lambda_n ~ U(0.2, 0.25)"))
def inresnet_lambda(
    input_shape: tuple[int, ...], num_classes: int, *, width: int = 64, depth: int = 6, stages: int = 1,
    lambda_init: tuple[float, float] = LAMBDA_INIT,
) -> DepthModel:
    return inresnet_model(input_shape, num_classes, width=width, depth=depth, stages=stages, amplify=True,
                          lambda_init=lambda_init)
