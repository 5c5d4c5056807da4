"""The citable `cpu` tier (issue #25): its definition, and a tiny-sized run of it on real Fashion-MNIST."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import zoo
from benchmarks.cli import main
from benchmarks.data.tasks import DataMissingError, get_task
from benchmarks.evaluation import attacks
from benchmarks.execution.runner import run_tier
from benchmarks.protocols import CPU, PROTOCOLS, SMOKE, tier_citable
from benchmarks.store.records import iter_records
from benchmarks.studies import suite_strength
from benchmarks.suite import ATTACK_SUITE, Radii

from data_on_disk import skip_or_fail


def test_the_tier_is_citable_real_and_sized_as_the_issue_asks() -> None:
    assert CPU.tasks == ("fashion-mnist",) and CPU.device == "cpu" and len(CPU.seeds) == 3
    assert CPU.citable and tier_citable("cpu") and CPU.rank < SMOKE.rank
    assert CPU.data_limit is None  # the whole 10,000-image test set for clean accuracy, 28x28 inputs
    assert set(CPU.models) >= set(zoo.list_models()) - {m for m in zoo.list_models()
                                                         if zoo.registry.model_distribution(m)}  # every model
    ev = CPU.evaluation
    low, high = attacks.wilson_interval(ev.attack_subset // 2, ev.attack_subset)
    assert ev.attack_subset >= 1100 and (high - low) / 2 <= 0.03  # every robust accuracy within +-3 points
    # Every attack family of the suite runs, each with a real budget (the headline radius: AutoAttack's parts).
    assert ev.pgd_steps >= 10 and ev.pgd_restarts >= 2 and ev.apgd_steps >= 10 and ev.square_queries >= 100
    assert ev.autoattack_targets >= 1 and get_task("fashion-mnist").headline_eps in get_task("fashion-mnist").attack_eps
    assert {a.method for a in ATTACK_SUITE if a.radii is Radii.HEADLINE} >= {"apgd", "apgd_t", "fab_t", "square"}
    for budget, full in suite_strength.FULL_BUDGETS.items():
        assert getattr(ev, budget) <= full  # reduced from full strength, checked by the suite-strength study
    assert "2-core" in CPU.description and "run-hours" in CPU.description  # what it costs, on which machine


def test_adding_the_tier_orphans_no_record_of_another() -> None:
    without = {name: p.hashes() for name, p in PROTOCOLS.items() if name != "cpu"}
    assert without["smoke"] == SMOKE.hashes()  # a tier's hashes depend on that tier alone
    assert not set(CPU.hashes().values()) & {h for hashes in without.values() for h in hashes.values()}


TINY_CPU = dataclasses.replace(
    CPU, name="cpu-toy", seeds=(0,), data_limit=80,
    recipes={"fashion-mnist": dataclasses.replace(CPU.recipes["fashion-mnist"], epochs=1, batch_size=16,
                                                  max_train=None)},
    model_overrides={"width": 4, "depth": 1},
    evaluation=dataclasses.replace(CPU.evaluation, attack_subset=12, transfer_subset=12, diagnostic_subset=4,
                                   latency_repeats=2, throughput_batch=8, eval_batch=40, pgd_steps=2,
                                   pgd_restarts=2, apgd_steps=2, apgd_restarts=1, square_queries=4,
                                   autoattack_targets=1, transfer_tolerances=(1e-2,)),
)


@pytest.mark.slow
def test_a_tiny_run_of_the_tier_gives_citable_tables_with_their_n(tmp_path, monkeypatch) -> None:
    try:
        get_task("fashion-mnist").check()
    except DataMissingError as error:
        skip_or_fail(f"Fashion-MNIST is missing: {error}")
    monkeypatch.setenv("DEPTHBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(PROTOCOLS, "cpu-toy", dataclasses.replace(TINY_CPU))  # rank/citability looked up by name
    results = tmp_path / "results"
    summary = run_tier(TINY_CPU, models=["resnet", "neural-ode"], results_dir=results, device=torch.device("cpu"),
                       progress=False)
    assert len(summary.written) == 2 and not summary.failed
    records = {r.model: r for _, r in iter_records(results)}
    for record in records.values():
        assert record.protocol["hash"] == TINY_CPU.task_hash("fashion-mnist")
        assert record.history and record.history[-1]["epoch"] == 1  # the training curve: is it a plateau?
        assert "load_average" in record.provenance
        for spec in ATTACK_SUITE:  # every attack family ran (its metric at the headline radius)
            if spec.name == "transfer_resnet" and record.model == "resnet":
                continue
            if spec.name == "transfer" and record.model != "neural-ode":
                continue
            assert f"{spec.name}@0.1" in record.metrics, spec.name
    out = tmp_path / "boards"
    assert main(["leaderboard", "--results", str(results), "--out", str(out), "--readme", str(tmp_path / "R.md"),
                 "--citation", str(tmp_path / "C.cff")]) == 0
    table = (out / "cpu-toy" / "fashion-mnist.md").read_text(encoding="utf-8")
    assert "**Citable:** yes" in table and "Pipeline check" not in table
    rows = [line.split("|") for line in table.splitlines() if line.startswith("| ") and "/seed0.json" in line]
    assert len(rows) == 2 and all(row[3].strip() == "1" for row in rows)  # a partly run tier: each row's n
