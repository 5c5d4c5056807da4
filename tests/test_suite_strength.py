"""The check behind the cpu tier's reduced attack budgets (benchmarks/studies/suite_strength.py), on tiny sizes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from benchmarks.execution import runner
from benchmarks.protocols import CPU, SMOKE, STANDARD, Evaluation, Recipe
from benchmarks.store.studies import read_study
from benchmarks.studies import suite_strength

# The smoke tier's digits at a tiny budget; its "full strength" is the standard tier's (AutoAttack's) budgets.
TINY = dataclasses.replace(
    SMOKE, name="suite-test", tasks=("digits",), models=("resnet",), seeds=(0,), data_limit=300,
    recipes={"digits": Recipe(epochs=2, batch_size=32, lr=5e-3)},
    evaluation=Evaluation(attack_subset=30, pgd_steps=2, pgd_restarts=1, apgd_steps=2, apgd_restarts=1,
                          square_queries=5, autoattack_targets=1, transfer_subset=30, transfer_factors=(1.0,),
                          transfer_schemes=("euler",), transfer_tolerances=(1e-2,), latency_repeats=2,
                          throughput_batch=16, eval_batch=100, diagnostic_subset=8, track_points=2,
                          jacobian_iterations=2))
# Stronger than TINY in every budget, yet cheap: stands in for the standard tier's AutoAttack budgets.
STRONGER = dataclasses.replace(TINY, evaluation=dataclasses.replace(
    TINY.evaluation, pgd_steps=6, pgd_restarts=2, apgd_steps=4, apgd_restarts=2, square_queries=20,
    autoattack_targets=2))
STRONGER_BUDGETS = {k: getattr(STRONGER.evaluation, k) for k in suite_strength.BUDGETS}


def test_full_strength_is_the_tiers_evaluation_with_autoattacks_budgets() -> None:
    full = suite_strength.full_strength(CPU)
    for budget in suite_strength.BUDGETS:
        assert getattr(full, budget) == suite_strength.FULL_BUDGETS[budget] == getattr(Evaluation(), budget)
        assert getattr(CPU.evaluation, budget) <= getattr(full, budget)  # the tier only ever reduces
        assert getattr(STANDARD.evaluation, budget) <= getattr(full, budget)
    assert suite_strength.FULL_BUDGETS == {"pgd_steps": 50, "pgd_restarts": 5, "apgd_steps": 100, "apgd_restarts": 5,
                                           "square_queries": 5000, "autoattack_targets": 9}  # AutoAttack's standard
    assert full.attack_subset == CPU.evaluation.attack_subset and full.eval_batch == CPU.evaluation.eval_batch


@pytest.mark.slow
def test_the_check_reuses_kept_weights_and_compares_both_budgets(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DEPTHBENCH_CACHE", str(tmp_path / "cache"))
    store = tmp_path / "store"
    summary = runner.run_tier(TINY, results_dir=store, device=torch.device("cpu"), progress=False,
                              keep_checkpoints=True)
    assert len(summary.written) == 1
    path = suite_strength.run("digits", [0], tmp_path / "results", checkpoints=store, models=("resnet",),
                              examples=24, tier=TINY, full_budgets=STRONGER_BUDGETS)
    study = read_study(path)
    assert study["study"] == "suite-strength" and study["tier"] == "suite-test"
    rows = study["rows"]
    assert [r["eps"] for r in rows] == [0.05, 0.1, 0.2] and all("weights of" in r["weights"] for r in rows)
    for row in rows:  # same examples, same seeds: the stronger budget can only break more (or as many)
        assert row["full"] <= row["reduced"] + 1e-12
        assert row["within_tolerance"] == (row["difference"] <= suite_strength.TOLERANCE + 1e-12)
    assert study["details"]["passed"] == all(r["within_tolerance"] for r in rows)
    assert study["details"]["full_budgets"]["pgd_steps"] == STRONGER.evaluation.pgd_steps
    # Without kept weights the check trains the model itself, exactly as the tier would.
    again = read_study(suite_strength.run("digits", [0], tmp_path / "again", models=("resnet",), examples=24,
                                          tier=TINY, full_budgets=STRONGER_BUDGETS))
    assert [r["reduced"] for r in again["rows"]] == [r["reduced"] for r in rows]
    assert "trained here" in again["rows"][0]["weights"]
