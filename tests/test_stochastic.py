"""Models whose eval forward is random (`stochastic = True`, zoo/contract.py): reproducible records under fixed
seeds, attacks by expectation over draws, the record flagged and the tables saying so."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn

import zoo
from benchmarks.data.tasks import Task, TaskData, get_task
from benchmarks.evaluation import phases
from benchmarks.evaluation.attacks import EOT_DRAWS, robustness_suite
from benchmarks.protocols import SMOKE, Evaluation, Recipe
from benchmarks.reporting.leaderboard import aggregate, load_frame, render_markdown
from benchmarks.store.records import save_record
from benchmarks.training.train import TrainResult, train

from leaderboard_records import _card, _record

pytestmark = pytest.mark.numerics  # float comparisons: run again under each lower CPU capability (cpu_capabilities.py)

TIMING = {"latency_ms", "latency_iqr_ms", "throughput", "dt_speedup"}
TINY = dataclasses.replace(SMOKE, name="test-stochastic", evaluation=Evaluation(
    attack_subset=40, pgd_steps=2, pgd_restarts=1, apgd_steps=2, apgd_restarts=1, square_queries=2,
    autoattack_targets=1, transfer_subset=40, transfer_factors=(1.0,), transfer_schemes=("euler",),
    transfer_tolerances=(1e-2,), latency_repeats=1, throughput_batch=8, eval_batch=200, diagnostic_subset=8,
    track_points=4, jacobian_iterations=2))
UNTRAINED = TrainResult(epochs=0, train_seconds=0.0, epoch_seconds=0.0, best_epoch=0, val_metric=0.0,
                        peak_memory_mb=None)


def noisy_resnet(task: Task, data: TaskData) -> nn.Module:
    """The smoke tier's size, trained a little (an untrained one predicts one class whatever the noise)."""
    torch.manual_seed(0)
    model = zoo.create_model("resnet-sde", input_shape=(1, 8, 8), num_classes=10, width=16, depth=3, sigma=0.3)
    train(model, data, task, Recipe(epochs=2, batch_size=32, lr=5e-3), device=torch.device("cpu"), seed=0)
    return model.eval()


def test_the_same_stochastic_model_measured_twice_gives_the_same_record(monkeypatch) -> None:
    monkeypatch.setattr(phases, "resnet_surrogate", lambda *args, **kwargs: None)  # no transfer source: faster
    task = get_task("digits")
    data = task.load()
    model = noisy_resnet(task, data)
    x = data.test.inputs()
    with torch.no_grad():  # the forward really is random: without a seed per phase the record would differ
        assert not torch.equal(model(x), model(x))

    def record() -> tuple[dict, list[str]]:
        metrics, flags, _, _ = phases.measure(model, task, data, TINY, torch.device("cpu"), UNTRAINED)
        return {k: v for k, v in metrics.items() if k not in TIMING}, flags

    first, flags = record()
    torch.manual_seed(123)  # whatever the caller's RNG state, the record is the same
    assert record() == (first, flags)
    assert "stochastic" in flags and first["eot_draws"] == EOT_DRAWS
    assert "batch_coupling" not in first and "batch_coupling" in zoo.contract.not_applicable(model)


class NoisyGradient(nn.Module):
    """Logits that do not depend on the draw but input gradients that do (true gradient + Gaussian of 3x its
    size, through a straight-through term): one draw's gradient is a poor guide, the mean of several a good one."""

    stochastic = True

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.full((dim,), 4.0 / dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1)
        g = (z * torch.randn_like(z) * 3.0 * self.w.abs().mean()).sum(1)
        margin = z @ self.w - 2.0 + (g - g.detach())
        return torch.stack([-margin, margin, torch.full_like(margin, -10.0)], dim=1)  # 3 classes for APGD-DLR


def margin_data(n: int = 200, dim: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose mean pixel is 0.5 +- 0.02..0.07 (class = which side): eps = 0.1 along the true gradient breaks
    every one of them."""
    generator = torch.Generator().manual_seed(1)
    side = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    target = 0.5 + (0.02 + 0.05 * torch.rand(n, generator=generator)) * side
    x = (target[:, None] + 0.2 * (torch.rand(n, dim, generator=generator) - 0.5)).clamp(0, 1)
    x = (x - x.mean(1, keepdim=True) + target[:, None]).clamp(0, 1)
    return x.reshape(n, 1, 8, 8), (x.mean(1) > 0.5).long()


@pytest.mark.parametrize("draws", [1, 4])
def test_expectation_over_draws_attacks_at_least_as_hard_as_one_draw(draws: int) -> None:
    x, y = margin_data()
    model = NoisyGradient(64).eval()
    ev = Evaluation(attack_subset=len(y), pgd_steps=10, pgd_restarts=1, apgd_steps=5, apgd_restarts=1)

    def robust(k: int | None) -> tuple[float, dict]:
        extra = {} if k is None else {"eot_draws": k}
        suite = robustness_suite(model, x, y, eps_grid=(0.1,), headline_eps=None, ev=ev, batch_size=100, seed=0,
                                 **extra)
        return suite.metrics["robust@0.1"], suite.metrics

    assert (model(x).argmax(1) == y).all()
    one, _ = robust(1)
    some, _ = robust(draws)
    default, metrics = robust(None)  # what the harness runs on a stochastic model
    assert one > 0.3  # a single draw's gradient leaves many examples standing...
    assert some <= one and default <= one - 0.3  # ...which the mean over draws breaks
    assert metrics["eot_draws"] == EOT_DRAWS


def test_tables_mark_random_rows_and_explain_them(tmp_path: Path) -> None:
    card = _card("liu2019neural", "Neural SDE", "https://arxiv.org/abs/1906.02355")
    save_record(tmp_path, _record("resnet", 0, {"accuracy": 0.5}, card))
    save_record(tmp_path, _record("resnet-sde", 0, {"accuracy": 0.6, "eot_draws": 8}, card, flags=["stochastic"]))
    text = render_markdown(aggregate(load_frame(tmp_path))[("digits", "standard", "3f2a9c1d0b7e")])
    assert "- **Stochastic:** rows flagged stochastic" in text
    row = {m: next(line for line in text.splitlines() if f"[{m}]" in line) for m in ("resnet", "resnet-sde")}
    assert "| stochastic |" in row["resnet-sde"] and "stochastic" not in row["resnet"]
