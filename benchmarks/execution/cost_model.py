"""GPU time of a tier, estimated from the work counted on CPU (`work.py`) and the reference GPU figures.

One pass costs  launch = ops x SECONDS_PER_OP (+ STEP_OVERHEAD for a training step's optimizer)  and
compute = FLOPs / THROUGHPUT[precision] + 2 x bytes / BANDWIDTH. Kernels run asynchronously, so a fixed-step
pass takes max(launch, compute); an adaptive solver waits for the GPU at every step (accept / reject on the host),
so there they add up.

Calibration (`calibrate`): SECONDS_PER_OP and STEP_OVERHEAD are fitted to the H100 figures of the torchdiffeq MNIST
example's networks (../shared/README.md, `REFERENCE`), whose operators are counted here on CPU exactly as the
zoo's are: seconds per operator from the batch-1 latencies, the per-step constant from the training steps. The
figures are launch-bound, so they cannot calibrate arithmetic: THROUGHPUT and BANDWIDTH are assumptions (stated in
the generated document), and so are `work.SURVIVING` and `work.ADAPTIVE_NFE_GROWTH`. A GPU session's
`session.json` (benchmarks/execution/device_session.py) holds every run's measured phase seconds; `corrections`
turns them into a factor per phase that the next estimate applies.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.execution.work import Item, Pass, run_items
from benchmarks.protocols import Protocol

# Assumed sustained rates on an H100/H200 for these small convolutions (64 channels, 7x7 / 8x8 maps): about a fifth
# of the dense tensor-core peak (TF32 for fp32 convolutions, cuDNN's default), HBM at ~70% of its 4.3 TB/s.
THROUGHPUT = {"bf16": 200e12, "fp32": 100e12, "fp64": 40e12}
BANDWIDTH = 3.0e12
SETUP_SECONDS = {  # a bare machine, before the first run (assumed; the device session measures each)
    "install wheels": 5.0, "python, torch and CUDA start": 15.0, "model contract checks": 10.0,
    "fashion-mnist load": 3.0, "cifar10-jpeg decode (60,000 JPEGs, ../shared/README.md: ~17 s)": 17.0}
RUN_OVERHEAD = 1.0  # per run: build, checkpoint per epoch, record, provenance (assumed)

# ../shared/README.md: one H100, torch 2.11, torchdiffeq 0.2.5, the torchdiffeq MNIST example's networks, plain
# fp32 loop, batch 128 (469 steps an epoch on MNIST's 60,000), data on the GPU; CIFAR: batch 256, bf16 autocast,
# crop + flip on the GPU, 15 epochs of 196 steps in 32 s.
REFERENCE = {
    "resnet": {"latency_ms": 1.75, "step_ms": 4.7e3 / 469},
    "odenet-rk4": {"latency_ms": 11.9, "step_ms": 17.0e3 / 469},  # 16-18 s an epoch
    "odenet-dopri5": {"latency_ms": 42.0, "step_ms": 36.5e3 / 469},  # 31-42 s an epoch as the NFE grows
    "resnet-cifar-bf16": {"step_ms": 32e3 / (15 * 196)},
}


@dataclass
class Calibration:
    seconds_per_op: float
    step_overhead: float
    checks: list[dict[str, Any]] = field(default_factory=list)  # reference vs prediction, for the document


def calibrate() -> Calibration:
    """Fit the launch constants to the reference figures (see the module docstring)."""
    from benchmarks.execution.reference_nets import reference_passes

    passes = reference_passes()
    per_op = statistics.fmean(REFERENCE[name]["latency_ms"] / 1e3 / passes[name]["latency"].ops
                              for name in ("resnet", "odenet-rk4", "odenet-dopri5"))
    fitted = ("resnet", "odenet-rk4", "resnet-cifar-bf16")  # dopri5's NFE grows in training: a check, not a fit
    overhead = statistics.median(REFERENCE[name]["step_ms"] / 1e3 - per_op * passes[name]["step"].ops
                                 for name in fitted)
    calibration = Calibration(per_op, overhead)
    for name, figures in REFERENCE.items():
        for key, unit in (("latency_ms", "latency"), ("step_ms", "step")):
            if key in figures:
                predicted = pass_seconds(passes[name][unit], 128 if unit == "step" else 1, calibration) * 1e3
                calibration.checks.append({"network": name, "what": key, "reference": figures[key],
                                           "predicted": predicted, "ops": passes[name][unit].ops,
                                           "fitted": unit == "latency" or name in fitted})
    return calibration


def compute_seconds(unit: Pass, batch: float) -> float:
    """The GPU's own time for a pass: arithmetic and memory traffic (what concurrent runs cannot share)."""
    return batch * (unit.flops / THROUGHPUT[unit.precision] + 2.0 * unit.bytes / BANDWIDTH)


