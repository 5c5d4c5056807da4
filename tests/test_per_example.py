"""The per-example adaptive backend (zoo/per_example.py, issue #24): settings, NFE per example, numerics against
torchdiffeq and a converged reference, independence from the batch, gradients, failures and records."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import zoo
from benchmarks.evaluation import metrics
from benchmarks.evaluation.check import check_model
from benchmarks.execution.runs import solver_settings
from benchmarks.specs import BATCH_COUPLING_TOLERANCE
from benchmarks.store.records import Record, load_record, save_record
from zoo import template
from zoo.integrate import replace_solver

pytestmark = pytest.mark.numerics  # float comparisons: run again under each lower CPU capability (cpu_capabilities.py)
F64_NOISE = 1e3 * torch.finfo(torch.float64).eps  # rounding of batched float64 kernels, amplified along the solve


def small(name: str, **overrides) -> zoo.DepthModel:
    torch.manual_seed(0)
    return zoo.create_model(name, input_shape=(1, 8, 8), num_classes=10, width=8, depth=3, **overrides)


def images(n: int, seed: int = 1, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)).to(dtype)


class CubicDecay(nn.Module):
    """dx/dt = -|x|^2 x: the larger the state, the stiffer the flow, so examples of different sizes need different
    numbers of steps."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0, dtype=torch.float64))

    def forward(self, t, x, interval=None):
        self.calls = getattr(self, "calls", 0) + 1
        return -self.scale * x.square().sum(dim=1, keepdim=True) * x


def spread_states() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.cat([torch.randn(4, 2, generator=generator, dtype=torch.float64) * s for s in (0.3, 1.0, 3.0)])


def test_the_backend_is_a_solver_setting_with_clear_refusals() -> None:
    solver = zoo.Solver("dopri5", rtol=1e-4, atol=1e-4, backend="per-example")
    assert not solver.batch_coupled and zoo.Solver("dopri5").batch_coupled and not zoo.Solver("rk4", 2).batch_coupled
    assert solver.describe() == "dopri5(rtol=0.0001, atol=0.0001, per example)"
    with pytest.raises(ValueError, match="unknown backend 'torchode'; accepted values: torchdiffeq, per-example"):
        zoo.Solver("dopri5", backend="torchode")
    with pytest.raises(ValueError, match="fixed-step 'rk4' solves every example on the same grid already"):
        zoo.Solver("rk4", 2, backend="per-example")
    with pytest.raises(ValueError, match="the per-example backend has no 'bosh3'; it offers dopri5, adaptive_heun"):
        zoo.Solver("bosh3", backend="per-example")
    # Depth transfer rebuilds from the trained solver: adaptive settings keep the backend, fixed grids drop it.
    assert replace_solver(solver, rtol=1e-2).backend == "per-example"
    assert replace_solver(solver, scheme="euler", n_steps=4).backend == "torchdiffeq"


def test_models_and_manifests_carry_the_backend() -> None:
    model = small("neural-ode", backend="per-example")
    assert [s.backend for s in model.solvers] == ["per-example"] and not model.batch_coupled
    assert "batch_coupling" not in zoo.capabilities(model)
    assert model.manifest(rtol=1e-4, atol=1e-4).solvers[0].backend == "per-example"
    assert model.manifest("rk4", 2).solvers[0].backend == "torchdiffeq"
    node = small("neural-ode", backend="torchdiffeq")  # explicit: the test holds whichever default the zoo has
    assert node.batch_coupled and node.manifest(backend="per-example").solvers[0].backend == "per-example"
    for name in ("anode", "tisode", "sonode"):
        assert small(name, backend="per-example").solvers[0].backend == "per-example"
    # Records name the backend only where it is not the default, so default records stay as they were.
    assert "backend" not in solver_settings(node)[0]
    assert solver_settings(model)[0]["backend"] == "per-example"


def test_a_per_example_record_round_trips(tmp_path) -> None:
    record = Record(model="neural-ode", task="digits", seed=0, protocol={"name": "t", "version": 1, "hash": "abc"})
    record.solver = solver_settings(small("neural-ode", backend="per-example"))
    assert load_record(save_record(tmp_path, record)).solver[0]["backend"] == "per-example"


