"""The attack suite: worst case per example, sanity flags that catch gradient masking, confidence intervals.

A model that masks gradients (its forward quantises the input) must be flagged unreliable while a normal ResNet is
not; the headline number must never be above any single attack on any example.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F

import zoo
from benchmarks.data.tasks import get_task, list_tasks
from benchmarks.evaluation import attacks
from benchmarks.protocols import PROTOCOLS, SMOKE, STANDARD, Evaluation

pytestmark = pytest.mark.numerics  # float comparisons: run again under each lower CPU capability (cpu_capabilities.py)

# 20 PGD steps: the unbounded sanity check gets half of them, and with 2 (pgd_steps=5) it left 8-14% of this tiny
# model's digits unbroken depending on the CPU's SIMD level (the 300 training steps amplify ulps into a different
# model), straddling the 10% threshold; with 10 it is at 0 on every level.
SMALL = Evaluation(attack_subset=100, pgd_steps=20, pgd_restarts=2, apgd_steps=5, apgd_restarts=1, square_queries=30,
                   autoattack_targets=1)
GRID = (0.05, 0.1, 0.2)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_digits()
    x = torch.tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(data.target, dtype=torch.int64)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[order], y[order]


@pytest.fixture(scope="module")
def resnet(digits) -> nn.Module:
    x, y = digits
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = zoo.create_model("resnet", input_shape=(1, 8, 8), num_classes=10, width=8, depth=2)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(300):
            index = torch.randint(0, 1400, (64,))
            loss = F.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


class Quantised(nn.Module):
    """Rounds its input to the digits' own grid: the same predictions, zero input gradients everywhere."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * 16) / 16)


def _suite(model: nn.Module, digits, ev: Evaluation = SMALL) -> attacks.SuiteResult:
    x, y = digits
    return attacks.robustness_suite(model, x[1400:1500], y[1400:1500], eps_grid=GRID, headline_eps=0.1, ev=ev,
                                    batch_size=64, seed=0)


@pytest.fixture(scope="module")
def resnet_suite(resnet, digits) -> attacks.SuiteResult:
    return _suite(resnet, digits)


def test_a_normal_resnet_is_reliable_and_the_attacks_work(resnet_suite) -> None:
    m = resnet_suite.metrics
    assert resnet_suite.flags == []
    assert m["unbounded_pgd"] <= 0.1 and m["vanishing_grad_fraction"] == 0.0 and m["attack_n"] == 100
    clean = resnet_suite.clean.float().mean().item()
    assert m["robust@0.05"] < clean and m["robust@0.2"] < m["robust@0.05"]
    for name in ("apgd_ce", "apgd_t", "fab_t", "square", "pgd_fewsteps"):  # AutoAttack etc. at the headline only
        assert f"{name}@0.1" in m and f"{name}@0.05" not in m
    assert "transfer@0.1" not in m and "adjoint_grad_cosine" not in m  # fixed-step model, no adjoint


def test_the_worst_case_is_never_above_any_single_attack_per_example(resnet_suite) -> None:
    n = resnet_suite.n
    for eps, result in resnet_suite.by_eps.items():
        combined = resnet_suite.clean.clone()
        for name in result.attacks:
            survived = result.survived(name, n)
            assert not (result.robust & ~survived).any(), f"robust where {name} broke the example at eps {eps}"
            combined &= survived
        assert torch.equal(result.robust, combined)  # exactly the intersection: nothing else lowers or raises it
        key = f"{eps:.3g}"
        headline = resnet_suite.metrics[f"robust@{key}"]
        assert all(headline <= value for name, value in result.own.items())
        low, high = resnet_suite.metrics[f"robust_ci_low@{key}"], resnet_suite.metrics[f"robust_ci_high@{key}"]
        assert low <= headline <= high


def test_the_suite_is_stronger_than_one_short_pgd(resnet_suite) -> None:
    # Today's former number was one 10-step PGD; the suite's worst case must be at most that, and here below FGSM.
    m = resnet_suite.metrics
    assert m["robust@0.1"] <= m["pgd@0.1"] and m["robust@0.1"] < m["fgsm@0.1"]


def test_a_gradient_masking_model_is_flagged_unreliable(resnet, digits, resnet_suite) -> None:
    masked = _suite(Quantised(resnet).eval(), digits)
    assert torch.equal(masked.clean, resnet_suite.clean)  # the same classifier on clean inputs
    assert "unreliable" in masked.flags
    assert "unreliable:vanishing-input-gradients" in masked.flags
    assert "unreliable:unbounded-attack-fails" in masked.flags  # PGD cannot even break it at eps = 1


def test_the_suite_is_deterministic_and_leaves_the_global_rng_alone(resnet, digits, resnet_suite) -> None:
    state = torch.random.get_rng_state()
    again = _suite(resnet, digits)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert again.metrics == resnet_suite.metrics and again.flags == resnet_suite.flags
    assert all(p.requires_grad for p in resnet.parameters())


def test_adaptive_models_get_transfer_and_adjoint_checks(digits) -> None:
    x, y = digits
    torch.manual_seed(0)
    model = zoo.create_model("neural-ode", input_shape=(1, 8, 8), num_classes=10, width=8, depth=1,
                             adjoint=True, rtol=1e-5, atol=1e-5).eval()
    direct = attacks.direct_gradient_model(model)
    assert all(s.adjoint for s in model.solvers) and not any(s.adjoint for s in direct.solvers)
    assert [(s.scheme, s.rtol) for s in direct.solvers] == [(s.scheme, s.rtol) for s in model.solvers]
    ev = dataclasses.replace(SMALL, pgd_steps=2, pgd_restarts=1, apgd_steps=2, square_queries=5)
    result = attacks.robustness_suite(model, x[:16], y[:16], eps_grid=(0.1,), headline_eps=0.1, ev=ev,
                                      batch_size=16, seed=0)
    assert {"transfer@0.1", "nfe_adversarial", "adjoint_grad_cosine"} <= set(result.metrics)
    assert result.metrics["adjoint_grad_cosine"] > 0.95  # tight tolerances: both are gradients of the same solve