def pass_seconds(unit: Pass, batch: float, calibration: Calibration) -> float:
    launch = unit.ops * calibration.seconds_per_op + (calibration.step_overhead if unit.kind == "train" else 0.0)
    compute = compute_seconds(unit, batch)
    return launch + compute if unit.adaptive else max(launch, compute)


def item_seconds(item: Item, calibration: Calibration) -> float:
    return item.calls * pass_seconds(item.unit, item.batch, calibration)


@dataclass
class RunEstimate:
    model: str
    task: str
    phases: dict[str, float]  # seconds per phase (the record's phase names; "surrogate" paid once per task x seed)
    work: dict[str, dict[str, float]]  # per phase: passes, launched ops, TFLOP, GPU-busy seconds

    @property
    def seconds(self) -> float:
        """The run itself, the surrogate's training excluded."""
        return sum(s for phase, s in self.phases.items() if phase != "surrogate") + RUN_OVERHEAD


def estimate_run(model: str, task: str, protocol: Protocol, calibration: Calibration,
                 corrections: Mapping[str, float] | None = None) -> RunEstimate:
    phases, work = {}, {}
    for phase, items in run_items(model, task, protocol).items():
        factor = (corrections or {}).get("train" if phase == "surrogate" else phase, 1.0)
        phases[phase] = factor * sum(item_seconds(item, calibration) for item in items)
        work[phase] = {"passes": sum(i.calls for i in items), "ops": sum(i.calls * i.unit.ops for i in items),
                       "tflop": sum(i.calls * i.batch * i.unit.flops for i in items) / 1e12,
                       "busy": factor * sum(i.calls * compute_seconds(i.unit, i.batch) for i in items)}
    return RunEstimate(model, task, phases, work)


def session_seconds(runs: Sequence[RunEstimate], seeds: int = 1, workers: int = 1,
                    parallel_efficiency: float = 0.6) -> dict[str, float]:
    """Wall time of a session doing `runs` for `seeds` seeds: setup, then the runs and one surrogate training per
    task and seed, shared out over `workers` concurrent runs at `parallel_efficiency` (assumed: launch-bound runs
    leave the GPU idle most of the time, so concurrent ones overlap), but never below the GPU's own busy time."""
    surrogates = {r.task: (r.phases["surrogate"], r.work["surrogate"]["busy"]) for r in runs if "surrogate" in r.phases}
    work = seeds * (sum(r.seconds for r in runs) + sum(s for s, _ in surrogates.values()))
    busy = seeds * (sum(w["busy"] for r in runs for p, w in r.work.items() if p != "surrogate")
                    + sum(b for _, b in surrogates.values()))
    speedup = 1.0 if workers == 1 else max(1.0, workers * parallel_efficiency)
    wall = max(work / speedup, busy)
    setup = sum(SETUP_SECONDS.values())
    return {"setup": setup, "runs": wall, "gpu_busy": busy, "total": setup + wall}


def corrections(sessions: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Measured / estimated seconds per phase over the runs of GPU sessions (their `session.json`): the median
    ratio, so one odd run does not move it. Phases never measured are left out (factor 1), and so are runs that
    shared the GPU with others (`--workers`): their phases include the others' time."""
    ratios: dict[str, list[float]] = {}
    for session in sessions:
        for run in session.get("runs", []):
            if run.get("concurrent_runs", 1) != 1:
                continue
            estimated = run.get("estimated_phase_seconds") or {}
            for phase, seconds in (run.get("phase_seconds") or {}).items():
                if estimated.get(phase, 0) > 0 and math.isfinite(seconds):
                    ratios.setdefault(phase, []).append(seconds / estimated[phase])
    return {phase: statistics.median(values) for phase, values in sorted(ratios.items())}
