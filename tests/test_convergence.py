"""The convergence test (Queiruga et al. 2020): order estimate, dip detector, and the command end to end."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmarks.cli import main
from benchmarks.data.tasks import Split, get_task
from benchmarks.reporting.convergence import table, verdict
from benchmarks.store.studies import read_study
from benchmarks.studies import convergence
from benchmarks.studies.convergence import (
    HORIZON_STEPS,
    SCHEMES,
    PendulumRate,
    build,
    has_dip,
    horizon_pairs,
    observed_order,
    order_above_floor,
    own_scheme_sweep,
    step_counts,
)

pytestmark = pytest.mark.numerics  # float comparisons: run again under each lower CPU capability (cpu_capabilities.py)

A = torch.tensor([[-0.1, 1.0], [-1.0, -0.1]], dtype=torch.float64)  # damped rotation: x(t) = expm(A t) x0


class Linear(nn.Module):
    def forward(self, t: float, x: torch.Tensor, interval: object = None) -> torch.Tensor:
        return x @ A.T


@pytest.mark.parametrize(("scheme", "order"), [("euler", 1), ("midpoint", 2), ("rk4", 4)])
def test_observed_order_recovers_the_scheme_order_on_an_exact_linear_ode(scheme: str, order: int) -> None:
    x0 = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact = x0 @ torch.linalg.matrix_exp(A * 1.0).T
    counts = [8, 16, 32, 64]
    errors = [float((build(Linear(), scheme, n, t1=1.0)(x0) - exact).square().mean().sqrt()) for n in counts]
    assert observed_order([1.0 / n for n in counts], errors) == pytest.approx(order, abs=0.15)


def test_dip_detector_flags_a_dip_and_not_a_monotone_curve() -> None:
    dts = [0.25, 0.5, 1.0, 2.0, 4.0]
    monotone = [d ** 1 for d in dts]
    dipped = [0.5, 0.3, 0.1, 0.4, 0.9]  # lowest at the training Δt = 1, higher when refined
    assert has_dip(dts, dipped, 1.0)
    assert not has_dip(dts, monotone, 1.0)
    assert not has_dip(dts, [0.104, 0.103, 0.1, 0.2, 0.4], 1.0)  # a rise below the margin is no dip
    with pytest.raises(ValueError, match="Δt/4"):
        has_dip(dts, monotone, 0.25)
    assert math.isclose(observed_order(dts, [3 * x ** 4 for x in dts]), 4.0)


def test_order_is_fitted_only_above_the_fitting_floor() -> None:
    dts = [1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0, 2.0, 4.0]
    floor = 1e-3
    errors = [max(0.01 * d ** 2, floor) for d in dts]  # order 2 down to a floor of 1e-3
    assert observed_order(dts, errors) < 1.5  # the whole sweep: the floor bends the slope
    assert order_above_floor(dts, errors, floor) == pytest.approx(2.0)  # Δt = 1, 2, 4 only
    assert order_above_floor(dts, errors, floor, factor=4.0, min_points=4) is None


def test_verdict_reads_dips_orders_and_plateaus() -> None:
    dip = {"dip": [True, True, False], "order": [None, None, None]}
    conv = {"dip": [False] * 3, "order": [0.97, 1.02, 0.99]}
    slow = {"dip": [False] * 3, "order": [0.4, 0.5, 0.45]}
    flat = {"dip": [False] * 3, "order": [None, None, 1.0]}
    assert verdict(dip, 1).startswith("dip")
    assert verdict(conv, 1) == "converges at order ≈ 1"
    assert verdict(slow, 1).startswith("converges, order 0.45")
    assert verdict(flat, 4).startswith("plateau")


def test_horizon_pairs_chain_the_trajectories() -> None:
    # two trajectories 0 -> 1 -> 2 -> 3 and 10 -> 11 -> 12, stored as consecutive pairs
    x = torch.tensor([[0.0, 0], [1, 0], [2, 0], [10, 0], [11, 0]])
    y = torch.tensor([[1.0, 0], [2, 0], [3, 0], [11, 0], [12, 0]])
    hx, hy = horizon_pairs(Split(x, y), 2)
    assert hx[:, 0].tolist() == [0, 1, 10] and hy[:, 0].tolist() == [2, 3, 12]
    with pytest.raises(ValueError, match="--limit"):
        horizon_pairs(Split(x, y), 4)


def test_convergence_command_writes_study_table_and_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(convergence, "ITERATIONS", 60)  # the file, not the fit: 18 trainings in seconds
    results, out = tmp_path / "results", tmp_path / "boards"
    code = main(["study", "convergence", "--seeds", "0", "1", "--limit", "60",
                 "--results", str(results), "--out", str(out)])
    assert code == 0
    study = read_study(results / "convergence" / "pendulum.json")
    assert study["study"] == "convergence" and study["task"] == "pendulum" and study["seeds"] == [0, 1]
    result = study["details"]
    assert len(result["curves"]) == len(SCHEMES) ** 2
    assert result["step_counts"] == [64, 32, 16, 8, 4, 2, 1] and result["n_trains"] == [1, 2, 4]
    assert all(len(c["rmse"]) == 2 and len(c["rmse"][0]) == 7 for c in result["curves"])
    # one row per (train scheme, training Δt, seed), each with the quantities the claim reads
    assert len(study["rows"]) == len(SCHEMES) * 3 * 2
    assert {(r["train_scheme"], r["n_train"], r["seed"]) for r in study["rows"]} == {
        (s, n, seed) for s in SCHEMES for n in (1, 2, 4) for seed in (0, 1)}
    for row in study["rows"]:
        assert row["trunc_over_fit"] == pytest.approx(row["truncation"] / row["fit"])
        assert row["train_dt"] == pytest.approx(1.0 / row["n_train"])
    summary = study["summary"]
    for scheme in SCHEMES:
        for dt in ("1", "0.5", "0.25"):
            for quantity in ("dip_ratio", "trunc_over_fit"):
                assert summary[f"{scheme}/dt{dt}/{quantity}"]["n"] == 2
    rows = {(r["train_scheme"], r["n_train"], r["seed"]): r for r in study["rows"]}
    assert summary["rk4/dt1/dip_ratio"]["values"] == [rows[("rk4", 1, s)]["dip_ratio"] for s in (0, 1)]  # seed order
    # the models of Δt 0.25 are the cross-scheme evaluation's: their own-scheme dip ratio is that curve's
    assert summary["rk4/dt0.25/dip_ratio"]["values"] == pytest.approx(summary["rk4/rk4/dip_ratio"]["values"])
    assert summary["euler/euler/dip"]["n"] == 2 and summary["rk4/floor"]["values"] == result["floors"]["rk4"]
    assert study["provenance"]["device"].startswith("CPU")
    assert study["provenance"]["command"]  # the command as retyped (sys.argv under the CLI)
    assert study["details"]["title"].startswith("Convergence test")
    assert study["details"]["claims"] == ["queiruga-dip"]
    assert study["details"]["figure_spec"]["x"] == "trunc_over_fit"
    out = out / "convergence"
    md = (out / "pendulum.md").read_text()
    assert md == table(study)
    assert f"at commit {study['provenance']['git_commit'][:12]}" in md
    assert md.count("\n| ") == (1 + 9) + (1 + 9)  # header + one row per (train, eval) pair; per (scheme, Δt)
    for name in ("pendulum.png", "pendulum.svg", "pendulum-dip.png", "pendulum-dip.svg"):
        assert (out / name).stat().st_size > 0


def test_truncation_error_is_the_scheme_on_the_true_rate() -> None:
    # The pendulum's true rate through each scheme at Δt = 1, 0.5, 0.25 (horizon 1): the error against the task's
    # exact flow falls at the scheme's order (it is truncation error, nothing fitted), RK4's far below Euler's.
    x, y = horizon_pairs(get_task("pendulum").load(limit=200).test, HORIZON_STEPS)
    for scheme, order in (("euler", 1), ("midpoint", 2), ("rk4", 4)):
        errors = [float((build(PendulumRate(), scheme, n, t1=1.0)(x.double()) - y).square().mean().sqrt())
                  for n in (4, 8, 16)]
        assert observed_order([1 / 4, 1 / 8, 1 / 16], errors) == pytest.approx(order, abs=0.3), (scheme, errors)


def test_own_scheme_sweep_reads_fit_truncation_and_dip_at_its_training_dt() -> None:
    # The true rate as the "trained" model: its fit is the truncation error, so trunc_over_fit is exactly 1, and
    # Euler's error falls when refined (no dip: ratio < 1).
    x, y = horizon_pairs(get_task("pendulum").load(limit=200).test, HORIZON_STEPS)
    entry = own_scheme_sweep(PendulumRate(), "euler", 2, 0, 1.0, x.double(), y.double())
    assert step_counts(2) == [32, 16, 8, 4, 2, 1] and step_counts(1) == [16, 8, 4, 2, 1]
    assert entry["dts"] == [1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0]
    assert entry["fit"] == entry["truncation"] and entry["trunc_over_fit"] == 1.0
    assert entry["dip_ratio"] == entry["rmse"][entry["dts"].index(1 / 8)] / entry["fit"] < 0.5


def test_convergence_command_rejects_another_task(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["study", "convergence", "--task", "digits", "--results", str(tmp_path)]) != 0
    assert "pendulum" in capsys.readouterr().err
