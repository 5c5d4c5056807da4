"""The convergence test (Queiruga et al. 2020): order estimate, dip detector, and the command end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmarks.cli import main
from benchmarks.evaluation.convergence import SCHEMES, build, has_dip, observed_order, refined
from benchmarks.reporting.convergence import table

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
    d, e = refined(dts, monotone, 1.0)
    assert d == [0.25, 0.5, 1.0] and observed_order(d, e) == pytest.approx(1.0)
    assert math.isclose(observed_order(dts, [3 * x ** 4 for x in dts]), 4.0)


def test_convergence_command_writes_json_table_and_plot(tmp_path: Path) -> None:
    results, out = tmp_path / "results", tmp_path / "boards"
    code = main(["convergence", "--seeds", "1", "--steps", "3", "--limit", "40",
                 "--results", str(results), "--out", str(out)])
    assert code == 0
    result = json.loads((results / "pendulum.json").read_text())
    assert len(result["curves"]) == len(SCHEMES) ** 2
    assert result["step_counts"] == [64, 32, 16, 8, 4, 2, 1]
    assert all(len(c["rmse"]) == 1 and len(c["rmse"][0]) == 7 for c in result["curves"])
    assert result["provenance"]["device"].startswith("CPU")
    md = (out / "pendulum.md").read_text()
    assert md == table(result)
    assert f"at commit {result['provenance']['git_commit'][:12]}" in md
    assert md.count("\n| ") == 1 + 9  # header + one row per (train, eval) pair
    assert (out / "pendulum.png").stat().st_size > 0 and (out / "pendulum.svg").stat().st_size > 0


def test_convergence_command_rejects_a_bad_step_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convergence", "--n-train", "6", "--results", str(tmp_path)]) != 0
    assert "multiple of 8" in capsys.readouterr().err
