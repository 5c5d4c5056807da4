"""`depthbench check`: every registered model against the contract, at tiny sizes; the CLI subcommand."""

from __future__ import annotations

import pytest
import torch

import zoo
from benchmarks.cli import main
from benchmarks.evaluation.check import check_model

TINY = {"width": 8, "depth": 2}


@pytest.mark.parametrize("name", zoo.list_models())
def test_every_registered_model_passes_the_check(name: str) -> None:
    report = check_model(name, ["digits", "pendulum"], TINY)
    assert report.ok, report.text()
    assert sum(c.scope == "card" for c in report.checks) == 1
    assert {c.scope for c in report.checks} >= {"digits (1, 8, 8)", "pendulum (2,)", "card"}


def test_the_check_builds_every_task_input_shape() -> None:
    report = check_model("resnet", None, TINY)
    scopes = {c.scope for c in report.checks}
    assert "cifar10, cifar10-jpeg (3, 32, 32)" in scopes and "pendulum (2,)" in scopes
    assert any(s.startswith("fashion-mnist") and s.endswith("(1, 28, 28)") for s in scopes)
    assert report.ok, report.text()


def test_the_state_dict_round_trip_catches_keys_added_by_a_forward(monkeypatch) -> None:
    """What the check reports for state born in forward (adaptive models once leaked their NFE counter so)."""
    original = zoo.DepthModel.forward

    def leaky(self, x):
        self.register_buffer("leak", torch.ones(1))  # state born in forward: the same mistake as `_counter`
        return original(self, x)

    monkeypatch.setattr(zoo.DepthModel, "forward", leaky)
    report = check_model("resnet", ["pendulum"], TINY)
    (failure,) = report.failures
    assert failure.name == "state_dict round trip"
    assert "state_dict gains 1 key(s) after a forward (e.g. leak)" in failure.detail


def test_undeclared_batch_coupling_fails_and_declared_passes(monkeypatch) -> None:
    original = zoo.DepthModel.forward

    def coupled(self, x):
        out = original(self, x)
        return out - out.mean(dim=0, keepdim=True)  # each output depends on the whole batch

    monkeypatch.setattr(zoo.DepthModel, "forward", coupled)
    failed = {c.name: c.detail for c in check_model("resnet", ["pendulum"], TINY).failures}
    assert "declare it with `batch_coupled = True`" in failed["batch invariance (or declared coupling)"]
    monkeypatch.setattr(zoo.DepthModel, "batch_coupled", True)
    report = check_model("resnet", ["pendulum"], TINY)
    assert report.ok, report.text()


def test_check_cli_prints_the_report_and_sets_the_exit_code(capsys) -> None:
    assert main(["check", "inresnet", "--task", "pendulum"]) == 0
    out = capsys.readouterr().out
    assert "depthbench check inresnet: PASS" in out and "[pendulum (2,)] state_dict round trip" in out
    assert main(["check", "resnet-9000"]) == 2
    assert "unknown model 'resnet-9000'" in capsys.readouterr().err


def test_randomness_in_eval_fails_unless_declared_stochastic_and_seed_reproducible(monkeypatch) -> None:
    original = zoo.DepthModel.forward

    def noisy(self, x):
        out = original(self, x)
        return out + torch.randn_like(out)  # from torch's global RNG: a seed fixes it

    monkeypatch.setattr(zoo.DepthModel, "forward", noisy)
    failed = {c.name: c.detail for c in check_model("resnet", ["pendulum"], TINY).failures}
    assert "declares `stochastic = True`" in failed["deterministic eval forward"]
    monkeypatch.setattr(zoo.DepthModel, "stochastic", True, raising=False)
    report = check_model("resnet", ["pendulum"], TINY)
    assert report.ok, report.text()
    checks = {c.name: c.detail for c in report.checks}
    assert "declared stochastic" in checks["deterministic eval forward"]
    assert "not judged" in checks["batch invariance (or declared coupling)"]

    private = torch.Generator().manual_seed(0)

    def unseedable(self, x):
        out = original(self, x)
        return out + torch.randn(out.shape, generator=private)  # a private stream: no global seed repeats it

    monkeypatch.setattr(zoo.DepthModel, "forward", unseedable)
    failed = {c.name: c.detail for c in check_model("resnet", ["pendulum"], TINY).failures}
    assert "must draw from torch's global RNG" in failed["deterministic eval forward"]
