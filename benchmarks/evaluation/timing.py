"""Wall-clock measurement that means the same thing on CPU and GPU (the machine is described by `store.machine`).

CUDA kernels run asynchronously, so a timer read right after a launch measures the launch, not the work: every timed
run is bracketed by `torch.cuda.synchronize()`. Medians and interquartile ranges rather than means, because timing
noise is one-sided (interrupts, clock ramps) and a single outlier should not move a leaderboard column.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

_MAX_RUNS = 100_000  # safety stop for `min_time` with a function that takes (almost) no time


def sync(device: torch.device) -> None:
    """Wait for the device's queued work: the one synchronisation every timer here (and the suites') goes through."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PhaseTimer:
    """Wall time per phase of a run (device-synchronised), kept in the record to show where a tier's time goes."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.seconds = device, {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            sync(self.device)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started


def measure(
    fn: Callable[[], object], *, device: torch.device, warmup: int = 3, repeats: int = 10, min_time: float = 0.0
) -> dict[str, float]:
    """Time `fn()` `repeats` times (more while their total is below `min_time` seconds) after `warmup` untimed calls.

    Warmup absorbs one-off costs (cuDNN autotuning, allocator growth, lazy initialisation) that a steady-state
    latency should not include.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    times: list[float] = []
    while len(times) < repeats or (sum(times) < min_time and len(times) < _MAX_RUNS):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    ms = np.asarray(times) * 1e3
    q25, q50, q75 = np.percentile(ms, [25, 50, 75])
    return {"median_ms": float(q50), "iqr_ms": float(q75 - q25), "min_ms": float(ms.min()), "repeats": len(times)}


def latency_and_throughput(
    model: nn.Module, example: torch.Tensor, *, device: torch.device, batch: int, warmup: int = 3, repeats: int = 10
) -> dict[str, float]:
    """Batch-1 latency (what a single request waits) and batched throughput (what a server sustains)."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    device = torch.device(device)
    example = example.to(device)
    one = example[:1]
    # Repeating rows keeps the inputs realistic (adaptive solvers' cost depends on the data) when few are given.
    many = example[torch.arange(batch, device=example.device) % len(example)]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            latency = measure(lambda: model(one), device=device, warmup=warmup, repeats=repeats)
            bulk = measure(lambda: model(many), device=device, warmup=warmup, repeats=repeats)
    finally:
        model.train(was_training)
    return {
        "latency_ms": latency["median_ms"],
        "latency_iqr_ms": latency["iqr_ms"],
        "throughput": batch / (bulk["median_ms"] / 1e3),
    }
