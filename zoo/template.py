"""The one model template every family fills in: normalise -> stem -> ODE stages -> head.

Images (C, H, W): the stem is a 3x3 convolution followed by stride-2 4x4 convolutions until the
feature map is at most 8x8 (8x8 digits: none; 28x28: two; 32x32: two), as in torchdiffeq's
MNIST example; each further stage halves the resolution and doubles the width. Vectors (d,): no
stem, the ODE acts on the state itself, so a model is a learned flow map (the pendulum task).
A family only says which rate function and solver each stage uses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from zoo.basis import DepthBasis, DepthVarying, make_basis
from zoo.integrate import ODEBlock, Solver, Track, replace_solver, shallow_twin
from zoo.layers import AugmentChannels, ConvRate, MLPRate, Normalize, group_norm, rate_factory


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
    def nfe_per_example(self) -> torch.Tensor | None:
        """Each example's rate-function evaluations in the last forward, summed over stages, when every adaptive
        stage solves per example (the per-example backend); None otherwise. Its mean is `nfe`."""
        counts = [block.nfe_per_example for block in self.blocks if block.solver.adaptive]
        if not counts or any(c is None for c in counts):
            return None
        fixed = sum(block.nfe for block in self.blocks if not block.solver.adaptive)
        return sum(counts) + fixed

    @property
    def nfe_backward(self) -> int | float:
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
        """torchdiffeq's adaptive solvers pick one step size for the whole batch (its error norm spans it), so one
        sample's output can change with the rest of its batch (the contract's "batch_coupling" capability); the
        per-example backend's cannot."""
        return any(block.solver.batch_coupled for block in self.blocks)

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
        backend: str | None = None,
    ) -> DepthModel:
        """The same parameters evaluated on another graph: another scheme and/or steps per stage.

        The integration interval (and hence the ODE) is unchanged; the returned model shares every
        parameter object with this one, so training either trains both. `backend` switches adaptive stages
        between torchdiffeq's per-batch steps and per-example ones (zoo.integrate.BACKENDS).
        """
        steps = list(n_steps) if isinstance(n_steps, Sequence) else [n_steps] * len(self.blocks)
        if len(steps) != len(self.blocks):
            raise ValueError(f"n_steps needs one entry per stage ({len(self.blocks)}), got {n_steps!r}")
        twin = shallow_twin(self)
        twin.blocks = nn.ModuleList(
            block.with_solver(replace_solver(block.solver, scheme=scheme, n_steps=k, rtol=rtol, atol=atol,
                                             adjoint=adjoint, backend=backend))
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


class SecondOrderModel(DepthModel):
    """A DepthModel whose stages carry (y, v): tracks hold both, transitions read the position y."""

    def tracks(self, x: torch.Tensor, points: int = 8) -> list[Track]:
        x = self.stem(x)
        out = []
        for i, block in enumerate(self.blocks):
            out.append(block.trajectory(x, points))
            x = out[-1].states[-1].chunk(2, dim=1)[0]
            if i < len(self.transitions):
                x = self.transitions[i](x)
        return out


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


def residual_model(
    input_shape: tuple[int, ...], num_classes: int, *, width: int, depth: int, stages: int
) -> DepthModel:
    """`depth` residual blocks per stage = Euler with step 1 on a piecewise-constant basis over [0, depth]: the
    ResNet, and the parameter budget the Neural ODE families match."""
    check_common(input_shape, num_classes, width, depth, stages)
    image = is_image(input_shape)

    def block_for(state: int):
        basis = make_basis("piecewise_constant", depth, 0.0, float(depth))
        return continuous_stage(rate_factory(state, width, image), basis, Solver("euler", depth))

    return build_model(input_shape, num_classes, width=width, stages=stages, block_for=block_for)


# The backend of every adaptive family (neural-ode, anode, tisode, sonode) when its constructor is not given one:
# "torchdiffeq" chooses each step for the whole batch, "per-example" for each example (zoo/per_example.py). The
# tiers build models with the constructors' defaults, so this line is what a tier's adaptive models use. Per example
# since smoke v5 (issue #24): no output depends on its batch, and on a CPU it was also faster than torchdiffeq
# (benchmarks/suites/test_adaptive_backends.py: forward 0.45-0.70x, forward+backward 0.75-0.82x the time at the cpu
# tier's size, the same NFE up to one step).
ADAPTIVE_BACKEND = "per-example"


def adaptive_capabilities(*own: str) -> tuple[str, ...]:
    """What an adaptive family's card claims: the template's capabilities, the family's `own`, and batch coupling
    only under per-batch steps (so the cards follow ADAPTIVE_BACKEND)."""
    coupling = ("batch_coupling",) if ADAPTIVE_BACKEND == "torchdiffeq" else ()
    return ("nfe", "depth_transfer", "trajectories", *own, *coupling)


ADAPTIVE_BATCH_NOTE = (
    "adaptive steps depend on the whole batch (torchdiffeq's error norm), so logits of one sample can change with "
    "the rest of the batch" if ADAPTIVE_BACKEND == "torchdiffeq" else
    "adaptive steps are chosen per example (torchode), so no sample's logits depend on the rest of its batch")


def adaptive_solver(who: str, scheme: str, *, rtol: float, atol: float, adjoint: bool = False,
                    backend: str | None = None) -> Solver:
    """The solver of a family that trains with adaptive steps; a fixed-step scheme is refused (`who` says whose).
    `backend` None is ADAPTIVE_BACKEND."""
    solver = Solver(scheme, rtol=rtol, atol=atol, adjoint=adjoint)
    if not solver.adaptive:
        raise ValueError(f"{who} with an adaptive scheme; {scheme!r} is fixed-step "
                         "(manifest() a trained model with it instead)")
    return replace_solver(solver, backend=ADAPTIVE_BACKEND if backend is None else backend)


def neural_ode_model(
    input_shape: tuple[int, ...], num_classes: int, *, width: int, depth: int, stages: int, channels: int | None,
    augment: int, scheme: str, rtol: float, atol: float, adjoint: bool, backend: str | None = None,
) -> DepthModel:
    """ODE-Net stages with `channels` (+ `augment` zero channels); channels=None matches the ResNet's params."""
    check_common(input_shape, num_classes, width, depth, stages)
    if not isinstance(augment, int) or augment < 0:
        raise ValueError(f"augment must be a non-negative int, got {augment!r}")
    solver = adaptive_solver("Neural ODEs train", scheme, rtol=rtol, atol=atol, adjoint=adjoint, backend=backend)
    image = is_image(input_shape)

    def build(size: int) -> DepthModel:
        def block_for(state: int) -> ODEBlock:
            func: nn.Module = ConvRate(state, time=True, out_norm=True) if image else MLPRate(state, size, time=True)
            return ODEBlock(func, solver, t1=1.0)

        # Images: `size` is the stem width; vectors: the MLP's hidden width (the state is the input itself).
        return build_model(input_shape, num_classes, width=size if image else width, stages=stages,
                           block_for=block_for, augment=augment)

    return build_matched(build, channels, input_shape, num_classes, width=width, depth=depth, stages=stages,
                         multiples=(8, 2) if image else (1,))


def build_matched(build: Callable[[int], DepthModel], size: int | None, input_shape: Sequence[int], num_classes: int,
                  *, width: int, depth: int, stages: int, multiples: Sequence[int]) -> DepthModel:
    """`build(size)`; with size None, at the size whose parameter count is closest to the ResNet of this size
    class (`residual_model`), so every family is compared at the same parameter budget."""
    if size is None:
        target = count_params(residual_model(input_shape, num_classes, width=width, depth=depth, stages=stages))
        size = matched_size(build, target, multiples=multiples)
    return build(size)
