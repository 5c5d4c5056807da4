"""The studies of issue #15 (benchmarks/studies/): the hooks they add to the engine, their measurements on
tiny settings, and `depthbench study` end to end (writing a study file and its table)."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

import zoo
from benchmarks.cli import main
from benchmarks.data.tasks import get_task
from benchmarks.evaluation.diagnostics import trajectory_diagnostics
from benchmarks.protocols import Recipe
from benchmarks.store.studies import read_study
from benchmarks.studies import common, compression, memory, refinement, stiffness
from benchmarks.training.train import train
from zoo.penalty import penalise_stiffness

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    task = get_task("digits")
    return task, task.load(limit=200)


def _coarse(task) -> zoo.DepthModel:
    torch.manual_seed(0)
    return zoo.create_model("continuousnet", input_shape=task.input_shape, num_classes=10, width=8, depth=4,
                            n_basis=2, n_steps=1)


@pytest.mark.numerics
def test_refine_at_epochs_refines_exactly_at_the_switch(digits) -> None:
    # lr 0: the weights only change by the refinement itself, so after training the model must be the coarse
    # model's ODE on twice... four times the steps, i.e. exactly the same theta(t) on the refined grid.
    task, data = digits
    model = _coarse(task)
    before = copy.deepcopy(model)
    recipe = Recipe(epochs=3, batch_size=32, lr=0.0, schedule="constant")
    result = train(model, data, task, recipe, device=CPU, seed=0, refine_at_epochs=(2, 3))
    assert model.solvers[0].n_steps == 4 and model.blocks[0].func.basis.n_elements == 4
    assert result.best_epoch == 3  # the kept checkpoint is of the final depth
    x = data.test.inputs()[:16]
    with torch.no_grad():
        expected = before.manifest("rk4", 4)(x)
        got = model(x)
        assert not torch.allclose(before(x), got, atol=1e-4)  # the grid did change (1 -> 4 steps) ...
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)  # ... the function of depth did not


@pytest.mark.numerics
def test_refine_at_epochs_keeps_training_and_the_schedule(digits) -> None:
    task, data = digits
    model = _coarse(task)
    recipe = Recipe(epochs=4, batch_size=32, lr=1e-2)  # one-cycle: the schedule must continue across the switch
    result = train(model, data, task, recipe, device=CPU, seed=0, refine_at_epochs=(3,))
    losses = [entry["loss"] for entry in result.history]
    assert losses[-1] < losses[0]
    assert sum(p.numel() for p in model.parameters()) > sum(p.numel() for p in _coarse(task).parameters())


def test_refine_at_epochs_outside_the_recipe_is_refused(digits) -> None:
    task, data = digits
    with pytest.raises(ValueError, match="refine_at_epochs must lie in 2..2"):
        train(_coarse(task), data, task, Recipe(epochs=2, batch_size=32), device=CPU, seed=0, refine_at_epochs=(1,))


def test_refinement_schedule_splits_epochs_into_equal_stages() -> None:
    assert refinement.schedule(8) == [3, 5, 7]
    assert refinement.schedule(4, 2) == [3]
    with pytest.raises(ValueError, match="equal stages"):
        refinement.schedule(6)


def test_study_command_writes_the_refinement_file_and_table(tmp_path, monkeypatch) -> None:
    # The recipe shortened to 4 epochs (one per stage) on 200 examples per split: the command, not the result.
    monkeypatch.setattr(common, "study_recipe",
                        lambda task: dataclasses.replace(Recipe(epochs=4, batch_size=32, lr=5e-3)))
    code = main(["study", "refinement", "--seeds", "0", "1", "--limit", "200", "--results", str(tmp_path / "r"),
                 "--out", str(tmp_path / "l")])
    assert code == 0
    study = read_study(tmp_path / "r" / "refinement" / "digits.json")
    assert study["tier"] == "cpu-study" and study["seeds"] == [0, 1]
    for key in ("refined_accuracy", "full_accuracy", "refined_train_seconds", "full_train_seconds"):
        assert study["summary"][key]["n"] == 2
        assert all(0 < v for v in study["summary"][key]["values"])
    assert {row["final_steps"] for row in study["rows"]} == {8}
    assert study["details"]["refine_at_epochs"] == [2, 3, 4]
    table = (tmp_path / "l" / "refinement" / "digits.md").read_text()
    assert "refined_accuracy" in table and "1 -> 2 -> 4 -> 8" in table
    assert (tmp_path / "l" / "refinement" / "digits.csv").read_text().startswith("arm,")


def test_study_command_refuses_an_unknown_task(capsys) -> None:
    assert main(["study", "refinement", "--task", "pendulum"]) == 2
    assert "the studies run on digits" in capsys.readouterr().err


def _entry(scheme: str, steps: int, acc: float, nfe: int, trained: bool = False, **extra) -> dict:
    return {"scheme": scheme, "n_steps": steps, "accuracy": acc, "nfe": nfe, "trained": trained, **extra}


@pytest.mark.numerics
def test_cheapest_is_the_fewest_nfe_within_half_a_point() -> None:
    entries = [_entry("rk4", 8, 0.90, 32, trained=True), _entry("rk4", 2, 0.896, 8), _entry("euler", 2, 0.894, 2),
               _entry("midpoint", 1, 0.95, 2, failed="non-finite outputs"), _entry("rk4", 16, 0.91, 64)]
    trained, best = compression.cheapest(entries)
    assert trained["n_steps"] == 8 and (best["scheme"], best["n_steps"]) == ("rk4", 2)  # 0.894 is 0.6 pt below
    tie = [_entry("euler", 8, 0.9, 8, trained=True), _entry("rk4", 2, 0.9, 8)]
    assert compression.cheapest(tie)[1]["trained"]  # a tie claims no compression


def test_study_command_writes_the_compression_file_with_the_papers_column(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(common, "study_recipe", lambda task: Recipe(epochs=2, batch_size=32, lr=5e-3))
    monkeypatch.setattr(compression, "MODELS", {"continuousnet": {}, "resnet": {}})
    monkeypatch.setattr(compression, "LATENCY_REPEATS", 3)
    code = main(["study", "compression", "--seeds", "0", "--limit", "200", "--results", str(tmp_path / "r"),
                 "--out", str(tmp_path / "l")])
    assert code == 0
    study = read_study(tmp_path / "r" / "compression" / "digits.json")
    assert set(study["summary"]) == {"trained_accuracy", "compressed_accuracy", "latency_speedup", "nfe_ratio"}
    assert study["summary"]["nfe_ratio"]["mean"] >= 1
    assert study["summary"]["compressed_accuracy"]["mean"] >= study["summary"]["trained_accuracy"]["mean"] - 0.005
    assert [row["model"] for row in study["rows"]] == ["continuousnet", "resnet"]
    assert all(row["cheapest_latency_ms"] > 0 for row in study["rows"])
    table = (tmp_path / "l" / "compression" / "digits.md").read_text()
    assert "Queiruga et al. 2020 (CIFAR-10, their numbers)" in table and "0.9228 (RK4-3/8, 6-6-6 steps)" in table


def test_direct_backprop_memory_grows_with_steps_and_the_adjoint_does_not() -> None:
    # Measured in child processes (CPU RSS). A state of 32x8x16x16 fp32 is 256 KiB; direct backprop keeps about a
    # dozen such activations per RK4 step (~4 MiB), the adjoint none. Margins: direct > 2 MiB/step, adjoint < 1/4 of it.
    steps, shape = (2, 8), (32, 8, 16, 16)
    peaks = memory.sweep(0, CPU, steps, shape)
    direct, adjoint = memory.slope(steps, peaks["direct"]), memory.slope(steps, peaks["adjoint"])
    assert direct > 2 * 2**20, peaks
    assert adjoint < direct / 4, peaks


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the allocator path needs a CUDA GPU")
def test_cuda_peak_memory_from_the_allocator() -> None:
    cuda = torch.device("cuda")
    steps, shape = (2, 8), (32, 8, 16, 16)
    peaks = memory.sweep(0, cuda, steps, shape)
    assert memory.slope(steps, peaks["direct"]) > 2 * 2**20
    assert memory.slope(steps, peaks["adjoint"]) < memory.slope(steps, peaks["direct"]) / 4


def test_memory_probe_refuses_an_unknown_mode() -> None:
    with pytest.raises(ValueError, match="mode must be one of direct, adjoint"):
        memory.probe_here("checkpointed", 2, (2, 8, 8, 8), 0, CPU)


@pytest.mark.numerics
def test_slope_is_bytes_per_step() -> None:
    assert memory.slope([1, 2, 4], [10, 20, 40]) == pytest.approx(10)


@pytest.mark.numerics
def test_penalise_stiffness_shares_the_parameters_and_penalises_in_training_only(digits) -> None:
    task, data = digits
    torch.manual_seed(0)
    plain = zoo.create_model("continuousnet", input_shape=task.input_shape, num_classes=10, width=8, depth=3)
    model = penalise_stiffness(plain, 0.5)
    assert [id(p) for p in model.parameters()] == [id(p) for p in plain.parameters()]
    assert "regulariser" in zoo.capabilities(model) and "depth_transfer" in zoo.capabilities(model)
    x = data.test.inputs()[:8]
    model.train()
    model(x)
    penalty = model.regulariser()
    assert penalty.item() > 0 and penalty.requires_grad  # differentiable in the rate's parameters
    penalty.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.blocks[0].func.parameters())
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain.eval()(x))  # the same function; no penalty at evaluation
    assert model.regulariser().item() == 0.0
    with pytest.raises(ValueError, match="adaptive solver"):
        penalise_stiffness(zoo.create_model("neural-ode", input_shape=task.input_shape, num_classes=10, width=8,
                                            depth=3, channels=8), 0.1)
    with pytest.raises(ValueError, match="stiffness_weight must be a number >= 0"):
        penalise_stiffness(plain, -1.0)


def test_the_penalty_lowers_the_spectral_radius_it_penalises() -> None:
    # Weight 0.1 against none, the same seed and recipe (~110 steps on all of digits' training split): the trained
    # rate's sigma_max must come out lower by a 2x margin (measured: about 90x lower).
    task = get_task("digits")
    data = task.load()
    recipe = Recipe(epochs=3, batch_size=32, lr=5e-3)
    sigmas = {}
    for weight in (0.0, 0.1):
        torch.manual_seed(0)
        model = penalise_stiffness(zoo.create_model("continuousnet", input_shape=task.input_shape, num_classes=10,
                                                    width=8, depth=3), weight)
        train(model, data, task, recipe, device=CPU, seed=0)
        sigmas[weight] = trajectory_diagnostics(model, data.test.inputs()[:32], iterations=10)[0]["jacobian_sigma_max"]
    assert sigmas[0.1] < sigmas[0.0] / 2, sigmas


@pytest.mark.numerics
def test_transfer_error_is_the_mean_accuracy_change_off_the_trained_setting() -> None:
    entries = [_entry("rk4", 4, 0.9, 16, trained=True), _entry("rk4", 2, 0.8, 8), _entry("euler", 8, 0.95, 8),
               _entry("euler", 2, 0.5, 2, failed="non-finite outputs")]
    assert stiffness.transfer_error(entries) == pytest.approx((0.1 + 0.05 + 0.9) / 3)
    with pytest.raises(ValueError, match="only the trained setting"):
        stiffness.transfer_error(entries[:1])


def test_study_command_writes_the_stiffness_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(common, "study_recipe", lambda task: Recipe(epochs=1, batch_size=32, lr=5e-3))
    monkeypatch.setattr(stiffness, "ATTACK_SUBSET", 20)
    monkeypatch.setattr(stiffness, "DIAGNOSTIC_SUBSET", 16)
    code = main(["study", "stiffness", "--seeds", "0", "--limit", "100", "--results", str(tmp_path / "r"),
                 "--out", str(tmp_path / "l")])
    assert code == 0
    study = read_study(tmp_path / "r" / "stiffness" / "digits.json")
    assert set(study["summary"]) == {f"{arm}_{q}" for arm in ("plain", "penalised") for q in (
        "accuracy", "robust_accuracy", "stiffness", "transfer_error")}
    assert study["summary"]["plain_robust_accuracy"]["mean"] <= study["summary"]["plain_accuracy"]["mean"] + 0.1
    assert [row["arm"] for row in study["rows"]] == ["plain", "penalised"]


def test_study_command_writes_the_memory_file_and_figure(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(memory, "STEPS", (2, 6))
    monkeypatch.setattr(memory, "SHAPE", (16, 8, 16, 16))
    code = main(["study", "memory", "--seeds", "0", "--results", str(tmp_path / "r"), "--out", str(tmp_path / "l")])
    assert code == 0
    study = read_study(tmp_path / "r" / "memory" / "ode-state.json")  # no data set: a random state
    summary = study["summary"]
    assert summary["direct_peak_bytes_slope"]["mean"] > summary["adjoint_peak_bytes_slope"]["mean"]
    assert study["details"]["claims"] == ["chen-memory"] and study["details"]["figure_spec"]["x"] == "n_steps"
    assert study["figure"] == f"{(tmp_path / 'l' / 'memory' / 'ode-state').as_posix()}.png"
    assert (tmp_path / "l" / "memory" / "ode-state.png").stat().st_size > 0
    assert len([r for r in study["rows"] if r["kind"] == "sweep"]) == 4
