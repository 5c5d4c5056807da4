"""`phases.measure` on a flow whose adaptive cost depends on the input: NFE over every batch, batch coupling."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import zoo
from benchmarks.data.tasks import Split, TaskData, get_task
from benchmarks.evaluation import metrics
from benchmarks.evaluation.phases import measure
from benchmarks.protocols import SMOKE, Evaluation
from benchmarks.specs import BATCH_COUPLING_TOLERANCE
from benchmarks.training.train import TrainResult

pytestmark = pytest.mark.numerics  # float comparisons: run again under each lower CPU capability (cpu_capabilities.py)

BATCH = 16
TINY = dataclasses.replace(SMOKE, name="test-measure", evaluation=Evaluation(
    transfer_subset=BATCH, transfer_factors=(1.0,), transfer_schemes=("euler",), transfer_tolerances=(1e-2,),
    latency_repeats=1, throughput_batch=8, eval_batch=BATCH, diagnostic_subset=8, track_points=4,
    jacobian_iterations=2))
UNTRAINED = TrainResult(epochs=0, train_seconds=0.0, epoch_seconds=0.0, best_epoch=0, val_metric=0.0,
                        peak_memory_mb=None)


class CubicDecay(nn.Module):
    """dx/dt = -|x|^2 x: the larger the state, the stiffer the flow, so adaptive solvers take more steps."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, t, x, interval=None):
        return -self.scale * x.square().sum(dim=1, keepdim=True) * x


def flow(solver: zoo.Solver) -> zoo.DepthModel:
    return zoo.DepthModel(nn.Identity(), [zoo.ODEBlock(CubicDecay(), solver, t1=1.0)], [], nn.Identity())


def states() -> TaskData:
    """Three test batches of growing size of the state: each costs an adaptive solver another number of steps."""
    generator = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(BATCH, 2, generator=generator) * scale for scale in (0.3, 1.0, 3.0)])
    split = Split(x, x.clone())
    return TaskData(split, split, split)


def run(model: zoo.DepthModel) -> tuple[dict[str, float], list[str]]:
    metrics_, flags, _, _ = measure(model, get_task("pendulum"), states(), TINY, torch.device("cpu"), UNTRAINED)
    return metrics_, flags


def test_adaptive_nfe_is_the_mean_over_every_evaluated_batch() -> None:
    model = flow(zoo.Solver("dopri5", rtol=1e-5, atol=1e-5))
    x = states().test.inputs()
    per_batch = []
    with torch.no_grad():
        for start in range(0, len(x), BATCH):
            model(x[start:start + BATCH])
            per_batch.append(model.nfe)
    assert len(set(per_batch)) == 3, per_batch  # otherwise the first batch alone would give the same number
    recorded, _ = run(model)
    assert recorded["nfe"] == pytest.approx(sum(per_batch) / 3)
    assert recorded["eval_batch"] == BATCH


def test_fixed_step_nfe_stays_an_exact_count() -> None:
    # 100 steps keep RK4 stable on the stiffest (largest) states; with 5 the flow blows up, and NaN is no result.
    recorded, _ = run(flow(zoo.Solver("rk4", 100)))
    assert recorded["nfe"] == 400  # sums of integers divided once: no 399.99999999999994


def test_adaptive_solvers_are_flagged_batch_coupled_and_fixed_steps_are_not() -> None:
    adaptive, adaptive_flags = run(flow(zoo.Solver("dopri5", rtol=1e-5, atol=1e-5)))
    assert "batch-coupled" in adaptive_flags and adaptive["batch_coupling"] > BATCH_COUPLING_TOLERANCE
    fixed, fixed_flags = run(flow(zoo.Solver("rk4", 100)))
    # measured on a float64 twin: 400 evaluations' rounding (~1e-15), nothing like coupling (~rtol)
    assert "batch-coupled" not in fixed_flags and fixed["batch_coupling"] < 1e4 * torch.finfo(torch.float64).eps


@pytest.mark.parametrize(("name", "overrides", "coupled"), [
    ("neural-ode", {"backend": "torchdiffeq"}, True), ("anode", {"backend": "torchdiffeq"}, True),
    ("neural-ode", {}, False), ("anode", {}, False),  # the zoo's default: per-example steps
    ("resnet", {}, False), ("continuousnet", {}, False), ("inresnet", {}, False)])
def test_batch_coupling_of_zoo_models(name: str, overrides: dict, coupled: bool) -> None:
    torch.manual_seed(0)
    model = zoo.create_model(name, input_shape=(1, 8, 8), num_classes=10, width=8, depth=3, **overrides).eval()
    x = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    coupling = metrics.batch_coupling(model, x, batch_size=32)
    assert (coupling > BATCH_COUPLING_TOLERANCE) == coupled, coupling
    assert next(model.parameters()).dtype == torch.float32  # measured on a float64 copy, the model is untouched


def test_per_example_solves_are_measured_uncoupled_with_the_mean_nfe_of_every_example() -> None:
    # The same flow, each example with its own steps (zoo/per_example.py): the harness measures, not trusts, that.
    model = flow(zoo.Solver("dopri5", rtol=1e-5, atol=1e-5, backend="per-example"))
    assert not model.batch_coupled and "batch_coupling" not in zoo.capabilities(model)
    x = states().test.inputs()
    with torch.no_grad():
        model(x)
    every_example = model.nfe_per_example.double().mean().item()  # one batch of all: each example's own count
    recorded, flags = run(model)
    assert "batch-coupled" not in flags and recorded["batch_coupling"] < 1e3 * torch.finfo(torch.float64).eps
    assert recorded["nfe"] == pytest.approx(every_example)  # the same whichever batches the examples were in
