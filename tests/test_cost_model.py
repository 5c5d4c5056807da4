"""The GPU cost model (issue #23): work counted on CPU, calibrated on the reference GPU figures, corrected by
measured sessions; and the committed table the GPU session reads."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from benchmarks import protocols
from benchmarks.cli import main
from benchmarks.execution import cost_model as C
from benchmarks.execution import work as W
from benchmarks.protocols import SMOKE, STANDARD

REPO = Path(__file__).resolve().parents[1]
QUICK_EVAL = dataclasses.replace(SMOKE.evaluation, square_queries=6, apgd_steps=3, pgd_steps=4, pgd_restarts=2,
                                 autoattack_targets=2)


def test_the_calibration_reproduces_the_reference_gpu_figures() -> None:
    calibration = C.calibrate()
    assert 10e-6 < calibration.seconds_per_op < 100e-6 and 0 < calibration.step_overhead < 20e-3
    for check in calibration.checks:  # fitted or not, every reference figure within a quarter
        assert check["predicted"] == pytest.approx(check["reference"], rel=0.25), check


def test_the_stand_in_makes_every_attack_spend_its_whole_budget() -> None:
    calls = W.attack_calls(QUICK_EVAL, (0.05, 0.1, 0.2), 0.1, False)
    for eps in (0.05, 0.1, 0.2):
        assert calls[("pgd", eps, True)] == QUICK_EVAL.pgd_steps  # the first start
        assert calls[("pgd_restart", eps, True)] == QUICK_EVAL.pgd_steps * (QUICK_EVAL.pgd_restarts - 1)
        assert calls[("transfer_resnet", eps, True)] == QUICK_EVAL.pgd_steps
        assert calls[("apgd_dlr", eps, True)] >= QUICK_EVAL.apgd_steps * QUICK_EVAL.apgd_restarts
    assert ("apgd_t", 0.05, True) not in calls, "AutoAttack's components run at the headline radius only"
    more = W.attack_calls(dataclasses.replace(QUICK_EVAL, square_queries=16, autoattack_targets=4),
                          (0.05, 0.1, 0.2), 0.1, False)
    assert more[("square", 0.1, False)] - calls[("square", 0.1, False)] == 10
    per_target = (more[("apgd_t", 0.1, True)] - calls[("apgd_t", 0.1, True)]) / 2  # two targets more
    assert per_target >= QUICK_EVAL.apgd_steps and calls[("apgd_t", 0.1, True)] == 2 * per_target + 1
    stochastic = W.attack_calls(QUICK_EVAL, (0.05, 0.1, 0.2), 0.1, True)
    assert stochastic[("pgd", 0.1, True)] == 8 * calls[("pgd", 0.1, True)], "EOT: eight draws a step"


def test_a_run_is_counted_phase_by_phase() -> None:
    fixed = W.run_items("resnet", "digits", SMOKE)
    assert set(fixed) == {"train", "clean", "latency", "attacks", "noise", "diagnostics", "depth_transfer"}
    recipe = SMOKE.recipes["digits"]
    step = fixed["train"][0]
    assert step.calls == recipe.epochs * (1197 // recipe.batch_size) and step.unit.kind == "train"
    assert not step.unit.adaptive and step.unit.precision == "fp32"
    adaptive = W.run_items("neural-ode", "digits", SMOKE)
    assert adaptive["train"][0].unit.adaptive and "surrogate" in adaptive, "the transfer ResNet is trained once"
    assert any(item.label.startswith("transfer@") for item in adaptive["attacks"]), "the RK4 twin's transfer"
    assert adaptive["train"][0].unit.ops > 3 * step.unit.ops
    regression = W.run_items("resnet", "pendulum", SMOKE)
    assert "attacks" not in regression and "surrogate" not in regression


def test_the_estimate_follows_the_recipe_and_the_pass_model() -> None:
    calibration = C.Calibration(seconds_per_op=20e-6, step_overhead=5e-3)
    base = C.estimate_run("resnet", "digits", SMOKE, calibration)
    longer = dataclasses.replace(SMOKE, recipes={**SMOKE.recipes, "digits": dataclasses.replace(
        SMOKE.recipes["digits"], epochs=2 * SMOKE.recipes["digits"].epochs)})
    assert C.estimate_run("resnet", "digits", longer, calibration).phases["train"] == \
        pytest.approx(2 * base.phases["train"])
    launch_bound = W.Pass(ops=100, flops=1e3, bytes=1e3)
    assert C.pass_seconds(launch_bound, 10, calibration) == pytest.approx(100 * 20e-6)
    compute_bound = W.Pass(ops=1, flops=1e12, bytes=0.0)
    assert C.pass_seconds(compute_bound, 1, calibration) == pytest.approx(1e12 / C.THROUGHPUT["fp32"])
    adaptive = dataclasses.replace(launch_bound, adaptive=True)  # waits on the GPU every step: the two add up
    assert C.pass_seconds(adaptive, 10, calibration) == pytest.approx(
        100 * 20e-6 + C.compute_seconds(adaptive, 10))


def test_measured_sessions_correct_each_phase_by_the_median_ratio() -> None:
    runs = [{"phase_seconds": {"train": t, "attacks": 5.0}, "estimated_phase_seconds": {"train": 10.0}}
            for t in (5.0, 20.0, 30.0)]
    shared = {"phase_seconds": {"train": 99.0}, "estimated_phase_seconds": {"train": 1.0}, "concurrent_runs": 4}
    assert C.corrections([{"runs": [*runs, shared]}]) == {"train": 2.0}  # attacks had no estimate: no factor
    assert C.corrections([]) == {}


def test_the_committed_cost_table_is_the_current_standard_tiers() -> None:
    table = json.loads((REPO / "docs/gpu-cost-model.json").read_text())
    assert table["tier"] == "standard" and table["version"] == STANDARD.version
    assert table["hashes"] == {t: STANDARD.task_hash(t) for t in STANDARD.tasks}, \
        "the standard tier changed: regenerate with `depthbench device cost`"
    assert {(r["task"], r["model"]) for r in table["runs"]} == {(t, m) for t in STANDARD.tasks
                                                                  for m in STANDARD.models}
    assert (REPO / "docs/gpu-cost-model.md").read_text().startswith("# GPU cost model: tier standard")


def test_the_cost_command_writes_both_files(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(protocols.PROTOCOLS, "smoke", dataclasses.replace(SMOKE, tasks=("digits",),
                                                                           models=("resnet", "inresnet")))
    assert main(["device", "cost", "--tier", "smoke", "--out", str(tmp_path / "cost")]) == 0
    table = json.loads((tmp_path / "cost.json").read_text())
    assert [r["model"] for r in table["runs"]] == ["resnet", "inresnet"]
    assert "| digits | inresnet |" in (tmp_path / "cost.md").read_text()