# FSAL (6 new stages a step) and not (2); the second order method at a looser tolerance, within the step limit.
@pytest.mark.parametrize(("scheme", "tol"), [("dopri5", 1e-6), ("adaptive_heun", 1e-3)])
def test_each_example_counts_its_own_evaluations(scheme: str, tol: float) -> None:
    x = spread_states()
    block = zoo.ODEBlock(CubicDecay(), zoo.Solver(scheme, rtol=tol, atol=tol, backend="per-example"), t1=1.0)
    with torch.no_grad():
        block.func.calls = 0
        block(x)
        together = block.nfe_per_example.clone()
        assert block.nfe == together.sum().item() / len(x)  # the model's nfe: the mean per example
        # The batch is evaluated until its slowest example is done: that is what the wall clock pays.
        assert block.per_example_solve.calls == block.func.calls == together.max().item()
        alone = []
        for i in range(len(x)):
            block.func.calls = 0
            block(x[i:i + 1])
            assert block.nfe == block.func.calls  # alone, the example's count is every call made
            alone.append(block.func.calls)
    assert together.tolist() == alone
    assert len(set(alone)) >= 3, alone  # otherwise per-example counts would not be tested


def test_flow_nfe_of_a_depth_model_is_the_mean_of_its_examples() -> None:
    model = zoo.DepthModel(nn.Identity(), [zoo.ODEBlock(CubicDecay(), zoo.Solver(
        "dopri5", rtol=1e-6, atol=1e-6, backend="per-example"), t1=1.0)], [], nn.Identity())
    with torch.no_grad():
        model(spread_states())
    assert model.nfe == pytest.approx(model.nfe_per_example.double().mean().item())
    assert model.nfe_per_example.tolist() == model.blocks[0].nfe_per_example.tolist()


@pytest.mark.parametrize("name", ["neural-ode", "anode"])
def test_numerics_match_torchdiffeq_and_converge_to_a_reference(name: str) -> None:
    model = small(name).double().eval()
    with torch.no_grad():
        h = model.stem(images(6, dtype=torch.float64))
        block = model.blocks[0]
        reference = block.with_solver(zoo.Solver("dopri5", rtol=1e-10, atol=1e-10, max_num_steps=100_000))(h)
        errors = []
        for tol in (1e-3, 1e-4, 1e-5):
            per_example = block.with_solver(zoo.Solver("dopri5", rtol=tol, atol=tol, backend="per-example"))
            batched = block.with_solver(zoo.Solver("dopri5", rtol=tol, atol=tol))
            error = (per_example(h) - reference).abs().max().item()
            errors.append(error)
            # As accurate as torchdiffeq at the same tolerance (measured: 0.8-1.1x its error here).
            assert error <= 1.5 * (batched(h) - reference).abs().max().item() + F64_NOISE, (tol, error)
            # The same controller: alone, each example takes torchdiffeq's steps to within one step.
            for i in range(len(h)):
                batched(h[i:i + 1])
                assert abs(per_example.nfe_per_example[i].item() - batched.nfe) <= 6, (tol, i)
        assert errors[0] > errors[1] > errors[2], errors  # the error falls with the tolerance


@pytest.mark.parametrize("name", ["neural-ode", "anode"])
def test_an_example_no_longer_depends_on_its_batch(name: str) -> None:
    x = images(32)
    coupled = metrics.batch_coupling(small(name, rtol=1e-5, atol=1e-5, backend="torchdiffeq").eval(), x,
                                     batch_size=32)
    model = small(name, rtol=1e-5, atol=1e-5, backend="per-example").eval()
    assert coupled > BATCH_COUPLING_TOLERANCE  # torchdiffeq: the batch's error norm moves every example
    assert metrics.batch_coupling(model, x, batch_size=32) < F64_NOISE  # the harness's own measure: only rounding
    twin = model.double()
    with torch.no_grad():
        x64, others = x.double(), images(32, seed=7, dtype=torch.float64)
        first = twin(x64[:4])
        counts = twin.nfe_per_example.clone()
        for batch in (x64[:12], x64, torch.cat([x64[:4], others[4:]])):  # larger batches, other companions
            out = twin(batch)[:4]
            assert (out - first).abs().max().item() / (1 + first.abs().max().item()) < F64_NOISE
            assert twin.nfe_per_example[:4].tolist() == counts.tolist()


