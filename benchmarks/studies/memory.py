"""Memory (Chen et al. 2018): peak training memory vs depth with adjoint vs direct backprop.

Memory: one ODE-Net stage (the zoo's `ConvRate`, torchdiffeq's ODEfunc) integrated over [0, 1] by torchdiffeq's
fixed-step `rk4` with `n_steps` steps, so depth is controlled exactly; one forward and backward of a mean-square loss,
through `odeint` (direct backprop: every stage's activations are kept, O(steps)) or `odeint_adjoint` (the adjoint
ODE solved backwards, O(1) in steps). The peak is measured

- on CUDA, in-process from the allocator: `torch.cuda.max_memory_allocated` minus what was allocated before;
- on CPU, in a fresh child process per point (`python -m benchmarks.studies.memory --probe ...`, so no allocator
  pool of an earlier point is reused): after the model, the input and a one-step warm-up (kernels, pools), the
  child resets its peak resident set to the current one (Linux `/proc/self/clear_refs`), runs the pass and reports
  the peak (`VmHWM`) minus the resident set before it. (`ru_maxrss` alone is not enough: after `exec` Linux keeps
  the forking parent's peak in it, so a child of a large process reports nothing.)

The slope of peak bytes against steps (least squares over the sweep) is the memory cost of one more step. The
measurement needs no data set (a random state of a fixed shape): its study file is filed under the task name
`ode-state`. (ODE-Net vs ResNet parameters and accuracy: the odenet-params study.)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torchdiffeq
from torch import nn

from benchmarks.studies.common import check_seeds, provenance, save
from benchmarks.studies.registry import LineFigure, register_study
from zoo.layers import ConvRate

STUDY = "memory"
TASK = "ode-state"  # no data set: a random state of SHAPE
STEPS = (2, 4, 8, 16)
SHAPE = (64, 16, 16, 16)  # batch, channels, height, width of the ODE state (1 MiB in fp32)
MODES = ("direct", "adjoint")


class _Rate(nn.Module):
    """torchdiffeq's view of the zoo's rate function: (t, x) -> dx/dt."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.rate = ConvRate(channels, time=True, out_norm=True)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.rate(t, x)


def _pass(func: nn.Module, x: torch.Tensor, mode: str, n_steps: int) -> None:
    solve = torchdiffeq.odeint_adjoint if mode == "adjoint" else torchdiffeq.odeint
    t = torch.tensor([0.0, 1.0], device=x.device)
    out = solve(func, x, t, method="rk4", options={"step_size": 1.0 / n_steps})[-1]
    out.square().mean().backward()


def _setup(shape: Sequence[int], seed: int, device: torch.device) -> tuple[nn.Module, torch.Tensor]:
    if len(shape) != 4 or any(not isinstance(m, int) or m < 1 for m in shape):
        raise ValueError(f"shape must be 4 positive ints (batch, channels, height, width), got {shape}")
    torch.manual_seed(seed)
    return _Rate(shape[1]).to(device), torch.randn(*shape, device=device)


def probe_here(mode: str, n_steps: int, shape: Sequence[int], seed: int, device: torch.device) -> int:
    """Peak bytes of one training pass above the state before it, measured in this process (CUDA, or the child)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    func, x = _setup(shape, seed, device)
    _pass(func, x[:1], mode, 1)  # warm-up: kernels and allocator pools, not counted
    func.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        _pass(func, x, mode, n_steps)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    gc.collect()
    if _reset_peak():
        before = _status_bytes("VmRSS")  # the peak now equals the current resident set
        _pass(func, x, mode, n_steps)
        return _status_bytes("VmHWM") - before
    # No /proc (not Linux): the process's peak so far. After exec Linux keeps the forking parent's peak in ru_maxrss,
    # which is why the /proc path comes first; elsewhere the warm-up above is what sets the baseline.
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _pass(func, x, mode, n_steps)
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * scale


def _reset_peak() -> bool:
    """Reset this process's peak resident set to its current one (Linux >= 4.0: /proc/self/clear_refs, value 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        _status_bytes("VmHWM")
    except (OSError, KeyError):
        return False
    return True


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # "VmHWM:   123456 kB"
    raise KeyError(field)


