"""The zoo's families from the seed papers (issue #14): each passes the contract, is parameter-matched at every
tier's size class, trains on digits, and has its defining property."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call
from torch.nn import functional as F

import zoo
from benchmarks.data.tasks import get_task
from benchmarks.evaluation.check import check_model
from benchmarks.evaluation.diagnostics import jacobian_sigma
from benchmarks.protocols import Recipe
from benchmarks.training.train import evaluate, train
from zoo.models.pde import NORM_BOUND, SymmetricLayer, leapfrog, leapfrog_backward
from zoo.models.stiffness import sigma_max
from zoo.template import count_params

NEW = ["anodev2", "pde-parabolic", "pde-hyperbolic", "tisode", "resnet-sde", "resnet-stiffness", "sonode"]
SHAPES = {"digits": ((1, 8, 8), 10), "cifar": ((3, 32, 32), 10), "pendulum": ((2,), 2)}
SIZES = {"smoke": {"width": 16, "depth": 3}, "standard": {"width": 64, "depth": 6},
         "paper": {"width": 16, "depth": 18, "stages": 3}}  # benchmarks/protocols.py's model_overrides


def build(name: str, shape: str = "digits", seed: int = 0, **size) -> zoo.DepthModel:
    input_shape, classes = SHAPES[shape]
    torch.manual_seed(seed)
    return zoo.create_model(name, input_shape=input_shape, num_classes=classes, **size)


@pytest.mark.parametrize("name", NEW)
@pytest.mark.numerics
def test_passes_the_model_contract(name: str) -> None:
    report = check_model(name, ["digits", "pendulum"], {"width": 8, "depth": 2})
    assert report.ok, report.text()


# Every tier's size class on every input shape, except multi-stage sizes on vectors (vector inputs take one stage).
@pytest.mark.parametrize(("tier", "shape"), [(tier, shape) for tier in SIZES for shape in SHAPES
                                             if len(SHAPES[shape][0]) > 1 or SIZES[tier].get("stages", 1) == 1])
@pytest.mark.numerics
def test_parameter_matched_to_the_resnet(tier: str, shape: str) -> None:
    size = SIZES[tier]
    target = count_params(build("resnet", shape, **size))
    counts = {name: count_params(build(name, shape, **size)) for name in NEW}
    assert all(abs(c - target) / target < 0.075 for c in counts.values()), (target, counts)


# Smoke-size models, a few epochs on digits (chance 0.1): test accuracies measured 0.45 (tisode) to 0.85; the
# adaptive models train with looser tolerances, the stiffness penalty on a cheaper estimate.
TRAINING = {
    "anodev2": ({}, Recipe(epochs=4, batch_size=32, lr=5e-3)),
    "sonode": ({"rtol": 1e-2, "atol": 1e-2}, Recipe(epochs=3, batch_size=32, lr=1e-2)),
    "pde-parabolic": ({}, Recipe(epochs=4, batch_size=32, lr=5e-3)),
    "pde-hyperbolic": ({}, Recipe(epochs=4, batch_size=32, lr=5e-3)),
    "tisode": ({"rtol": 1e-2, "atol": 1e-2}, Recipe(epochs=3, batch_size=32, lr=1e-2)),
    "resnet-sde": ({}, Recipe(epochs=4, batch_size=32, lr=5e-3)),
    "resnet-stiffness": ({"samples": 4, "iterations": 2}, Recipe(epochs=4, batch_size=32, lr=5e-3)),
}


@pytest.fixture(scope="module")
def digits():
    task = get_task("digits")
    return task, task.load()


@pytest.mark.parametrize("name", NEW)
def test_trains_on_digits_above_chance(digits, name: str) -> None:
    task, data = digits
    overrides, recipe = TRAINING[name]
    model = build(name, **SIZES["smoke"], **overrides)
    result = train(model, data, task, recipe, device=torch.device("cpu"), seed=0)
    accuracy = evaluate(model, data.test, task, torch.device("cpu"))
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert accuracy > 0.25, (name, accuracy, result.history)


# --------------------------------------------------------------- PDE-motivated (Ruthotto & Haber)


def _spread(block: torch.nn.Module, h: torch.Tensor, dh: torch.Tensor) -> float:
    """Largest ratio |block(h + dh) - block(h)| / |dh| over the batch: how much the stage amplifies perturbations."""
    with torch.no_grad():
        return ((block(h + dh) - block(h)).flatten(1).norm(dim=1) / dh.flatten(1).norm(dim=1)).max().item()


@pytest.mark.numerics
def test_parabolic_stage_never_amplifies_perturbations_where_a_resnet_does() -> None:
    """dy/dt = -K^T relu(Ky + b) is a gradient flow: 50 random layers contract perturbations; 25 ResNet blocks
    (the same parameter budget) amplify them."""
    x = torch.rand(8, 16, 8, 8)
    dx = 1e-3 * torch.randn_like(x)
    parabolic, plain = build("pde-parabolic", width=16, depth=25), build("resnet", width=16, depth=25)
    assert _spread(parabolic.blocks[0], x, dx) <= 1.0
    assert _spread(plain.blocks[0], x, dx) > 2.0


def _conv_operator_norm(weight: torch.Tensor, size: int = 8, iterations: int = 200) -> float:
    """||conv(., weight)|| on size x size images, zero padded, by power iteration on the operator itself."""
    x = torch.randn(1, weight.shape[1], size, size, dtype=torch.float64)
    for _ in range(iterations):
        x = F.conv_transpose2d(F.conv2d(x, weight, padding=1), weight, padding=1)
        x = x / x.norm()
    return F.conv2d(x, weight, padding=1).norm().item()


@pytest.mark.parametrize("kind", ["parabolic", "hyperbolic"])
@pytest.mark.parametrize("image", [False, True])
@pytest.mark.numerics
def test_trained_weights_cannot_leave_the_schemes_stability_bound(kind: str, image: bool) -> None:
    """However large training makes K (pendulum's reached ||K|| ~ 40 at h = 1, and Euler blew up), the layer uses
    a K within the scheme's stability bound; for a convolution, the operator's own norm (power iteration on it)."""
    torch.manual_seed(0)
    layer = SymmetricLayer(6, 6 if image else 24, image, NORM_BOUND[kind]).double()
    with torch.no_grad():
        layer.K.weight.mul_(100.0)
        weight = layer.weight()
    if image:
        norm = _conv_operator_norm(weight)
    else:
        norm = torch.linalg.matrix_norm(weight, 2).item()
    # Rounding allowance of the layer's dtype: a few ulps of the Gram matrix's eigenvalue, whatever kernels run.
    rtol = 16 * torch.finfo(weight.dtype).eps
    assert norm <= NORM_BOUND[kind] * (1 + rtol)
    assert norm > 0.2 * NORM_BOUND[kind]  # rescaled onto the bound (image: up to the overlap factor), not zeroed
    if kind == "parabolic":  # forward Euler at h = 1 is then non-expansive: y - h K^T relu(Ky + b)
        shape = (16, 6, 8, 8) if image else (16, 6)
        a, b = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
        with torch.no_grad():
            gap = (a + layer(0.0, a)) - (b + layer(0.0, b))
        assert (gap.flatten(1).norm(dim=1) <= (a - b).flatten(1).norm(dim=1) * (1 + rtol)).all()


@pytest.mark.numerics
def test_a_layer_inside_the_bound_is_left_as_it_is() -> None:
    layer = SymmetricLayer(4, 8, False, NORM_BOUND["parabolic"])
    with torch.no_grad():
        layer.K.weight.mul_(1e-3)
        assert torch.equal(layer.weight(), layer.K.weight)


def _constant_in_depth(model: zoo.DepthModel) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """Layer 0's parameters in every layer, K already inside the stability bound (so the layer uses it as is)."""
    force = model.blocks[0].func.force
    with torch.no_grad():
        for stack in force.coefficients.values():
            stack[:] = stack[0]
        weight = force.coefficients["K__weight"]
        layer = SymmetricLayer(16, 16, True, NORM_BOUND["hyperbolic"])
        layer.K.weight.copy_(weight[0])
        weight.mul_((NORM_BOUND["hyperbolic"] / layer.operator_norm_bound()).clamp(max=1.0))
    return force, force.coefficients["K__weight"][0], force.coefficients["K__bias"][0]


@pytest.mark.numerics
def test_hyperbolic_leapfrog_conserves_energy_where_euler_blows_up() -> None:
    """With K constant in depth, E = |v|^2 / 2 + |relu(Ky + b)|^2 / 2 is conserved by y'' = -K^T relu(Ky + b).
    200 leapfrog steps keep E within a factor 2 of its start (the staggered velocity makes it oscillate); forward
    Euler on the same ODE (a manifestation of the same parameters) multiplies it by more than 100."""
    model = build("pde-hyperbolic", width=16, depth=3)
    force, weight, bias = _constant_in_depth(model)

    def energy(z: torch.Tensor) -> torch.Tensor:
        y, v = z.chunk(2, dim=1)
        return 0.5 * v.square().flatten(1).sum(1) + 0.5 * F.relu(F.conv2d(y, weight, bias, padding=1)).square() \
            .flatten(1).sum(1)

    y0 = torch.rand(4, 16, 8, 8)
    with torch.no_grad():
        start = energy(torch.cat([y0, torch.zeros_like(y0)], dim=1))
        states: list[torch.Tensor] = []
        leapfrog(force, y0, torch.zeros_like(y0), 0.0, 200.0, 200, states)
        ratios = torch.stack([energy(z) / start for z in states])
        assert 0.5 < ratios.min() and ratios.max() < 2.0, ratios.aminmax()
        euler = model.manifest("euler", 200).blocks[0]
        euler.t1 = 200.0
        track = euler.trajectory(y0)
        assert (energy(track.states[-1]) / start).min() > 100


@pytest.mark.numerics
def test_hyperbolic_leapfrog_is_reversible() -> None:
    """Leapfrog runs backwards exactly: from the last (y, v) the 12 layers give back the input (float64)."""
    model = build("pde-hyperbolic", width=16, depth=6).double()
    force = model.blocks[0].func.force
    y0 = torch.rand(3, 16, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        y, v = leapfrog(force, y0, torch.zeros_like(y0), 0.0, 12.0, 12)
        back, v0 = leapfrog_backward(force, y, v, 0.0, 12.0, 12)
    assert (y - y0).abs().max() > 1e-2  # it did move
    torch.testing.assert_close(back, y0, rtol=0, atol=1e-10)
    torch.testing.assert_close(v0, torch.zeros_like(v0), rtol=0, atol=1e-10)


@pytest.mark.numerics
def test_hyperbolic_forward_is_the_leapfrog_and_manifests_to_other_schemes() -> None:
    model = build("pde-hyperbolic", width=8, depth=2).eval()
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        h = model.stem(x)
        y, _ = leapfrog(model.blocks[0].func.force, h, torch.zeros_like(h), 0.0, 4.0, 4)
        torch.testing.assert_close(model(x), model.head(y))
        assert model.nfe == 4
        fine = model.manifest("rk4", 64)(x)
        assert fine.shape == (2, 10) and torch.isfinite(fine).all()
        assert torch.equal(model.manifest("leapfrog", 4)(x), model(x))


# --------------------------------------------------------------- TisODE


@pytest.mark.numerics
def test_tisode_rate_is_time_invariant() -> None:
    model = build("tisode", width=8, depth=2)
    func = model.blocks[0].func
    x = torch.randn(3, func.conv1.in_channels, 8, 8)
    with torch.no_grad():
        assert torch.equal(func(0.0, x), func(0.73, x)) and torch.equal(func(0.0, x), func(torch.tensor(5.0), x))


@pytest.mark.numerics
def test_tisode_regulariser_is_the_steady_state_term() -> None:
    """In training the regulariser is weight x int_T^2T |f(x(t))| dt (left Riemann sum on 4 Euler steps) past the
    block's output; in eval mode it is zero."""
    model = build("tisode", width=8, depth=2, weight=0.5)
    block = model.blocks[0]
    seen: list[torch.Tensor] = []
    block.register_forward_hook(lambda module, args, out: seen.append(out))
    model.train()
    model(torch.rand(4, 1, 8, 8))
    x, expected = seen[0], torch.zeros(())
    for k in range(4):
        rate = block.func(1.0 + k / 4, x)
        expected = expected + 0.25 * rate.abs().mean()  # per-sample means of equal sizes: the batch mean
        x = x + 0.25 * rate
    torch.testing.assert_close(model.regulariser(), 0.5 * expected)
    model.eval()
    model(torch.rand(4, 1, 8, 8))
    assert model.regulariser().item() == 0.0


@pytest.mark.numerics
def test_tisode_regulariser_decreases_in_training(digits) -> None:
    task, data = digits
    model = build("tisode", width=8, depth=2, weight=1.0, rtol=1e-2, atol=1e-2)
    x = data.train.inputs()[:64]

    def penalty() -> float:
        model.train()
        with torch.no_grad():
            model(x)
        return model.regulariser().item()

    before = penalty()
    train(model, data, task, Recipe(epochs=2, batch_size=32, lr=5e-3, max_train=320), device=torch.device("cpu"),
          seed=0)
    assert penalty() < 0.7 * before


# --------------------------------------------------------------- stiffness penalty


@pytest.mark.numerics
def test_sigma_max_estimate_matches_the_exact_jacobian_norm() -> None:
    torch.manual_seed(0)
    rate = torch.nn.Sequential(torch.nn.Linear(5, 32), torch.nn.Tanh(), torch.nn.Linear(32, 5)).double()
    x = torch.randn(4, 5, dtype=torch.float64)
    estimate = sigma_max(rate, x, iterations=100)
    exact = torch.stack([torch.linalg.matrix_norm(torch.autograd.functional.jacobian(rate, row), 2) for row in x])
    torch.testing.assert_close(estimate, exact, rtol=1e-4, atol=0)


@pytest.mark.numerics
def test_stiffness_penalty_is_differentiable_and_training_on_it_lowers_sigma() -> None:
    model = build("resnet-stiffness", width=8, depth=3, stiffness_weight=1.0)
    block = model.blocks[0]
    x = torch.rand(8, 1, 8, 8)

    def measured() -> float:  # the diagnostics' independent (20-iteration, non-differentiable) estimate
        with torch.no_grad():
            h = model.stem(x)
        return jacobian_sigma(block.func, 0.0, h, (0.0, 1.0), iterations=20).mean().item()

    model.train()
    model(x)
    penalty = model.regulariser()
    assert penalty.requires_grad and penalty.item() > 0
    params = dict(block.func.named_parameters())
    grads = dict(zip(params, torch.autograd.grad(penalty, list(params.values()), allow_unused=True)))
    assert grads["coefficients.conv1__weight"].abs().sum() > 0 and grads["coefficients.conv2__weight"].abs().sum() > 0
    assert grads["coefficients.conv2__bias"] is None  # the Jacobian does not see the last bias
    before = measured()
    optimizer = torch.optim.Adam(block.func.parameters(), lr=1e-2)
    for _ in range(30):
        model(x)
        optimizer.zero_grad()
        model.regulariser().backward()
        optimizer.step()
    assert measured() < 0.7 * before
    model.eval()
    model(x)
    assert model.regulariser().item() == 0.0


@pytest.mark.numerics
def test_stiffness_penalty_trains_under_bf16_autocast() -> None:
    """The standard tier trains with bf16 autocast: the penalty's forward-mode products must still run."""
    model = build("resnet-stiffness", **SIZES["smoke"]).train()
    x = torch.rand(8, 1, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(model(x).float(), torch.arange(8) % 10) + model.regulariser()
    loss.backward()
    assert torch.isfinite(model.regulariser()) and model.regulariser() > 0


# --------------------------------------------------------------- noise-injected ResNet / neural SDE


@pytest.mark.numerics
def test_sde_is_stochastic_in_eval_mode_reproducibly_under_a_seed_and_can_be_switched_off() -> None:
    model = build("resnet-sde", width=8, depth=3)
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        model.eval()
        assert model.stochastic and "stochastic" in zoo.capabilities(model)
        assert not torch.equal(model(x), model(x))  # a fresh draw per forward, as at test time in the papers
        torch.manual_seed(5)
        first = model(x)
        torch.manual_seed(5)
        assert torch.equal(model(x), first)  # the global RNG's seed fixes the draw
        model.set_noise(torch.Generator().manual_seed(3))
        own = model(x)
        model.set_noise(torch.Generator().manual_seed(3))
        assert torch.equal(model(x), own) and not model.stochastic  # a private generator: not the harness's to seed
        model.set_noise(enabled=False)
        drift = model(x)
        assert torch.equal(model(x), drift) and not torch.equal(drift, first) and not model.stochastic
        model.train()
        assert not torch.equal(model(x), model(x))  # training always draws


@pytest.mark.numerics
def test_sde_steps_are_euler_maruyama() -> None:
    """With the drift zeroed, a stage of T = depth unit steps adds Gaussian noise of std sigma sqrt(T)."""
    model = build("resnet-sde", width=8, depth=4, sigma=0.3)
    block = model.blocks[0]
    with torch.no_grad():
        for stack in block.func.drift.coefficients.values():
            stack.zero_()
        model.train()
        h = torch.zeros(256, 8, 8, 8)
        noise = block(h) - h
    assert abs(noise.std().item() - 0.3 * 4**0.5) < 0.03
    assert abs(noise.mean().item()) < 0.01


# --------------------------------------------------------------- ANODEV2


@pytest.mark.numerics
def test_anodev2_weights_follow_their_own_ode_in_depth() -> None:
    """theta(t) is the Euler solution of dtheta/dt = tanh(p * theta) from theta_0, and the block's forward is
    z_{k+1} = z_k + h f(z_k; theta_k) with those weights, written out by hand here."""
    model = build("anodev2", width=8, depth=4).eval()
    rate = model.blocks[0].func
    name = "conv1.weight"
    w0 = rate.initial["conv1__weight"]
    kernel = rate.kernels["conv1__weight"]
    q = torch.tanh(F.conv2d(w0.reshape(-1, 1, 3, 3), kernel, padding=1)).reshape(w0.shape)
    torch.testing.assert_close(rate.theta(0.25)[name], w0 + 0.25 * q)
    torch.testing.assert_close(rate.theta(0.125)[name], w0 + 0.125 * q)  # Euler's line between knots
    assert torch.equal(rate.theta(0.0)[name], w0)
    assert (rate.theta(1.0)[name] - w0).abs().max() > 1e-3  # the weights do change along depth
    assert torch.equal(rate.theta(1.0)["conv1.bias"], rate.initial["conv1__bias"])  # biases do not evolve
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        z = model.stem(x)
        for k in range(4):
            z = z + 0.25 * functional_call(rate._template, rate.theta(k / 4), (k / 4, z))
        torch.testing.assert_close(model(x), model.head(z))
    model(x).sum().backward()
    assert kernel.grad is not None and kernel.grad.abs().sum() > 0  # p is trained through theta's ODE


# --------------------------------------------------------------- SONODE


@pytest.mark.numerics
def test_sonode_state_is_position_and_velocity() -> None:
    """The block carries (x, v) with v = dx/dt along the solution and v(0) = g(x(0)); it outputs the position."""
    model = build("sonode", width=8, depth=2).double().eval()
    block = model.blocks[0]
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        h = model.stem(x)
        track = model.manifest("dopri5", rtol=1e-8, atol=1e-8).blocks[0].trajectory(h, points=64)
        states = torch.stack(track.states)
        position, velocity = states.chunk(2, dim=2)
        torch.testing.assert_close(velocity[0], block.velocity(h))
        torch.testing.assert_close(position[0], h)
        dt = track.times[1] - track.times[0]
        slope = (position[2:] - position[:-2]) / (2 * dt)  # central differences of the position
        assert (slope - velocity[1:-1]).abs().max() < 1e-2 * velocity.abs().max()
        torch.testing.assert_close(model.manifest("dopri5", rtol=1e-8, atol=1e-8)(x), model.head(position[-1]))
