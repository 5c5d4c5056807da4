"""The studies of issues #15 and #22 (benchmarks/studies/): the hooks they add to the engine, their measurements on
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


def test_refinement_stages_split_the_epochs_the_deepest_last() -> None:
    assert refinement.stage_epochs(10) == [2, 2, 3, 3] and refinement.refine_epochs([2, 2, 3, 3]) == [3, 5, 8]
    assert refinement.stage_epochs(4) == [1, 1, 1, 1] and refinement.refine_epochs([1, 1, 1, 1]) == [2, 3, 4]
    with pytest.raises(ValueError, match="cannot give each of 4 stages an epoch"):
        refinement.stage_epochs(3)


def test_refined_epochs_are_the_most_that_fit_the_full_arms_time() -> None:
    per_epoch = [1.0, 2.0, 4.0, 8.0]  # seconds of an epoch at 1, 2, 4, 8 steps
    epochs, predicted = refinement.epochs_that_fit(60.0, per_epoch, cap=40)
    assert predicted <= 60.0 and predicted == sum(n * s for n, s in zip(refinement.stage_epochs(epochs), per_epoch))
    assert refinement.epochs_that_fit(60.0, per_epoch, cap=40)[0] == epochs
    more = refinement.stage_epochs(epochs + 1)
    assert sum(n * s for n, s in zip(more, per_epoch)) > 60.0  # one epoch more would not fit
    assert refinement.epochs_that_fit(1.0, per_epoch, cap=40)[0] == 4  # at least one epoch per stage
    assert refinement.epochs_that_fit(1e9, per_epoch, cap=12)[0] == 12  # never past the cap


def test_time_to_target_is_the_first_epoch_that_reaches_it() -> None:
    marks = [(0.80, 10.0), (0.86, 20.0), (0.85, 30.0), (0.90, 40.0)]
    assert refinement.time_to_target(marks, 0.85) == 20.0
    assert refinement.time_to_target(marks, 0.95) is None


def test_study_command_writes_the_refinement_file_and_table(tmp_path, monkeypatch) -> None:
    # Two epochs for the full arm on 200 examples per split: the command and the bookkeeping, not the result.
    monkeypatch.setattr(common, "study_recipe", lambda task: Recipe(epochs=2, batch_size=32, lr=5e-3))
    code = main(["study", "refinement", "--task", "digits", "--seeds", "0", "1", "--limit", "200", "--results",
                 str(tmp_path / "r"), "--out", str(tmp_path / "l")])
    assert code == 0
    study = read_study(tmp_path / "r" / "refinement" / "digits.json")
    assert study["seeds"] == [0, 1] and study["details"]["claims"] == ["queiruga-refinement"]
    summary = study["summary"]
    assert set(summary) == {"full_accuracy", "refined_accuracy", "accuracy_difference", "time_to_target_ratio",
                            "full_train_seconds", "refined_train_seconds"}
    rows = {(row["arm"], row["seed"]): row for row in study["rows"]}
    assert set(rows) == {(arm, seed) for arm in ("full", "refined") for seed in (0, 1)}
    for i, seed in enumerate((0, 1)):
        full, refined = rows[("full", seed)], rows[("refined", seed)]
        assert summary["full_accuracy"]["values"][i] == full["accuracy"]  # paired per seed, in seed order
        assert summary["accuracy_difference"]["values"][i] == pytest.approx(refined["accuracy"] - full["accuracy"])
        assert summary["refined_train_seconds"]["values"][i] == refined["train_seconds"] > 0
        assert full["final_steps"] == refined["final_steps"] == 8 and full["epochs"] == 2
        assert refined["steps_schedule"] == "1 -> 2 -> 4 -> 8" and refined["epochs"] >= 4
        # equal training time: the refined arm's schedule was sized to fit the full arm's measured time
        assert refined["epochs"] == 4 or refined["predicted_seconds"] <= full["train_seconds"]
        assert full["reached_target"] and full["target"] == pytest.approx(full["final_val"] - 0.01)
        hit = refined["time_to_target"] if refined["reached_target"] else refined["train_seconds"]
        assert summary["time_to_target_ratio"]["values"][i] == pytest.approx(hit / full["time_to_target"])
    table = (tmp_path / "l" / "refinement" / "digits.md").read_text()
    assert "time_to_target_ratio" in table and "1 -> 2 -> 4 -> 8" in table
    assert (tmp_path / "l" / "refinement" / "digits.csv").read_text().startswith("arm,")


def test_study_command_refuses_an_unknown_task(capsys) -> None:
    assert main(["study", "refinement", "--task", "pendulum"]) == 2
    assert "the studies run on digits" in capsys.readouterr().err


def _entry(scheme: str, steps: int, acc: float, nfe: int, trained: bool = False, **extra) -> dict:
    return {"scheme": scheme, "n_steps": steps, "accuracy": acc, "nfe": nfe, "trained": trained, **extra}


def test_fewest_steps_is_the_fewest_same_scheme_steps_within_half_a_point_on_validation() -> None:
    rk4 = {compression.Setting("rk4", k): acc for k, acc in ((8, 0.900), (6, 0.897), (4, 0.894), (2, 0.96))}
    val = {**rk4, compression.Setting("euler", 1): 0.95}
    assert compression.fewest_steps(val, compression.Setting("rk4", 8)) == compression.Setting("rk4", 2)
    val[compression.Setting("rk4", 2)] = 0.5
    # 4 steps are 0.6 pt below: not within; another scheme never counts as fewer steps
    assert compression.fewest_steps(val, compression.Setting("rk4", 8)) == compression.Setting("rk4", 6)
    assert compression.fewest_steps({compression.Setting("rk4", 8): 0.9}, compression.Setting("rk4", 8)).steps == 8


def test_cheapest_other_stops_at_the_first_nfe_level_that_qualifies() -> None:
    val = {("euler", 1): 0.5, ("midpoint", 1): 0.894, ("euler", 2): 0.897, ("euler", 3): 0.899,
           ("rk4_38", 1): 0.95, ("euler", 4): 0.95}
    scored = []

    def score(setting: compression.Setting) -> float:
        scored.append(setting)
        return val.get((setting.scheme, setting.steps), 0.0)

    candidates = [compression.Setting(s, k) for s in compression.OTHER_SCHEMES for k in compression.OTHER_STEPS]
    best, scores = compression.cheapest_other(candidates, score, reference=0.9)
    # NFE 1: euler x1 fails; NFE 2: euler x2 (0.897) qualifies, midpoint x1 (0.894) does not: the search ends there
    assert best == compression.Setting("euler", 2) and best.nfe == 2
    assert set(scored) == set(scores) == {compression.Setting("euler", 1), compression.Setting("euler", 2),
                                          compression.Setting("midpoint", 1)}
    assert compression.Setting("rk4_38", 1).nfe == 4 and compression.Setting("midpoint", 3).nfe == 6
    nothing, scores = compression.cheapest_other(candidates[:3], lambda s: 0.0, reference=0.9)
    assert nothing is None and len(scores) == 3


def test_compression_chooses_on_validation_only(monkeypatch) -> None:
    # The same training with the test labels scrambled: every choice (and validation score) must be the same,
    # only the test columns may change.
    monkeypatch.setattr(compression, "THROUGHPUT_ROUNDS", 1)
    start = common.begin("digits", [0], None, 200)
    start = start._replace(recipe=Recipe(epochs=2, batch_size=32, lr=5e-3))
    scrambled = dataclasses.replace(start.data, test=dataclasses.replace(
        start.data.test, y=start.data.test.y[torch.randperm(len(start.data.test), generator=torch.Generator()
                                                            .manual_seed(1))]))
    plain, other = compression.one_seed(start, 0), compression.one_seed(start._replace(data=scrambled), 0)
    choices = [(r["setting"], r["chosen_as"], r["val_accuracy"]) for r in plain["rows"]]
    assert choices == [(r["setting"], r["chosen_as"], r["val_accuracy"]) for r in other["rows"]]
    assert plain["values"]["trained_accuracy"] != other["values"]["trained_accuracy"]


def test_study_command_writes_the_compression_file_with_the_papers_column(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(common, "study_recipe", lambda task: Recipe(epochs=2, batch_size=32, lr=5e-3))
    monkeypatch.setattr(compression, "THROUGHPUT_ROUNDS", 2)
    code = main(["study", "compression", "--task", "digits", "--seeds", "0", "--limit", "200", "--results",
                 str(tmp_path / "r"), "--out", str(tmp_path / "l")])
    assert code == 0
    study = read_study(tmp_path / "r" / "compression" / "digits.json")
    summary = study["summary"]
    assert set(summary) == {"fewer_steps_drop", "fewer_steps_nfe_ratio", "fewer_steps_speedup",
                            "cheaper_scheme_drop", "cheaper_scheme_nfe_ratio", "cheaper_scheme_speedup",
                            "trained_accuracy", "resnet_accuracy"}
    rows = study["rows"]
    chosen = {arm: row for row in rows for arm in (row["chosen_as"] or "").split("+")}
    trained = chosen["trained"]
    assert (trained["setting"], trained["nfe"]) == ("rk4 x8", 32)
    for arm in ("fewer_steps", "cheaper_scheme"):
        row = chosen[arm]
        assert row["val_accuracy"] >= trained["val_accuracy"] - 0.005  # chosen within 0.5 pt on validation
        assert summary[f"{arm}_nfe_ratio"]["values"] == [32 / row["nfe"]]
        assert summary[f"{arm}_drop"]["values"] == [pytest.approx(trained["test_accuracy"] - row["test_accuracy"])]
        speedup = 1.0 if row is trained else row["images_per_second"] / trained["images_per_second"]
        assert summary[f"{arm}_speedup"]["values"] == [pytest.approx(speedup)]
    assert chosen["fewer_steps"]["scheme"] == "rk4" and chosen["fewer_steps"]["steps"] <= 8
    assert chosen["cheaper_scheme"]["scheme"] in ("euler", "midpoint", "rk4_38") or chosen["cheaper_scheme"] is trained
    assert all(r["test_accuracy"] is None for r in rows if r["chosen_as"] is None)  # test only for the chosen
    assert rows[-1]["scheme"] == "resnet" and summary["resnet_accuracy"]["values"] == [rows[-1]["test_accuracy"]]
    table = (tmp_path / "l" / "compression" / "digits.md").read_text()
    assert "Queiruga et al. 2020 (seed 000:486-493" in table and "RK4-3/8 6-6-6 92.28% 6.25 s" in table


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