def peak_bytes(mode: str, n_steps: int, shape: Sequence[int], seed: int, device: torch.device) -> int:
    """Peak training memory above baseline of one (mode, steps) point: in a fresh child on CPU, in-process on CUDA."""
    if device.type == "cuda":
        return probe_here(mode, n_steps, shape, seed, device)
    command = [sys.executable, "-m", "benchmarks.studies.memory", "--probe", mode, str(n_steps), str(seed),
               *map(str, shape)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode != 0:
        raise RuntimeError(f"memory probe {mode} x{n_steps} failed: {done.stderr.strip()[-500:]}")
    return int(json.loads(done.stdout.strip().splitlines()[-1])["peak_bytes"])


def slope(steps: Sequence[int], values: Sequence[float]) -> float:
    """Least-squares bytes per extra step."""
    return float(np.polyfit(np.asarray(steps, dtype=float), np.asarray(values, dtype=float), 1)[0])


def sweep(seed: int, device: torch.device, steps: Sequence[int] = STEPS, shape: Sequence[int] = SHAPE
          ) -> dict[str, list[int]]:
    """Peak bytes per mode at every step count."""
    return {mode: [peak_bytes(mode, n, shape, seed, device) for n in steps] for mode in MODES}


@register_study("memory", title="Peak training memory vs steps, direct vs adjoint backprop (Chen et al. 2018)",
                summary="peak training memory per extra RK4 step with direct backprop and with the adjoint, in child "
                "processes", claims=("chen-memory",), task=TASK,
                figure=LineFigure(x="n_steps", y="peak_mib", series="mode", where={"kind": "sweep"},
                                  xlabel="RK4 steps (depth)", ylabel="peak training memory above baseline (MiB)"))
def run(task_name: str, seeds: Sequence[int], results: Path, *, device: torch.device | None = None,
        limit: int | None = None, figure: str | None = None, steps: Sequence[int] | None = None,
        shape: Sequence[int] | None = None) -> Path:
    """The step sweep for every seed and mode (`task_name` must be `ode-state`: no data set is read)."""
    if task_name != TASK:
        raise ValueError(f"the memory study measures a random ODE state, filed as task {TASK!r}; got {task_name!r}")
    clock = time.perf_counter()
    steps, shape = STEPS if steps is None else steps, SHAPE if shape is None else shape
    seeds, device = check_seeds(seeds), device or torch.device("cpu")
    started = provenance(device)
    per_seed: dict[str, list[float]] = {k: [] for k in ("direct_peak_bytes_slope", "adjoint_peak_bytes_slope")}
    rows = []
    for seed in seeds:
        peaks = sweep(seed, device, steps, shape)
        for mode, values in peaks.items():
            per_seed[f"{mode}_peak_bytes_slope"].append(slope(steps, values))
            rows += [{"kind": "sweep", "seed": seed, "mode": mode, "n_steps": n, "peak_bytes": v,
                      "peak_mib": v / 2**20} for n, v in zip(steps, values)]
    measure = ("CUDA allocator peak" if device.type == "cuda" else "CPU peak RSS of a child process") + \
        f", state {'x'.join(map(str, shape))} fp32, torchdiffeq rk4"
    details = {"columns": ["kind", "seed", "mode", "n_steps", "peak_bytes", "peak_mib"],
               "steps": list(steps), "shape": list(shape), "measure": measure,
               "seconds": round(time.perf_counter() - clock, 1),
               "reference": "Chen et al. 2018, arXiv 1806.07366: ResNet 0.60 M params vs ODE-Net 0.22 M on MNIST, "
                            "O(L) vs O(1) memory",
               "note": f"Peak training memory above baseline vs steps ({measure}); slopes are bytes per extra step "
                       f"(least squares over {', '.join(map(str, steps))} steps)"}
    return save(results, study=STUDY, task=TASK, seeds=seeds, per_seed=per_seed, rows=rows, provenance=started,
                details=details, figure=figure)


def _main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="one memory probe (the CPU path's child process)")
    parser.add_argument("--probe", nargs=7, required=True, metavar=("MODE", "STEPS", "SEED", "B", "C", "H", "W"))
    mode, n_steps, seed, *shape = parser.parse_args(argv).probe
    torch.set_num_threads(1)
    peak = probe_here(mode, int(n_steps), [int(s) for s in shape], int(seed), torch.device("cpu"))
    print(json.dumps({"peak_bytes": peak}))


if __name__ == "__main__":
    _main()