def test_wilson_interval_and_subset_size() -> None:
    assert attacks.wilson_interval(0, 100)[0] == 0.0 and attacks.wilson_interval(100, 100)[1] == 1.0
    low, high = attacks.wilson_interval(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-4) and high == pytest.approx(0.5962, abs=1e-4)
    assert attacks.subset_for_half_width(0.02) == 2401
    with pytest.raises(ValueError, match="positive"):
        attacks.wilson_interval(0, 0)


def test_tiers_attack_enough_examples_with_enough_budget() -> None:
    ev = STANDARD.evaluation
    low, high = attacks.wilson_interval(ev.attack_subset // 2, ev.attack_subset)
    assert (high - low) / 2 <= 0.02  # +-2 points at worst at the standard tier
    # v3 (issue #23): sized for a GPU lent by the minute, every attack of the suite kept, one batch per step
    assert ev.pgd_steps >= 20 and ev.apgd_steps >= 25 and ev.autoattack_targets >= 3 and ev.square_queries >= 1000
    assert ev.eval_batch >= ev.attack_subset
    paper = PROTOCOLS["paper"].evaluation  # AutoAttack's own budgets where the papers' scale is run
    assert paper.pgd_steps >= 50 and paper.pgd_restarts >= 5 and paper.apgd_restarts >= 5
    assert paper.apgd_steps == 100 and paper.square_queries == 5000 and paper.autoattack_targets == 9
    cpu = PROTOCOLS["cpu"].evaluation  # the citable CPU tier: +-3 points at worst, every attack family run
    low, high = attacks.wilson_interval(cpu.attack_subset // 2, cpu.attack_subset)
    assert (high - low) / 2 <= 0.03 and cpu.pgd_restarts >= 2 and cpu.square_queries > 0
    assert PROTOCOLS["paper"].evaluation.attack_subset >= ev.attack_subset
    assert SMOKE.evaluation.pgd_steps >= 10


def test_every_attacked_task_has_its_headline_radius_in_its_grid() -> None:
    for name in list_tasks():
        task = get_task(name)
        if task.attack_eps:
            assert task.headline_eps in task.attack_eps, name
    assert get_task("cifar10").headline_eps == 8 / 255


def test_beyond_noise() -> None:
    assert not attacks.beyond_noise(2, 0, 100)  # two examples: a random start's luck
    assert attacks.beyond_noise(10, 0, 100)
    assert not attacks.beyond_noise(30, 20, 100)  # within 2 sigma of a fair coin over 50 discordant examples
    assert not attacks.beyond_noise(12, 0, 2500)  # below 1% of the examples


def test_sanity_flags_catch_inconsistent_attacks() -> None:
    n = 10
    clean = torch.ones(n, dtype=torch.bool)
    everyone = torch.arange(n)

    def result(eps: float, fgsm: int, pgd: int, robust: int) -> attacks.EpsResult:
        mask = lambda k: torch.arange(n) < k  # noqa: E731 - the first k examples survive
        r = attacks.EpsResult(eps, mask(robust))
        r.attacks = {"fgsm": (everyone, mask(fgsm)), "pgd": (everyone, mask(pgd)),
                     "pgd_fewsteps": (everyone, mask(pgd))}
        r.pgd_first = mask(pgd)
        return r

    good = {0.1: result(0.1, 6, 4, 4), 0.2: result(0.2, 3, 1, 1)}
    assert attacks._sanity_flags(good, clean, 0.0, 0.0) == []
    weak_pgd = {0.1: result(0.1, 0, 9, 0)}
    assert attacks._sanity_flags(weak_pgd, clean, 0.0, 0.0) == [
        "unreliable", "unreliable:iterative-weaker-than-single-step@0.1"]
    rising = {0.1: result(0.1, 6, 0, 0), 0.2: result(0.2, 9, 9, 9)}
    assert "unreliable:accuracy-rises-with-eps@0.2" in attacks._sanity_flags(rising, clean, 0.0, 0.0)
    assert attacks._sanity_flags(good, clean, 0.5, 0.0) == ["unreliable", "unreliable:unbounded-attack-fails"]
    assert attacks._sanity_flags(good, clean, 0.0, 0.2) == ["unreliable", "unreliable:vanishing-input-gradients"]
    stalls = {0.1: result(0.1, 9, 9, 0)}
    stalls[0.1].attacks["pgd_fewsteps"] = (everyone, torch.zeros(n, dtype=torch.bool))  # 2 steps beat 10 steps
    assert attacks._sanity_flags(stalls, clean, 0.0, 0.0) == ["unreliable", "unreliable:more-steps-weaker@0.1"]
    black = {0.1: result(0.1, 8, 6, 0)}
    black[0.1].attacks["square"] = (torch.arange(6), torch.zeros(6, dtype=torch.bool))  # breaks all 6 survivors
    assert "unreliable:black-box-beats-white-box@0.1" in attacks._sanity_flags(black, clean, 0.0, 0.0)


def test_every_suite_metric_is_documented(resnet_suite) -> None:
    from benchmarks.specs import spec_for

    names = set(resnet_suite.metrics) | {"transfer@0.1", "nfe_adversarial", "adjoint_grad_cosine"}
    for name in names:
        assert spec_for(name) is not None, name
