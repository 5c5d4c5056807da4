"""Noise-injected ResNet / neural SDE (Liu et al. 2019; Wang et al. 2019): x_{k+1} = x_k + h f_k(x_k) + sigma
sqrt(h) eps_k, the Euler-Maruyama step of dx = f(t, x) dt + sigma dW with additive noise.

Noise is drawn in training and in eval mode, as the papers do at test time: the model is stochastic
(`stochastic = True`, the contract's "stochastic" capability, zoo/contract.py), so the harness seeds torch's global
RNG per evaluation, attacks the expectation over draws and flags the record. `set_noise` switches eval-mode noise to
a caller's generator, or off (the drift alone: the deterministic ResNet the noise trained).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from zoo.basis import DepthVarying, make_basis
from zoo.integrate import Interval, ODEBlock, Solver
from zoo.layers import rate_factory
from zoo.registry import ModelCard, register_model
from zoo.template import DepthModel, build_model, check_common, is_image

_BIBTEX = """@article{liu2019neural,
  title = {Neural {SDE}: Stabilizing Neural {ODE} Networks with Stochastic Noise},
  author = {Liu, Xuanqing and Xiao, Tesi and Si, Si and Cao, Qin and Kumar, Sanjiv and Hsieh, Cho-Jui},
  journal = {arXiv preprint arXiv:1906.02355},
  year = {2019}
}"""

NOISY_CARD = ModelCard(
    name="resnet-sde", family="neural-sde", title="Neural SDE: Stabilizing Neural ODE Networks with Stochastic Noise",
    authors="Xuanqing Liu, Tesi Xiao, Si Si, Qin Cao, Sanjiv Kumar, Cho-Jui Hsieh", year=2019, arxiv="1906.02355",
    bibkey="liu2019neural", bibtex=_BIBTEX, venue="arXiv preprint arXiv:1906.02355", licence="MIT",
    capabilities=("nfe", "depth_transfer", "trajectories", "stochastic"),
    variant="the zoo's ResNet (GN pre-activation blocks, Euler h = 1) with additive Gaussian noise sigma sqrt(h) "
    "eps, sigma = 0.1, at every step, in training and in evaluation (one draw per forward)",
    differences="Additive noise on a ResNet's Euler-Maruyama steps (as in Wang et al. 2019, 'ResNets Ensemble via "
    "the Feynman-Kac Formalism', arXiv:1811.10745) rather than Liu et al.'s dropout/multiplicative diffusion in "
    "an adaptive-solver Neural ODE; no test-time ensemble: each evaluation is one noisy draw under a fixed seed "
    "(records flagged stochastic), and attacks use expectation over transformation (the mean of several draws); "
    "adaptive manifestations (depth transfer) integrate the drift alone, fixed-step ones add the noise per "
    "function evaluation (not an SDE scheme beyond Euler).",
)


class NoisyRate(nn.Module):
    """f(t, x) + sigma / sqrt(h) eps: an Euler step of size h then adds sigma sqrt(h) eps (Euler-Maruyama)."""

    def __init__(self, drift: nn.Module, sigma: float) -> None:
        super().__init__()
        self.drift, self.sigma = drift, sigma
        self.eval_noise = True  # False: eval mode is the drift alone
        self.generator: torch.Generator | None = None  # eval-mode noise source (None: torch's global RNG)

    def forward(self, t: float | torch.Tensor, x: torch.Tensor, interval: Interval = None) -> torch.Tensor:
        out = self.drift(t, x, interval)
        noisy = self.sigma > 0 and (self.training or self.eval_noise)
        if not noisy or interval is None:  # adaptive solvers (manifestations) integrate the drift alone
            return out
        h = interval[1] - interval[0]
        eps = torch.randn(out.shape, generator=self.generator, device=out.device, dtype=out.dtype)
        return out + (self.sigma / math.sqrt(h)) * eps


class NoisyModel(DepthModel):
    @property
    def stochastic(self) -> bool:
        """Whether the eval forward draws noise from torch's global RNG (the contract's "stochastic" capability)."""
        return any(b.func.sigma > 0 and b.func.eval_noise and b.func.generator is None for b in self.blocks)

    def set_noise(self, generator: torch.Generator | None = None, *, enabled: bool = True) -> None:
        """Eval-mode noise: from `generator` (None: torch's global RNG), or none at all with `enabled=False`."""
        for block in self.blocks:
            block.func.generator, block.func.eval_noise = generator, enabled


def resnet_sde_model(input_shape: tuple[int, ...], num_classes: int, *, width: int, depth: int, stages: int,
                     sigma: float) -> DepthModel:
    check_common(input_shape, num_classes, width, depth, stages)
    if not (isinstance(sigma, int | float) and sigma >= 0):
        raise ValueError(f"sigma (the noise level) must be a number >= 0, got {sigma!r}")
    image = is_image(input_shape)

    def block_for(state: int) -> ODEBlock:
        basis = make_basis("piecewise_constant", depth, 0.0, float(depth))
        drift = DepthVarying(rate_factory(state, width, image), basis)
        return ODEBlock(NoisyRate(drift, float(sigma)), Solver("euler", depth), t1=float(depth))

    model = build_model(input_shape, num_classes, width=width, stages=stages, block_for=block_for)
    return NoisyModel(model.stem, list(model.blocks), list(model.transitions), model.head)


@register_model(NOISY_CARD)
def resnet_sde(input_shape: tuple[int, ...], num_classes: int, *, width: int = 64, depth: int = 6, stages: int = 1,
               sigma: float = 0.1) -> DepthModel:
    return resnet_sde_model(input_shape, num_classes, width=width, depth=depth, stages=stages, sigma=sigma)
