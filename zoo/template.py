"""The one model template every family fills in: normalise -> stem -> ODE stages -> head.

Images (C, H, W): the stem is a 3x3 convolution followed by stride-2 4x4 convolutions until the
feature map is at most 8x8 (8x8 digits: none; 28x28: two; 32x32: two), as in torchdiffeq's
MNIST example; each further stage halves the resolution and doubles the width. Vectors (d,): no
stem, the ODE acts on the state itself, so a model is a learned flow map (the pendulum task).
A family only says which rate function and solver each stage uses.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from zoo.basis import DepthBasis, DepthVarying
from zoo.integrate import Interval, ODEBlock, Solver, Track, replace_solver


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 32 groups: per-sample statistics, so outputs never depend on the batch."""
    return nn.GroupNorm(math.gcd(channels, 32), channels)


def is_image(input_shape: Sequence[int]) -> bool:
    return len(input_shape) == 3


def check_common(input_shape: Sequence[int], num_classes: int, width: int, depth: int, stages: int) -> None:
    """Clear errors for the arguments every family takes."""
    if len(input_shape) not in (1, 3) or any(not isinstance(s, int) or s < 1 for s in input_shape):
        raise ValueError(f"input_shape must be (C, H, W) or (d,) of positive ints, got {tuple(input_shape)!r}")
    for name, value in (("num_classes", num_classes), ("width", width), ("depth", depth), ("stages", stages)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not is_image(input_shape) and stages != 1:
        raise ValueError("vector inputs take a single stage (stages=1)")


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


class DepthModel(nn.Module):
    """A model whose depth is an integration in t: stem -> (ODE block, transition)* -> head.

    `manifest()` re-discretises the same parameters; `nfe` counts rate evaluations of the last forward.
    """

    def __init__(
        self, stem: nn.Module, blocks: Sequence[ODEBlock], transitions: Sequence[nn.Module], head: nn.Module
    ) -> None:
        super().__init__()
        self.stem = stem
        self.blocks = nn.ModuleList(blocks)
        self.transitions = nn.ModuleList(transitions)
        self.head = head
        self.card = None  # set by zoo.create_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i < len(self.transitions):
                x = self.transitions[i](x)
        return self.head(x)

    @property
    def nfe(self) -> int:
        """Rate-function evaluations in the last forward pass, summed over stages."""
        return sum(block.nfe for block in self.blocks)

    @property
    def nfe_backward(self) -> int:
        """Rate-function evaluations of the adjoint solves since the last forward (0 without the adjoint)."""
        return sum(block.nfe_backward for block in self.blocks)

    def tracks(self, x: torch.Tensor, points: int = 8) -> list[Track]:
        """Every stage's trajectory for input `x` (see `ODEBlock.trajectory`)."""
        x = self.stem(x)
        out = []
        for i, block in enumerate(self.blocks):
            out.append(block.trajectory(x, points))
            x = out[-1].states[-1]
            if i < len(self.transitions):
                x = self.transitions[i](x)
        return out

    @property
    def batch_coupled(self) -> bool:
        """Adaptive solvers pick one step size for the whole batch (torchdiffeq's error norm), so one sample's
        output can change with the rest of its batch (the contract's "batch_coupling" capability)."""
        return any(block.solver.adaptive for block in self.blocks)

    @property
    def solvers(self) -> tuple[Solver, ...]:
        return tuple(block.solver for block in self.blocks)

    def manifest(
        self,
        scheme: str | None = None,
        n_steps: int | Sequence[int] | None = None,
        *,
        rtol: float | None = None,
        atol: float | None = None,
        adjoint: bool | None = None,
    ) -> DepthModel:
        """The same parameters evaluated on another graph: another scheme and/or steps per stage.

        The integration interval (and hence the ODE) is unchanged; the returned model shares every
        parameter object with this one, so training either trains both.
        """
        steps = list(n_steps) if isinstance(n_steps, Sequence) else [n_steps] * len(self.blocks)
        if len(steps) != len(self.blocks):
            raise ValueError(f"n_steps needs one entry per stage ({len(self.blocks)}), got {n_steps!r}")
        twin = copy.copy(self)
        twin._modules = dict(self._modules)
        twin._parameters = dict(self._parameters)
        twin._buffers = dict(self._buffers)
        twin.blocks = nn.ModuleList(
            block.with_solver(replace_solver(block.solver, scheme=scheme, n_steps=k, rtol=rtol, atol=atol,
                                             adjoint=adjoint))
            for block, k in zip(self.blocks, steps)
        )
        return twin

    def refine(self, refine_steps: bool = True) -> DepthModel:
        """Deepen in place: every depth basis gets twice the functions, representing the same theta(t).

        With `refine_steps` fixed-step stages also double their steps (the refinement schedule of
        Queiruga et al.); without it the output is unchanged. Parameters are replaced by new objects:
        build a new optimizer afterwards.
        """
        refinable = [block for block in self.blocks if isinstance(block.func, DepthVarying)]
        if not refinable:
            raise ValueError("this model has no depth-varying parameters to refine")
        for block in refinable:
            block.func.refine()
            if refine_steps and not block.solver.adaptive:
                block.solver = replace_solver(block.solver, n_steps=2 * block.solver.n_steps)
        return self


def build_model(
    input_shape: Sequence[int],
    num_classes: int,
    *,
    width: int,
    stages: int,
    block_for: Callable[[int], ODEBlock],
    augment: int = 0,
) -> DepthModel:
    """Assemble the template; `block_for(state_size)` builds one ODE stage for that many channels/features."""
    if is_image(input_shape):
        channels, size = input_shape[0], input_shape[1]
        stem: list[nn.Module] = [Normalize(channels), nn.Conv2d(channels, width, 3, padding=1)]
        while size > 8:
            stem += [group_norm(width), nn.ReLU(), nn.Conv2d(width, width, 4, stride=2, padding=1)]
            size //= 2
        widths = [width * 2**i for i in range(stages)]
        transitions = [
            nn.Sequential(group_norm(w + augment), nn.ReLU(),
                          nn.Conv2d(w + augment, 2 * w + augment, 3, stride=2, padding=1))
            for w in widths[:-1]
        ]
        state = widths[-1] + augment
        head = nn.Sequential(group_norm(state), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(state, num_classes))
        blocks = [block_for(w + augment) for w in widths]
    else:
        stem, transitions = [], []
        state = input_shape[0] + augment
        blocks = [block_for(state)]
        # A flow map's output is the final state itself when the task asks for one; otherwise read it out.
        head = nn.Identity() if num_classes == input_shape[0] and augment == 0 else nn.Linear(state, num_classes)
    if augment:
        stem.append(AugmentChannels(augment))
    return DepthModel(nn.Sequential(*stem), blocks, transitions, head)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def matched_size(build: Callable[[int], nn.Module], target: int, multiples: Sequence[int] = (8, 2),
                 tolerance: float = 0.05, largest: int = 4096) -> int:
    """The size whose model has the parameter count closest to `target`.

    Sizes are tried as multiples of `multiples[0]` first (multiples of 8 give GroupNorm its usual group
    counts); if none is within `tolerance` of the target, finer multiples are tried. Parameter counts
    grow monotonically with size, so a bisection over a handful of builds suffices; the builds happen
    on the meta device, so they neither allocate memory nor draw random numbers.
    """

    def params(size: int) -> int:
        with torch.device("meta"):
            return count_params(build(size))

    best = None
    for multiple in multiples:
        low, high = 1, largest // multiple
        while low < high:
            mid = (low + high) // 2
            if params(mid * multiple) < target:
                low = mid + 1
            else:
                high = mid
        best = min(sorted({max(1, low - 1) * multiple, low * multiple}), key=lambda w: abs(params(w) - target))
        if abs(params(best) - target) <= tolerance * target:
            break
    return best


def continuous_stage(make_rate: Callable[[], nn.Module], basis: DepthBasis, solver: Solver) -> ODEBlock:
    """An ODE stage whose rate-function parameters vary in depth over the basis' interval."""
    return ODEBlock(DepthVarying(make_rate, basis), solver, t1=basis.t1, t0=basis.t0)
