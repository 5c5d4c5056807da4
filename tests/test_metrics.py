"""Metrics on real data: a tiny ResNet trained for a few seconds on scikit-learn's 8x8 digits.

Robustness numbers are only meaningful if the attacks are correct, so the attack tests check properties any correct
L-inf attack has (weaker than clean, PGD at least as strong as FGSM, monotone in eps, projection around the clean
image) on a model that actually learned something.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import torch
import torchattacks
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F

import zoo
from benchmarks.evaluation import metrics, timing
from benchmarks.evaluation.depth_transfer import depth_transfer
from benchmarks.specs import DOCS
from benchmarks.store.machine import machine_info

pytestmark = pytest.mark.numerics  # float comparisons: run again under each lower CPU capability (cpu_capabilities.py)

BATCH = 256


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """The tensors here are tiny: a second intra-op thread only adds synchronisation, and on a busy machine its
    spin-waits slow every op several-fold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    data = load_digits()
    x = torch.tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)  # (N, 1, 8, 8) in [0, 1]
    y = torch.tensor(data.target, dtype=torch.int64)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    return x[:1400], y[:1400], x[1400:], y[1400:]


@pytest.fixture(scope="module")
def trained(digits) -> nn.Module:
    x_train, y_train, _, _ = digits
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = zoo.create_model("resnet", input_shape=(1, 8, 8), num_classes=10, width=8, depth=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    sampler = torch.Generator().manual_seed(1)
    for _ in range(300):
        index = torch.randint(0, len(x_train), (64,), generator=sampler)
        loss = F.cross_entropy(model(x_train[index]), y_train[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_eps_key() -> None:
    assert metrics.eps_key(0.1) == "0.1"
    assert metrics.eps_key(8 / 255) == "0.0314"
    assert metrics.eps_key(2 / 255) == "0.00784"
    assert metrics.eps_key(0.05) == "0.05"
    assert metrics.eps_key(1.0) == "1"


def test_metric_docs_cover_every_name() -> None:
    names = {"accuracy", "val_accuracy", "test_mse", "val_mse", "params", "flops", "nfe", "nfe_backward",
             "train_seconds", "epoch_seconds", "peak_train_memory_mb", "epochs", "latency_ms", "latency_iqr_ms",
             "throughput", "fgsm@<eps>", "pgd@<eps>", "noise@<sigma>", "dt_delta_2x", "dt_delta_half",
             "dt_fewest_nfe", "dt_speedup", "dt_order", "eval_batch", "batch_coupling"}
    assert names <= set(DOCS)
    assert all(doc and "\n" not in doc for doc in DOCS.values())


def test_trained_model_is_clearly_better_than_chance(trained, digits) -> None:
    _, _, x, y = digits
    assert metrics.accuracy(trained, x, y, batch_size=BATCH) > 0.8


def test_pgd_projects_around_the_clean_image(trained, digits) -> None:
    _, _, x, y = digits
    eps, batch = 0.1, x[:64]
    # A step as large as eps would leave the eps-ball around the clean image if projection used the random start.
    attack = torchattacks.PGD(trained, eps=eps, alpha=eps, steps=5, random_start=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        adversarial = attack(batch, y[:64])
    # within eps but for float32 rounding: of eps itself, of x + delta and of the difference (ulps of 1)
    assert (adversarial - batch).abs().max().item() <= eps + 4 * torch.finfo(batch.dtype).eps
    assert adversarial.min().item() >= 0.0 and adversarial.max().item() <= 1.0
    assert not trained.training


def test_noise_accuracy_decreases_with_sigma(trained, digits) -> None:
    _, _, x, y = digits
    results = metrics.noise_robustness(trained, x, y, sigmas=(0.05, 0.2, 0.5), batch_size=BATCH, seed=0)
    assert list(results) == ["noise@0.05", "noise@0.2", "noise@0.5"]
    assert results["noise@0.05"] > results["noise@0.2"] > results["noise@0.5"]
    assert results == metrics.noise_robustness(trained, x, y, sigmas=(0.05, 0.2, 0.5), batch_size=BATCH, seed=0)


def test_depth_transfer_of_the_trained_resnet(trained, digits) -> None:
    _, _, x, y = digits
    entries, summary = depth_transfer(trained, x, y, kind="classification", batch_size=BATCH,
                                              latency_example=x[:1], latency_repeats=2)
    mine = [e for e in entries if e["trained"]]
    assert len(mine) == 1
    assert (mine[0]["scheme"], mine[0]["n_steps"], mine[0]["dt"]) == ("euler", 2, 1.0)
    assert mine[0]["accuracy"] == metrics.accuracy(trained, x, y, batch_size=BATCH)
    assert len({(e["scheme"], e["n_steps"]) for e in entries}) == len(entries) == 16  # 4 schemes x {1, 2, 4, 8}
    for entry in entries:
        assert "failed" not in entry and entry["latency_ms"] > 0
        assert entry["nfe"] == entry["n_steps"] * zoo.get_tableau(entry["scheme"]).stages * len(trained.blocks)
    assert {"dt_delta_2x", "dt_delta_half", "dt_fewest_nfe", "dt_speedup", "dt_order"} <= set(summary)
    assert summary["dt_fewest_nfe"] <= mine[0]["nfe"]


@pytest.mark.parametrize(("depth", "half"), [(3, None), (4, 2)])
def test_depth_transfer_evaluates_exactly_the_factors_it_reports(digits, depth: int, half: int | None) -> None:
    """Half of 3 steps is no whole number of steps: it is skipped, not rounded to 2 (that would be 2/3x)."""
    _, _, x, y = digits
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = zoo.create_model("resnet", input_shape=(1, 8, 8), num_classes=10, width=8, depth=depth).eval()
    entries, summary = depth_transfer(model, x[:32], y[:32], kind="classification", batch_size=32,
                                              factors=(0.5, 1.0, 2.0), schemes=("euler", "rk4"))
    for scheme in ("euler", "rk4"):
        steps = sorted(e["n_steps"] for e in entries if e["scheme"] == scheme)
        assert steps == sorted(n for n in (half, depth, 2 * depth) if n)
    assert all(e["factor"] == e["n_steps"] / depth for e in entries)
    assert {e["factor"] for e in entries} == ({0.5, 1.0, 2.0} if half else {1.0, 2.0})
    assert ("dt_delta_half" in summary) == (half is not None) and "dt_delta_2x" in summary


def test_depth_transfer_of_an_adaptive_model(digits) -> None:
    _, _, x, y = digits
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = zoo.create_model("neural-ode", input_shape=(1, 8, 8), num_classes=10, width=4, channels=4).eval()
    entries, summary = depth_transfer(model, x[:64], y[:64], kind="classification", batch_size=64)
    adaptive = [e for e in entries if e["scheme"] == "dopri5"]
    assert sorted(e["rtol"] for e in adaptive) == [1e-4, 1e-3, 1e-2, 1e-1]  # the trained 1e-3 appears once
    assert [e["rtol"] for e in entries if e["trained"]] == [1e-3]
    assert all(e["n_steps"] is None and e["nfe"] > 0 for e in adaptive)
    assert all(e["factor"] is None for e in entries)  # no trained step count to be a multiple of
    fixed = [e for e in entries if e["scheme"] != "dopri5"]
    assert sorted({e["n_steps"] for e in fixed}) == [1, 2, 4, 8] and all(e["rtol"] is None for e in fixed)
    assert all(e["error"] is not None for e in entries)
    errors = {e["rtol"]: e["error"] for e in adaptive}
    assert errors[1e-4] < errors[1e-1]
    assert "dt_fewest_nfe" in summary and "dt_delta_2x" not in summary and "dt_order" not in summary


def test_solver_failures_are_recorded_not_raised(digits) -> None:
    _, _, x, y = digits
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = zoo.create_model("neural-ode", input_shape=(1, 8, 8), num_classes=10, width=4, channels=4).eval()
    for block in model.blocks:
        block.solver = dataclasses.replace(block.solver, max_num_steps=2)
    entries, summary = depth_transfer(model, x[:16], y[:16], kind="classification", batch_size=16,
                                              tolerances=(1e-4,), schemes=("euler",))
    failed = [e for e in entries if "failed" in e]
    assert failed and all(e["accuracy"] is None and e["scheme"] == "dopri5" for e in failed)
    assert all(e["accuracy"] is not None for e in entries if e["scheme"] == "euler")
    assert summary == {}  # the trained configuration itself failed: nothing to compare with


def test_dt_order_of_a_smooth_continuousnet_is_four() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = zoo.create_model("continuousnet", input_shape=(2,), num_classes=2, width=16, depth=2)
    model = model.double().eval()
    x = torch.rand(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    entries, summary = depth_transfer(model, x, x, kind="regression", batch_size=64)
    assert abs(summary["dt_order"] - 4.0) < 0.3  # self-convergence of RK4 on a smooth flow
    assert all(e["mse"] is not None and "accuracy" not in e for e in entries)
    assert {"dt_delta_2x", "dt_fewest_nfe"} <= set(summary)


def test_flops_and_params_grow_with_depth(digits) -> None:
    _, _, x, _ = digits
    shallow = zoo.create_model("resnet", input_shape=(1, 8, 8), num_classes=10, width=8, depth=2)
    deep = zoo.create_model("resnet", input_shape=(1, 8, 8), num_classes=10, width=8, depth=4)
    assert 0 < metrics.count_flops(shallow, x) < metrics.count_flops(deep, x)
    assert metrics.count_flops(shallow, x[:1]) == metrics.count_flops(shallow, x)  # one sample whatever is passed
    assert 0 < metrics.parameter_count(shallow) < metrics.parameter_count(deep)


def test_measure_returns_ordered_stats(monkeypatch) -> None:
    stats = timing.measure(lambda: sum(range(2000)), device=torch.device("cpu"), warmup=1, repeats=7)
    assert stats["repeats"] == 7
    assert 0 < stats["min_ms"] <= stats["median_ms"] and stats["iqr_ms"] >= 0
    # min_time repeats a call until the total reaches it: on a clock of its own (a 2 ms sleep took over 20 ms on a
    # loaded machine), each call 1/64 s, so 0.1 s takes exactly 7 calls (1/64 is exact in binary)
    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(timing, "time", SimpleNamespace(perf_counter=lambda: clock.now))

    def call() -> None:
        clock.now += 1 / 64

    more = timing.measure(call, device=torch.device("cpu"), warmup=0, repeats=1, min_time=0.1)
    assert more["repeats"] == 7 and more["median_ms"] == 1000 / 64


def test_latency_throughput_and_machine_info(trained, digits) -> None:
    _, _, x, _ = digits
    trained.train()
    try:
        result = timing.latency_and_throughput(trained, x[:3], device=torch.device("cpu"), batch=16, warmup=1,
                                               repeats=3)
        assert trained.training  # the caller's mode is restored
    finally:
        trained.eval()
    assert set(result) == {"latency_ms", "latency_iqr_ms", "throughput"}
    assert result["latency_ms"] > 0 and result["throughput"] > 0
    info = machine_info(torch.device("cpu"))
    assert info["torch"] == torch.__version__ and info["python"] and info["cpu_count"]
    json.dumps(info)
