"""The numbers a benchmark record holds: accuracy, cost, robustness and depth transfer.

Everything here is deterministic for fixed arguments (explicit seeds, explicit generators, fixed batching) so two
runs of the same checkpoint give the same record. Evaluation is batched and runs in the model's own dtype; only the
attacks build autograd graphs. Metric names are documented in `benchmarks/specs.py`, which the leaderboard reads.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

import zoo
from benchmarks.specs import MetricKey, radius_text
from zoo.contract import validate_output

Kind = Literal["classification", "regression"]


def eps_key(value: float) -> str:
    """Short, stable name of a radius (benchmarks/specs.py's `radius_text`: 0.1 -> '0.1', 8/255 -> '0.0314')."""
    return radius_text(value)


def parameter_count(model: nn.Module) -> int:
    return zoo.count_params(model)


def batches(n: int, batch_size: int) -> Iterator[slice]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def forward_all(model: nn.Module, x: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, float, list[float]]:
    """Outputs on all of x, with the mean NFE per forward and per stage over the batches (weighted by batch size,
    i.e. the NFE an example sees on average; sums of integers divided once, so fixed-step counts stay exact)."""
    outputs, nfe, stages = [], 0, None
    with torch.no_grad():
        for part in batches(len(x), batch_size):
            # A tuple or a wrong batch size is never a result; non-finite values are judged by the caller.
            outputs.append(validate_output(model(x[part]), part.stop - part.start, None, finite=False))
            size = part.stop - part.start
            nfe += getattr(model, "nfe", 0) * size
            per_stage = [block.nfe * size for block in getattr(model, "blocks", [])]
            stages = per_stage if stages is None else [a + b for a, b in zip(stages, per_stage)]
    return torch.cat(outputs), nfe / len(x), [n / len(x) for n in stages or []]


def accuracy_of(outputs: torch.Tensor, y: torch.Tensor) -> float:
    return (outputs.argmax(dim=1) == y).sum().item() / len(y)


def mse_of(outputs: torch.Tensor, y: torch.Tensor) -> float:
    return F.mse_loss(outputs.double(), y.double()).item()


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, kind: Kind, batch_size: int,
             output_shape: Sequence[int] | None = None) -> tuple[float, float | None]:
    """(accuracy or MSE, mean NFE per forward over the batches of `batch_size`) on all of x; NFE None for a model
    that does not count its function evaluations. Adaptive solvers' NFE varies from batch to batch, so it is
    measured on every batch that is scored rather than on one."""
    outputs, nfe, _ = forward_all(model, x, batch_size)
    outputs = validate_output(outputs, len(x), output_shape)
    score = accuracy_of(outputs, y) if kind == "classification" else mse_of(outputs, y)
    return score, nfe if hasattr(model, "nfe") else None


def batch_coupling(model: nn.Module, x: torch.Tensor, *, batch_size: int, examples: int = 4) -> float:
    """How much the outputs of the first `examples` inputs change when each is evaluated alone instead of inside
    the evaluation batch `x[:batch_size]`: max |difference| / (1 + max |output|).

    Adaptive solvers couple the examples of a batch (torchdiffeq's error norm, hence every step size, is taken
    over the whole batch), so their outputs depend on the batch size and on the batch's other members. Measured on
    a float64 copy of the model so that float32 kernels' batch-size-dependent rounding is not mistaken for
    coupling; per-sample models then differ by ~1e-15. NaN if the copy's solver does not converge."""
    twin = copy.deepcopy(model).double()
    batch = x[:batch_size].double()
    count = min(examples, len(batch))
    try:
        with torch.no_grad():
            inside = twin(batch)[:count]
            alone = torch.cat([twin(batch[i:i + 1]) for i in range(count)])
    except zoo.SolverDidNotConverge:
        return math.nan
    return ((inside - alone).abs().max() / (1.0 + inside.abs().max())).item()


def _checked(model: nn.Module, x: torch.Tensor, batch_size: int, output_shape: Sequence[int] | None) -> torch.Tensor:
    """Outputs of the trained model, which must be finite and (given `output_shape`) of the task's shape: an
    argmax over NaN or over one logit too many is a number, but not an accuracy."""
    return validate_output(forward_all(model, x, batch_size)[0], len(x), output_shape)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int,
             output_shape: Sequence[int] | None = None) -> float:
    return accuracy_of(_checked(model, x, batch_size, output_shape), y)


def mse(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int,
        output_shape: Sequence[int] | None = None) -> float:
    return mse_of(_checked(model, x, batch_size, output_shape), y)


def count_flops(model: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one forward of the first sample of `example` (matmuls and convolutions, as torch counts them)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(example[:1])
    return int(counter.get_total_flops())


def is_adaptive(model: nn.Module) -> bool:
    return any(solver.adaptive for solver in getattr(model, "solvers", ()))


@contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Attacks need d loss / d input only: skipping parameter gradients saves about a third of each backward."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed the global RNG (torchattacks draws PGD's random start from it) without disturbing the caller's stream."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def noise_robustness(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, sigmas: Sequence[float], batch_size: int, seed: int,
) -> dict[str, float]:
    """Accuracy under Gaussian pixel noise; the same noise draw is scaled for every sigma (common random numbers)."""
    results = {}
    for sigma in sigmas:
        generator = torch.Generator(device=x.device).manual_seed(seed)
        correct = 0
        with torch.no_grad():
            for part in batches(len(x), batch_size):
                noise = torch.randn(x[part].shape, generator=generator, device=x.device, dtype=x.dtype)
                noisy = (x[part] + sigma * noise).clamp(0.0, 1.0)
                correct += (model(noisy).argmax(dim=1) == y[part]).sum().item()
        results[str(MetricKey("noise", sigma))] = correct / len(x)
    return results
