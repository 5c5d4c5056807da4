"""Shared building blocks of the model families: rate functions (residual branches), norms, input scaling.

Families import these and the engine (`zoo.integrate`, `zoo.basis`, `zoo.template`), never each other.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from zoo.integrate import Interval


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups: per-sample statistics, so outputs never depend on the batch."""
    return nn.GroupNorm(math.gcd(channels, 32), channels)


class Normalize(nn.Module):
    """Maps [0, 1] pixels to roughly zero mean inside the model, so attacks work in pixel space."""

    def __init__(self, channels: int, mean: float = 0.5, std: float = 0.5) -> None:
        super().__init__()
        self.register_buffer("mean", torch.full((1, channels, 1, 1), mean))
        self.register_buffer("std", torch.full((1, channels, 1, 1), std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ConvRate(nn.Module):
    """Pre-activation residual branch GN-ReLU-conv3x3-GN-ReLU-conv3x3, optionally time-concatenated.

    With `time=True, out_norm=True` it is torchdiffeq's ODEfunc (GN after the second convolution).
    """

    def __init__(self, channels: int, *, time: bool = False, out_norm: bool = False) -> None:
        super().__init__()
        extra = 1 if time else 0
        self.time = time
        self.norm1, self.norm2 = group_norm(channels), group_norm(channels)
        self.conv1 = nn.Conv2d(channels + extra, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels + extra, channels, 3, padding=1)
        self.norm3 = group_norm(channels) if out_norm else nn.Identity()

    def _conv(self, conv: nn.Conv2d, t: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.time:
            x = torch.cat([torch.ones_like(x[:, :1]) * t, x], dim=1)
        return conv(x)

    def forward(self, t: float | torch.Tensor, x: torch.Tensor, interval: Interval = None) -> torch.Tensor:
        out = self._conv(self.conv1, t, F.relu(self.norm1(x)))
        out = self._conv(self.conv2, t, F.relu(self.norm2(out)))
        return self.norm3(out)


class MLPRate(nn.Module):
    """Smooth (tanh) two-hidden-layer MLP on a state vector: smooth so RK schemes keep their order."""

    def __init__(self, dim: int, hidden: int, *, time: bool = False) -> None:
        super().__init__()
        extra = 1 if time else 0
        self.time = time
        self.layers = nn.ModuleList(
            [nn.Linear(dim + extra, hidden), nn.Linear(hidden + extra, hidden), nn.Linear(hidden + extra, dim)]
        )

    def forward(self, t: float | torch.Tensor, x: torch.Tensor, interval: Interval = None) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            if self.time:
                x = torch.cat([torch.ones_like(x[:, :1]) * t, x], dim=1)
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.tanh(x)
        return x


class AugmentChannels(nn.Module):
    """ANODE's augmentation: `extra` zero channels (or features) appended to the stem's output."""

    def __init__(self, extra: int) -> None:
        super().__init__()
        self.extra = extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        zeros = x.new_zeros((x.shape[0], self.extra, *x.shape[2:]))
        return torch.cat([x, zeros], dim=1)


def rate_factory(state: int, width: int, image: bool) -> Callable[[], nn.Module]:
    """The residual branch shared by ResNet, ContinuousNet and In-ResNet for a stage of `state` channels."""
    if image:
        return lambda: ConvRate(state)
    return lambda: MLPRate(state, width)
