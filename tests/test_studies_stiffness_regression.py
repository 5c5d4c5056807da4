"""Hudson et al.'s Alpine 02 study (benchmarks/studies/stiffness_regression.py): the task, the model's Jacobians,
Gelfand's spectral radius, the seed's loss and stiffness ratio, and the study file."""

from __future__ import annotations

import math

import pytest
import torch

from benchmarks.cli import main
from benchmarks.store.studies import read_study
from benchmarks.studies import stiffness_regression as sr


def test_alpine02_is_the_seeds_function() -> None:
    x = torch.tensor([[math.pi / 2, math.pi / 2], [0.0, 3.0], [-math.pi / 2, 1.0]], dtype=torch.float64)
    expected = [math.pi / 2, 0.0, -math.sqrt(math.pi / 2) * math.sin(1.0)]
    torch.testing.assert_close(sr.alpine02(x).squeeze(1), torch.tensor(expected, dtype=torch.float64))
    x_train, y_train, x_test, y_test = sr.alpine_data(3)
    assert x_train.shape == (900, 2) and y_test.shape == (100, 1) and x_train.abs().max() <= 5.0
    assert torch.equal(sr.alpine_data(3)[2], x_test) and not torch.equal(sr.alpine_data(4)[0], x_train)


def test_gelfand_radius_is_the_spectral_radius_with_exact_gradients() -> None:
    a, b = 0.6, -1.7  # a rotation-scaling block has |lambda| = sqrt(a^2 + b^2) and is normal
    blocks = torch.tensor([[[a, -b], [b, a]], [[3.0, 0.0], [0.0, -0.5]]], dtype=torch.float64)
    # Frobenius norm of J^k is sqrt(2) rho^k for these: the estimate is off by 2^(1/(2k)) at most.
    torch.testing.assert_close(sr.gelfand_radius(blocks), torch.tensor([math.hypot(a, b), 3.0], dtype=torch.float64),
                               rtol=2 ** (1 / 2048) - 1 + 1e-12, atol=0)
    random = torch.randn(16, 20, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = torch.linalg.eigvals(random).abs().amax(dim=-1)
    assert ((sr.gelfand_radius(random) / exact - 1).abs() < 0.02).all()  # Gelfand's limit, k = 1024
    # The scales left out of the graph do not change the gradient: that of ||J^8||^(1/8) by plain autograd.
    small = random[:3, :6, :6].clone().requires_grad_(True)
    (fast,) = torch.autograd.grad(sr.gelfand_radius(small, squarings=3).sum(), small)
    power = small @ small
    power = (power @ power) @ (power @ power)
    (plain,) = torch.autograd.grad(power.flatten(-2).norm(dim=-1).pow(1 / 8).sum(), small)
    torch.testing.assert_close(fast, plain, rtol=1e-10, atol=1e-12)
    # (batch, layers, m, m) as the penalty passes it, weighted per matrix so every matrix's gradient is checked
    layered = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    layered.requires_grad_(True)
    weights = torch.arange(1.0, 7.0, dtype=torch.float64).reshape(2, 3)
    (fast,) = torch.autograd.grad((sr.gelfand_radius(layered, squarings=2) * weights).sum(), layered)
    power = layered @ layered
    (plain,) = torch.autograd.grad(((power @ power).flatten(-2).norm(dim=-1).pow(1 / 4) * weights).sum(), layered)
    torch.testing.assert_close(fast, plain, rtol=1e-10, atol=1e-12)


def test_the_population_set_is_fixed_fresh_and_on_the_domain() -> None:
    x, y = sr.population_data()
    assert x.shape == (sr.N_POPULATION, 2) and x.abs().max() <= 5.0 and torch.equal(y, sr.alpine02(x))
    assert torch.equal(sr.population_data()[0], x)  # the same points for every trial
    for trial in (0, 1):  # not any trial's training or test points
        seen = torch.cat(sr.alpine_data(trial)[0::2])
        assert not (x[:, None, :] == seen[None, :, :]).all(dim=-1).any()
    model = sr.AlpineResNet().double()
    assert sr.rmse(model, x, y) == pytest.approx((model(x.double())[0] - y.double()).pow(2).mean().sqrt().item())


def _diagonal_model(values: list[float]) -> sr.AlpineResNet:
    """x_0 = 0 for every input and z = 0 in every layer: every layer's Jacobian is exactly its weight."""
    model = sr.AlpineResNet(width=len(values), depth=3).double()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for layer in model.layers:
            layer.weight.copy_(torch.diag(torch.tensor(values, dtype=torch.float64)))
    return model


def test_stiffness_is_the_eigenvalue_ratio_of_each_layers_jacobian() -> None:
    model = _diagonal_model([4.0, -2.0, 0.5])
    x, y = torch.randn(5, 2, dtype=torch.float64), torch.ones(5, 1, dtype=torch.float64)
    measured = sr.measure(model, x, y)
    assert measured["stiffness"] == pytest.approx(8.0) and measured["radius"] == pytest.approx(4.0)
    assert measured["stiffness_sum"] == pytest.approx(8.0 * 3 * 5)  # the seed's sum over layers and samples
    assert measured["rmse"] == pytest.approx(1.0)  # the read-out is 0
    assert measured["saturated"] == 0.0  # z = 0: tanh' = 1
    _, jacobians = model(x, jacobians=True)
    assert jacobians.shape == (5, 3, 3, 3)
    penalty = sr.penalty(model, "stiff", jacobians)  # per sample: the layers' radii summed
    torch.testing.assert_close(penalty, torch.full((5,), 12.0, dtype=torch.float64), rtol=1e-3, atol=0)
    for layer in model.layers:  # z ~ 10 in every unit: tanh' ~ 8e-9, saturated, though not 0 in float64
        layer.bias.data.fill_(10.0)
    measured = sr.measure(model, x, y)
    assert measured["saturated"] == 1.0 and measured["singular"] == 0.0


def test_a_singular_jacobian_is_counted_not_averaged_into_an_infinite_stiffness() -> None:
    # The failed run: a zero eigenvalue (here a zero diagonal weight) makes that layer's ratio infinite; it
    # is reported as the singular fraction, and the ratio's statistics are over the other layers.
    model = _diagonal_model([4.0, -2.0, 0.5])
    x, y = torch.randn(5, 2, dtype=torch.float64), torch.ones(5, 1, dtype=torch.float64)
    measured = sr.measure(model, x, y)
    assert all(math.isfinite(v) for v in measured.values())
    assert measured["singular"] == pytest.approx(0.0)
    with torch.no_grad():
        model.layers[1].weight.zero_()
    measured = sr.measure(model, x, y)
    assert measured["singular"] == pytest.approx(1 / 3) and measured["stiffness"] == pytest.approx(8.0)
    assert measured["stiffness_sum"] == pytest.approx(8.0 * 2 * 5)
    for layer in model.layers:
        with torch.no_grad():
            layer.weight.zero_()
    with pytest.raises(RuntimeError, match="no finite stiffness ratio"):
        sr.measure(model, x, y)


def test_the_seeds_loss_is_the_quadratic_mean_of_error_and_penalty() -> None:
    model = _diagonal_model([4.0, -2.0, 0.5])
    x, y = torch.randn(5, 2, dtype=torch.float64), torch.full((5, 1), 2.0, dtype=torch.float64)
    assert sr.loss_of(model, x, y, "none", 0.0).item() == pytest.approx(2.0)  # plain RMSE
    l2 = torch.stack([p.norm() for p in model.parameters()]).mean()
    assert sr.loss_of(model, x, y, "l2", 0.1).item() == pytest.approx(math.sqrt(4.0 + 0.1 * l2.item() ** 2))
    stiff = sr.loss_of(model, x, y, "stiff", 0.01).item()
    assert stiff == pytest.approx(math.sqrt(4.0 + 0.01 * 12.0**2), rel=1e-3)
    with pytest.raises(ValueError, match="unknown penalty"):
        sr.penalty(model, "l1", None)


def test_arms_of_a_trial_share_initialisation_and_data() -> None:
    data = sr.alpine_data(0, n_train=90)
    start = [sr.train_arm(kind, weight, 0, data, epochs=0)[0] for kind, weight in sr.ARMS.values()]
    for model in start[1:]:
        for (name, p), q in zip(model.named_parameters(), start[0].parameters()):
            assert torch.equal(p, q), name


def test_stiffness_regression_writes_every_trials_quantities(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(sr, "EPOCHS", 3)
    assert main(["study", "stiffness-regression", "--seeds", "0", "1", "--limit", "90", "--results",
                 str(tmp_path / "r"), "--out", str(tmp_path / "l")]) == 0
    study = read_study(tmp_path / "r" / "stiffness-regression" / "alpine02.json")
    values = {k: v["values"] for k, v in study["summary"].items()}
    expected = {f"{arm}_{q}" for arm in sr.ARMS
                for q in ("er", "ge", "ge_population", "stiffness", "singular", "saturated", "radius", "seconds")}
    ratios = {f"{arm}_{q}_ratio" for arm in ("stiff", "l2") for q in ("ge", "ge_population")}
    assert set(values) == expected | ratios | {"init_stiffness", "init_saturated"}
    # the untrained network is the same for every arm of a trial: measured on it directly
    sr.seed_everything(1)
    untrained = sr.measure(sr.AlpineResNet(), *sr.alpine_data(1, n_train=90)[:2])
    assert values["init_stiffness"][1] == untrained["stiffness"] and values["init_saturated"][1] == 0.0
    for i in range(2):
        assert values["stiff_ge_ratio"][i] == pytest.approx(values["stiff_ge"][i] / values["res_ge"][i])
        assert values["l2_ge_ratio"][i] == pytest.approx(values["l2_ge"][i] / values["res_ge"][i])
        assert values["stiff_ge_population_ratio"][i] == pytest.approx(
            values["stiff_ge_population"][i] / values["res_ge_population"][i])
        assert all(values[f"{arm}_stiffness"][i] >= 1.0 for arm in sr.ARMS)  # |lambda_1| / |lambda_n| >= 1
    assert study["task"] == "alpine02" and [r["trial"] for r in study["rows"]] == [0, 0, 0, 1, 1, 1]
    assert study["details"]["training"]["epochs"] == 3
    with pytest.raises(ValueError, match="runs on the seed's own task 'alpine02'"):
        sr.run("digits", [0], tmp_path)


def test_trials_in_worker_processes_give_the_same_numbers(tmp_path) -> None:
    """`--workers 2` runs the trials in two processes; each trial's numbers (all but its CPU seconds) are the same."""
    def numbers(workers: int) -> list[dict]:
        path = sr.run("alpine02", [0, 1], tmp_path / str(workers), limit=90, epochs=2, workers=workers)
        return [{k: v for k, v in row.items() if k != "seconds"} for row in read_study(path)["rows"]]

    assert numbers(2) == numbers(1)


def test_an_arm_stops_at_its_plateau(monkeypatch) -> None:
    """Training ends once reduce-on-plateau has cut the rate to MIN_LR; otherwise it runs every epoch asked for."""
    data = sr.alpine_data(0, n_train=90)
    assert sr.train_arm("none", 0.0, 0, data, epochs=3)[1]["epochs"] == 3
    monkeypatch.setattr(sr, "PATIENCE", 0)  # every epoch that is not better cuts the rate by 10
    monkeypatch.setattr(sr, "MIN_LR", sr.LR * 1e-2)  # two cuts
    fit = sr.train_arm("none", 0.0, 0, data, epochs=500)[1]
    assert fit["epochs"] < 500 and fit["final_lr"] == pytest.approx(sr.LR * 1e-2)
