"""Studies on the cpu tier's weights: ode-robustness (Yan et al.) and adjoint-cost (Chen), with what they share:
one attack of the suite alone (`attacks.attack_accuracy`) and the tier's kept weights (`common.trained_model`)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

import zoo
from benchmarks.evaluation.attacks import attack_accuracy, robustness_suite
from benchmarks.execution.runs import checkpoint_for, checkpoint_identity
from benchmarks.protocols import SMOKE, Recipe
from benchmarks.store.records import record_path
from benchmarks.store.studies import read_study
from benchmarks.studies import adjoint_cost, common, ode_robustness
from benchmarks.training.checkpoint import TrainingCheckpoint
from benchmarks.training.train import seed_everything, train

CPU = torch.device("cpu")
SEEDS = Path(__file__).resolve().parents[2] / "shared" / "seeds"
# The smoke tier's digits at a tiny budget, standing in for the cpu tier.
TINY = dataclasses.replace(
    SMOKE, name="studies-test", tasks=("digits",), models=("resnet", "neural-ode"), seeds=(0,), data_limit=160,
    recipes={"digits": Recipe(epochs=2, batch_size=32, lr=5e-3)},
    evaluation=dataclasses.replace(SMOKE.evaluation, pgd_steps=3, pgd_restarts=2, eval_batch=60))


@pytest.fixture(scope="module")
def digits():
    task, data = common.load("digits", TINY.data_limit)
    return task, data


@pytest.fixture(scope="module")
def resnet(digits):
    task, data = digits
    return common.trained_model("resnet", TINY, task, data, 0, CPU, None)[0]


def test_attack_accuracy_is_the_suites_own_accuracy_of_that_attack(digits, resnet) -> None:
    task, data = digits
    x, y = data.test.inputs()[:60], data.test.y[:60]
    ev = dataclasses.replace(TINY.evaluation, apgd_steps=2, apgd_restarts=1, square_queries=5, autoattack_targets=1)
    suite = robustness_suite(resnet, x, y, eps_grid=(0.1,), headline_eps=None, ev=ev, batch_size=30, seed=0)
    for attack in ("fgsm", "pgd"):
        alone = attack_accuracy(resnet, x, y, attack=attack, eps=0.1, ev=ev, batch_size=30)
        assert alone == suite.metrics[f"{attack}@0.1"], attack
    clean = (resnet(x).argmax(1) == y).float().mean().item()
    assert attack_accuracy(resnet, x, y, attack="fgsm", eps=0.0, ev=ev, batch_size=30) == pytest.approx(clean)
    with pytest.raises(ValueError, match="one white-box attack of the suite"):
        attack_accuracy(resnet, x, y, attack="square", eps=0.1, ev=ev, batch_size=30)


def test_trained_model_takes_the_kept_weights_of_that_run_only(tmp_path, digits) -> None:
    task, data = digits
    recipe = TINY.recipes["digits"]
    store, hashed = tmp_path / "store", TINY.task_hash("digits")
    path = checkpoint_for(record_path(store, "resnet", "digits", hashed, 1))
    path.parent.mkdir(parents=True)
    seed_everything(1)
    kept = zoo.create_model("resnet", input_shape=task.input_shape, num_classes=10, **TINY.model_overrides)
    identity = checkpoint_identity(TINY, "digits", "resnet", 1)
    train(kept, data, task, recipe, device=CPU, seed=1, checkpoint=TrainingCheckpoint(path, identity))
    model, source = common.trained_model("resnet", TINY, task, data, 1, CPU, store)
    assert source == f"weights of {path}"
    for name, value in kept.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    # Another seed's run has no kept weights here: trained, not borrowed.
    assert common.trained_model("resnet", TINY, task, data, 2, CPU, store)[1] == "trained here with the tier's recipe"
    # A later version of the tier that measures more (its own hash) but trains alike takes the same weights; one
    # that trains otherwise does not.
    measures_more = dataclasses.replace(TINY, version=TINY.version + 1,
                                        evaluation=dataclasses.replace(TINY.evaluation, apgd_steps=7))
    assert measures_more.task_hash("digits") != hashed
    assert common.trained_model("resnet", measures_more, task, data, 1, CPU, store)[1] == f"weights of {path}"
    trains_longer = dataclasses.replace(measures_more, recipes={"digits": dataclasses.replace(recipe, epochs=3)})
    assert common.trained_model("resnet", trains_longer, task, data, 1, CPU, store)[1] == \
        "trained here with the tier's recipe"


def test_ode_robustness_pairs_the_arms_on_the_seeds_grid(tmp_path) -> None:
    study = read_study(ode_robustness.run("digits", [0, 1], tmp_path, tier=TINY))
    grid = ["noise50", "noise75", "noise100", "fgsm0.15", "fgsm0.3", "fgsm0.5"]
    expected = {f"{k}_difference" for k in grid} | {f"{arm}_{k}" for arm in ("cnn", "odenet")
                                                     for k in ("accuracy", *grid)}
    assert set(study["summary"]) == expected and study["tier"] == "studies-test"
    rows = {(r["arm"], r["seed"]): r for r in study["rows"]}
    assert {r["model"] for r in study["rows"]} == {"resnet", "neural-ode"}
    for i, seed in enumerate((0, 1)):
        for key in grid:  # per seed, ODE-Net - CNN of that seed's rows: the pairing a claim's interval needs
            difference = rows["odenet", seed][key] - rows["cnn", seed][key]
            assert study["summary"][f"{key}_difference"]["values"][i] == pytest.approx(difference)
            assert study["summary"][f"cnn_{key}"]["values"][i] == rows["cnn", seed][key]
    assert all(0.0 <= row[k] <= 1.0 for row in rows.values() for k in grid)
    assert abs(study["details"]["param_ratio"] - 1) < 0.1  # parameter-matched by the zoo's construction
    assert study["details"]["paper"]["rows"]["002:147"].startswith("ODENet\t98.7")
    assert study["details"]["paper"]["fgsm0.3_difference"] == "18.1"


def test_backward_cost_counts_the_adjoint_solve(digits) -> None:
    task, data = digits
    model = common.trained_model("neural-ode", TINY, task, data, 0, CPU, None)[0]
    x, y = data.test.inputs()[:64], data.test.y[:64]
    cost = adjoint_cost.backward_cost(model, x, y, 32)
    assert cost["batches"] == 2 and cost["forward_nfe"] >= 8 and cost["backward_nfe"] >= 8  # >= 1 dopri5 step each
    assert cost["backward_forward_ratio"] == pytest.approx(cost["backward_nfe"] / cost["forward_nfe"])
    assert not model.solvers[0].adjoint and all(p.grad is None for p in model.parameters())  # the model is untouched
    sweep = adjoint_cost.tolerance_sweep(model, x, y, (1e-1, 1e-5), 32)
    assert sweep[1]["nfe"] > sweep[0]["nfe"]  # tighter tolerance, more steps: the cost is set at test time


def test_adjoint_cost_writes_both_claims_quantities(tmp_path) -> None:
    study = read_study(adjoint_cost.run("digits", [0], tmp_path, tier=TINY, tolerances=(1e-1, 1e-3, 1e-5)))
    summary = study["summary"]
    for tol in ("0.1", "0.001", "1e-05"):
        assert summary[f"nfe_tol{tol}"]["n"] == 1 and 0 <= summary[f"accuracy_tol{tol}"]["mean"] <= 1
    assert summary["test_time_nfe_range"]["mean"] == pytest.approx(summary["nfe_tol1e-05"]["mean"]
                                                                   / summary["nfe_tol0.1"]["mean"])
    ratio = summary["backward_nfe"]["mean"] / summary["forward_nfe"]["mean"]
    assert summary["backward_forward_ratio"]["mean"] == pytest.approx(ratio) and math.isfinite(ratio)
    trained = [r for r in study["rows"] if r["kind"] == "tolerance" and r["trained"]]
    assert [r["tolerance"] for r in trained] == [1e-3]
    with pytest.raises(ValueError, match="must span 1e-1 .. 1e-5"):
        adjoint_cost.run("digits", [0], tmp_path, tier=TINY, tolerances=(1e-2, 1e-3))


@pytest.mark.skipif(not SEEDS.is_dir(), reason="the seeds (talks) are not beside this checkout")
def test_the_quoted_seed_rows_are_verbatim() -> None:
    lines = {}
    for path in SEEDS.glob("*.txt"):
        lines[path.name[:3]] = path.read_text(encoding="utf-8").splitlines()
    for where, text in ode_robustness.PAPER["rows"].items():
        seed, line = where.split(":")
        assert lines[seed][int(line) - 1] == text, where
