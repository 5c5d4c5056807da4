"""The convergence test (Queiruga et al. 2020): order estimate, dip detector, and the command end to end."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmarks.cli import main
from benchmarks.data.tasks import Split
from benchmarks.reporting.convergence import table, verdict
from benchmarks.store.studies import read_study
from benchmarks.studies.convergence import SCHEMES, build, has_dip, horizon_pairs, observed_order, order_above_floor

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


def test_convergence_command_writes_study_table_and_plot(tmp_path: Path) -> None:
    results, out = tmp_path / "results", tmp_path / "boards"
    code = main(["study", "convergence", "--seeds", "0", "1", "--limit", "60",
                 "--results", str(results), "--out", str(out)])
    assert code == 0
    study = read_study(results / "convergence" / "pendulum.json")
    assert study["study"] == "convergence" and study["task"] == "pendulum" and study["seeds"] == [0, 1]
    result = study["details"]
    assert len(result["curves"]) == len(SCHEMES) ** 2 and len(study["rows"]) == 9
    assert result["step_counts"] == [64, 32, 16, 8, 4, 2, 1]
    assert all(len(c["rmse"]) == 2 and len(c["rmse"][0]) == 7 for c in result["curves"])
    summary = study["summary"]
    assert summary["euler/euler/dip"]["n"] == 2 and summary["rk4/rk4/dip_ratio"]["n"] == 2
    assert summary["rk4/floor"]["values"] == result["floors"]["rk4"]
    assert study["provenance"]["device"].startswith("CPU")
    assert study["provenance"]["command"]  # the command as retyped (sys.argv under the CLI)
    assert study["details"]["title"].startswith("Convergence test") and study["details"]["claims"] == ["queiruga-dip"]
    out = out / "convergence"
    md = (out / "pendulum.md").read_text()
    assert md == table(study)
    assert f"at commit {study['provenance']['git_commit'][:12]}" in md
    assert md.count("\n| ") == 1 + 9  # header + one row per (train, eval) pair
    assert (out / "pendulum.png").stat().st_size > 0 and (out / "pendulum.svg").stat().st_size > 0


def test_convergence_command_rejects_another_task(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["study", "convergence", "--task", "digits", "--results", str(tmp_path)]) != 0
    assert "pendulum" in capsys.readouterr().err
