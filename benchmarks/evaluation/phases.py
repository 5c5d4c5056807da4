"""Evaluation as a list of phases: what is measured, on which subset of the test set, timed as which phase.

`measure` runs them in order on a trained model; adding a measurement is adding a `Phase` here (and its metric specs
in `benchmarks/specs.py`). The order is part of the protocol's results: attacks and noise draw from seeded
generators, and the phases run in the order of `PHASES` on every run. A stochastic model (zoo/contract.py: its eval
forward draws noise from torch's global RNG) gets that RNG seeded afresh at the start of every phase, so the same
weights give the same record, and its record is flagged `stochastic`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch

from benchmarks.data.tasks import Task, TaskData
from benchmarks.evaluation import metrics as M
from benchmarks.evaluation import timing
from benchmarks.evaluation.attacks import robustness_suite
from benchmarks.evaluation.depth_transfer import depth_transfer
from benchmarks.evaluation.diagnostics import trajectory_diagnostics
from benchmarks.evaluation.surrogate import resnet_surrogate
from benchmarks.evaluation.timing import PhaseTimer
from benchmarks.protocols import Evaluation, Protocol
from benchmarks.specs import BATCH_COUPLING_TOLERANCE
from benchmarks.training.train import TrainResult
from zoo import contract

STOCHASTIC_FLAG = "stochastic"  # the record of a model whose eval forward is random (each phase under a fixed seed)
STOCHASTIC_SEED = 0  # phase i of a stochastic model runs with torch's global RNG seeded to STOCHASTIC_SEED + i


@dataclass
class Run:
    """What the phases read (the model, its test set, the protocol's evaluation settings) and what they add to."""

    model: torch.nn.Module
    task: Task
    ev: Evaluation
    device: torch.device
    trained: TrainResult
    x_test: torch.Tensor
    y_test: torch.Tensor
    have: frozenset[str]  # the model's capabilities (zoo/contract.py)
    data: TaskData  # for the ResNet surrogate of the transfer attack (trained on the same splits)
    protocol: Protocol
    model_name: str | None = None  # the registered name (None: a model not from the registry)
    seed: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    transfer: list[dict[str, Any]] = field(default_factory=list)  # depth-transfer entries of the record
    profile: list[dict[str, Any]] = field(default_factory=list)  # stiffness profile along depth

    @property
    def classification(self) -> bool:
        return self.task.kind == "classification"


@dataclass(frozen=True)
class Phase:
    name: str  # timed as (the record's provenance.phase_seconds)
    applies: Callable[[Run], bool]  # False: skipped (e.g. a capability the model lacks, a regression task)
    run: Callable[[Run], None]


def _clean(r: Run) -> None:
    ev, model, x_test, y_test = r.ev, r.model, r.x_test, r.y_test
    output_shape = (r.task.num_classes,) if r.classification else tuple(y_test.shape[1:])
    score, nfe = M.evaluate(model, x_test, y_test, kind=r.task.kind, batch_size=ev.eval_batch,
                            output_shape=output_shape)
    r.metrics["accuracy" if r.classification else "test_mse"] = score
    r.metrics["val_accuracy" if r.classification else "val_mse"] = r.trained.val_metric
    r.metrics["params"] = M.parameter_count(model)
    r.metrics["flops"] = M.count_flops(model, x_test[:1])
    if "nfe" in r.have and nfe is not None:
        r.metrics["nfe"] = nfe
    r.metrics["eval_batch"] = ev.eval_batch
    if "stochastic" not in r.have:  # else not applicable (zoo/contract.py): fresh noise is no coupling
        r.metrics["batch_coupling"] = M.batch_coupling(model, x_test, batch_size=ev.eval_batch)
        if r.metrics["batch_coupling"] > BATCH_COUPLING_TOLERANCE:
            r.flags.append("batch-coupled")
    if any(getattr(s, "adjoint", False) for s in getattr(model, "solvers", ())):
        loss = model(x_test[:64]).float().square().mean()
        loss.backward()
        r.metrics["nfe_backward"] = model.nfe_backward
        model.zero_grad(set_to_none=True)


def _latency(r: Run) -> None:
    r.metrics.update(timing.latency_and_throughput(r.model, r.x_test, device=r.device, batch=r.ev.throughput_batch,
                                                   warmup=3, repeats=r.ev.latency_repeats))


def _attacked(r: Run) -> bool:
    return r.classification and bool(r.task.attack_eps)


def _attacks(r: Run) -> None:  # on the first attack_subset test examples
    xs, ys = r.x_test[:r.ev.attack_subset], r.y_test[:r.ev.attack_subset]
    # Transfer from the same-size ResNet of the same seed (cached; None when this model is that ResNet).
    resnet = resnet_surrogate(r.task, r.data, r.protocol, r.seed, r.device, r.model_name)
    suite = robustness_suite(r.model, xs, ys, eps_grid=r.task.attack_eps, headline_eps=r.task.headline_eps, ev=r.ev,
                             batch_size=r.ev.eval_batch, seed=0,
                             surrogate=resnet)
    r.metrics.update(suite.metrics)
    r.flags += suite.flags


def _noise(r: Run) -> None:  # on the attacked examples
    xs, ys = r.x_test[:r.ev.attack_subset], r.y_test[:r.ev.attack_subset]
    r.metrics.update(M.noise_robustness(r.model, xs, ys, sigmas=r.task.noise_sigmas, batch_size=r.ev.eval_batch,
                                        seed=0))


def _diagnostics(r: Run) -> None:  # on the first diagnostic_subset test examples
    shape, r.profile = trajectory_diagnostics(r.model, r.x_test[:r.ev.diagnostic_subset], points=r.ev.track_points,
                                              iterations=r.ev.jacobian_iterations)
    r.metrics.update(shape)


def _depth_transfer(r: Run) -> None:  # on the first transfer_subset test examples
    ev = r.ev
    r.transfer, summary = depth_transfer(
        r.model, r.x_test[:ev.transfer_subset], r.y_test[:ev.transfer_subset], kind=r.task.kind,
        factors=ev.transfer_factors, schemes=ev.transfer_schemes, tolerances=ev.transfer_tolerances,
        batch_size=ev.eval_batch, latency_example=r.x_test[:1], device=r.device,
        latency_repeats=max(3, ev.latency_repeats // 4))
    r.metrics.update(summary)


PHASES: tuple[Phase, ...] = (
    Phase("clean", lambda r: True, _clean),
    Phase("latency", lambda r: True, _latency),
    Phase("attacks", _attacked, _attacks),
    Phase("noise", _attacked, _noise),
    Phase("diagnostics", lambda r: "trajectories" in r.have, _diagnostics),
    Phase("depth_transfer", lambda r: "depth_transfer" in r.have, _depth_transfer),
)


def measure(model: torch.nn.Module, task: Task, data: TaskData, protocol: Protocol, device: torch.device,
            trained: TrainResult, phase: PhaseTimer | None = None, model_name: str | None = None, seed: int = 0,
            ) -> tuple[dict[str, float], list[str], list[dict[str, Any]], list[dict[str, Any]]]:
    """Every metric of the harness for a trained model (eval mode, fp32); also the depth-transfer entries and
    the stiffness profile along depth that records keep beside the metrics. Metrics that need a capability the
    model lacks (zoo/contract.py) are skipped; the record lists them as not applicable."""
    phase = phase or PhaseTimer(device)
    model.eval().float()
    run = Run(model=model, task=task, ev=protocol.evaluation, device=device, trained=trained,
              x_test=data.test.inputs().to(device), y_test=data.test.y.to(device),
              have=frozenset(contract.capabilities(model)), data=data, protocol=protocol, model_name=model_name,
              seed=seed,
              metrics={"epochs": trained.epochs, "train_seconds": trained.train_seconds,
                       "epoch_seconds": trained.epoch_seconds})
    if trained.peak_memory_mb is not None:
        run.metrics["peak_train_memory_mb"] = trained.peak_memory_mb
    stochastic = "stochastic" in run.have
    if stochastic:
        run.flags.append(STOCHASTIC_FLAG)
    for index, step in enumerate(PHASES):
        if step.applies(run):
            with phase(step.name), (M.seeded(STOCHASTIC_SEED + index) if stochastic else nullcontext()):
                step.run(run)
    return run.metrics, run.flags, run.transfer, run.profile