def _gradients(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    model.zero_grad()
    model(x).square().sum().backward()
    return torch.cat([x.grad.flatten(), *(p.grad.flatten() for p in model.parameters())])


def test_direct_gradients_converge_to_the_reference() -> None:
    model = small("neural-ode").double()
    x = images(4, dtype=torch.float64)
    reference = _gradients(model.manifest("rk4", 512), x)  # converged to 2e-4 (against 256 steps)
    for tol in (1e-4, 1e-6):
        grad = _gradients(model.manifest(rtol=tol, atol=tol, backend="per-example"), x)
        # Backpropagating through torchode's step-size control as well was 55% off at 1e-6: steps are constants.
        assert ((grad - reference).norm() / reference.norm()).item() < 1e-2, tol


@pytest.mark.parametrize("name", ["neural-ode", "anode"])
def test_adjoint_gradients_agree_with_direct_ones(name: str) -> None:
    model = small(name).double()
    x = images(4, dtype=torch.float64)
    direct = _gradients(model.manifest(rtol=1e-5, atol=1e-5, backend="per-example"), x)
    adjoint_model = model.manifest(rtol=1e-5, atol=1e-5, adjoint=True, backend="per-example")
    adjoint = _gradients(adjoint_model, x)
    # Both are discretisations at 1e-5 of the same gradient (torchdiffeq's pair differs by 2e-3 on neural-ode).
    assert ((adjoint - direct).norm() / direct.norm()).item() < 3e-2
    assert adjoint_model.nfe_backward > adjoint_model.nfe > 0  # the backward solve is counted per example


def test_step_limits_raise_in_the_forward_and_in_the_adjoint() -> None:
    tight = zoo.ODEBlock(CubicDecay(), zoo.Solver("dopri5", rtol=1e-8, atol=1e-8, max_num_steps=5,
                                                  backend="per-example"), t1=1.0)
    with pytest.raises(zoo.SolverDidNotConverge, match=r"per-example solve: \d+ of 12 examples stopped early "
                                                       r"\(it reached the step limit, limit 5 steps\)"):
        tight(spread_states())
    # Forward in 4 steps (as many as the limit allows), backward in 4 and 5: torchode's adjoint sets no limit and
    # drops the backward solve's status, so without the check it would return its gradients without a word.
    model = small("neural-ode").double().manifest(adjoint=True, backend="per-example")
    model.blocks[0].solver = replace_solver(model.blocks[0].solver, max_num_steps=4)
    out = model(images(2, dtype=torch.float64))
    assert model.blocks[0].per_example_solve.nfe_per_example.tolist() == [2 + 6 * 4] * 2
    with pytest.raises(zoo.SolverDidNotConverge, match="per-example adjoint solve"):
        out.square().sum().backward()


def test_tracks_read_each_examples_own_solve_at_common_depths() -> None:
    model = small("anode", backend="per-example").double().eval()
    x = images(3, dtype=torch.float64)
    with torch.no_grad():
        (track,) = model.tracks(x, 4)
        h = model.stem(x)
        end = model.blocks[0](h)
    assert track.times == [0.0, 0.25, 0.5, 0.75, 1.0] and len(track.states) == 5
    assert torch.equal(track.states[0], h)
    assert (track.states[-1] - end).abs().max().item() < F64_NOISE  # the same steps, read by dense output


def test_depth_varying_rates_refuse_per_example_times_clearly() -> None:
    model = small("continuousnet").manifest("dopri5", backend="per-example")
    with pytest.raises(ValueError, match="one time per call, but the per-example backend gives every example"):
        model(images(2))


def test_mixed_precision_keeps_the_state_in_float32() -> None:
    model = small("neural-ode", backend="per-example").eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images(4))
    assert torch.isfinite(out).all() and model.nfe > 0


def test_the_contract_check_finds_no_coupling_to_declare() -> None:
    report = check_model("neural-ode", ["digits"], {"width": 8, "depth": 3, "backend": "per-example"})
    (invariance,) = [c for c in report.checks if c.name == "batch invariance (or declared coupling)"]
    assert invariance.ok and invariance.detail == ""  # invariant, not excused by a declaration


def test_switching_the_default_backend_is_one_line(monkeypatch) -> None:
    monkeypatch.setattr(template, "ADAPTIVE_BACKEND", "per-example")
    assert "batch_coupling" not in template.adaptive_capabilities("regulariser")
    for name in ("neural-ode", "anode", "tisode", "sonode"):
        model = small(name)
        assert model.solvers[0].backend == "per-example" and not model.batch_coupled
        assert set(template.adaptive_capabilities()) <= zoo.capabilities(model)
