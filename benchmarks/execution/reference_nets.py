"""The networks of the reference GPU figures (../shared/README.md): the torchdiffeq MNIST example's ResNet (6
blocks, 64 channels, GroupNorm; 576,778 parameters) and ODE-Net (208,266 parameters; rk4 with step 0.25, dopri5 at
rtol = atol = 1e-3), rebuilt here so that their operators can be counted exactly as the zoo's are. Their counted
passes against the published timings calibrate the cost model (`cost_model.calibrate`)."""

from __future__ import annotations

import torch
import torchdiffeq
from torch import nn
from torch.nn import functional as F

from benchmarks.execution.work import Pass, count
from benchmarks.training.train import augment


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels), channels)


class _ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = _norm(channels), _norm(channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.norm2(self.conv1(F.relu(self.norm1(x))))))


class _ConcatConv(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.layer = nn.Conv2d(channels + 1, channels, 3, padding=1)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.layer(torch.cat([torch.ones_like(x[:, :1]) * t, x], 1))


class _ODEFunc(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm3 = _norm(channels), _norm(channels), _norm(channels)
        self.conv1, self.conv2 = _ConcatConv(channels), _ConcatConv(channels)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.norm3(self.conv2(t, F.relu(self.norm2(self.conv1(t, F.relu(self.norm1(x)))))))


class _ODEBlock(nn.Module):
    def __init__(self, method: str, options: dict) -> None:
        super().__init__()
        self.func, self.method, self.options = _ODEFunc(64), method, options

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.tensor([0.0, 1.0])
        return torchdiffeq.odeint(self.func, x, t, rtol=1e-3, atol=1e-3, method=self.method, options=self.options)[1]


def _network(kind: str, channels: int = 1, padding: int = 0) -> nn.Sequential:
    stem = [nn.Conv2d(channels, 64, 3, 1, padding), _norm(64), nn.ReLU(), nn.Conv2d(64, 64, 4, 2, 1), _norm(64),
            nn.ReLU(), nn.Conv2d(64, 64, 4, 2, 1)]
    head = [_norm(64), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    body = [_ResBlock(64) for _ in range(6)] if kind == "resnet" else \
        [_ODEBlock("rk4", {"step_size": 0.25})] if kind == "rk4" else [_ODEBlock("dopri5", {})]
    return nn.Sequential(*stem, *body, *head)


def _step(net: nn.Module, x: torch.Tensor, bf16: bool, augmentation: str, adaptive: bool) -> Pass:
    y = torch.arange(len(x)) % 10
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        batch = augment(x, augmentation, generator)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net(batch).float(), y)
        loss.backward()

    net.zero_grad(set_to_none=True)
    return count(step, len(x), "train", "bf16" if bf16 else "fp32", adaptive)


def reference_passes() -> dict[str, dict[str, Pass]]:
    """Per reference network: "latency" (one eval forward of one example) and "step" (one training step)."""
    torch.manual_seed(0)
    mnist = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    out = {}
    for name, kind in (("resnet", "resnet"), ("odenet-rk4", "rk4"), ("odenet-dopri5", "dopri5")):
        net = _network(kind)
        adaptive = kind == "dopri5"
        with torch.no_grad():
            latency = count(lambda net=net: net.eval()(mnist[:1]), 1, "forward", "fp32", adaptive)
        out[name] = {"latency": latency, "step": _step(net.train(), mnist, False, "none", adaptive)}
    cifar = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out["resnet-cifar-bf16"] = {"step": _step(_network("resnet", 3, 1).train(), cifar, True, "crop-flip", False)}
    return out
