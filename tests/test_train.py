"""The training loop's fast paths, exercised on the CPU: bf16 autocast, channels-last weights, augmentation,
torch.compile (traced with the aot_eager backend: the same graphs as inductor, no C++ compiler needed)."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

import zoo
from benchmarks.data.tasks import get_task
from benchmarks.protocols import Recipe
from benchmarks.training import train as train_module
from benchmarks.training.train import augment, channels_last, evaluate, train, training_forward

pytestmark = pytest.mark.numerics  # float comparisons: run again under each lower CPU capability (cpu_capabilities.py)


@pytest.fixture(scope="module")
def digits():
    task = get_task("digits")
    return task, task.load()


# bf16 convolutions have no native kernels on CPUs without AVX-512 BF16 (they are emulated: slow, and rounded
# differently from CPU to CPU), so each run here is as short as its check allows and every threshold has a wide
# margin over what any x86-64 CPU gives (measured on an AMD EPYC without AVX-512 and on Intel Xeons).
BF16_RUNS = {
    # Fixed steps: ~150 constant-lr steps take the test accuracy to 0.47-0.6 (any seed); chance is 0.1.
    "continuousnet": ({}, Recipe(epochs=4, batch_size=32, lr=1e-2, schedule="constant", amp_bf16=True)),
    # Adaptive dopri5 under autocast (its state stays fp32) is ~10x dearer per step: it fits 64 images for
    # 12 steps, which lowers their loss by 0.10-0.14 (any seed), and is checked on that.
    "neural-ode": ({"rtol": 1e-2, "atol": 1e-2},
                   Recipe(epochs=6, batch_size=32, lr=1e-2, schedule="constant", max_train=64, amp_bf16=True)),
}


@pytest.mark.parametrize("name", list(BF16_RUNS))
def test_bf16_autocast_training_learns_and_evaluates_in_fp32(digits, name: str) -> None:
    task, data = digits
    kwargs, recipe = BF16_RUNS[name]
    torch.manual_seed(0)
    model = zoo.create_model(name, input_shape=task.input_shape, num_classes=10, width=8, depth=3, **kwargs)
    result = train(model, data, task, recipe, device=torch.device("cpu"), seed=0)
    losses = [entry["loss"] for entry in result.history]
    assert losses[-1] < losses[0] - 0.05, f"bf16 training must lower the loss: {losses}"
    with torch.no_grad():
        assert model(data.test.inputs()[:4]).dtype == torch.float32
    accuracy = evaluate(model, data.test, task, torch.device("cpu"))
    assert 0.0 <= accuracy <= 1.0
    if recipe.max_train is None:  # a full training run: clearly better than chance (0.1) on held-out digits
        assert result.val_metric > 0.25 and accuracy > 0.25, (result.val_metric, accuracy)


def test_ode_state_stays_fp32_under_autocast() -> None:
    torch.manual_seed(0)
    model = zoo.create_model("resnet", input_shape=(1, 8, 8), num_classes=10, width=8, depth=3)
    seen = []
    model.blocks[0].register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.rand(2, 1, 8, 8))
    assert seen == [torch.float32]


@pytest.mark.parametrize("name", ["resnet", "continuousnet", "anode"])
def test_channels_last_keeps_outputs_and_lays_out_every_coefficient_slice(name: str) -> None:
    torch.manual_seed(0)
    model = zoo.create_model(name, input_shape=(3, 32, 32), num_classes=10, width=8, depth=2).eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        channels_last(model)
        after = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    for param in model.parameters():
        if param.dim() == 4:
            assert param.is_contiguous(memory_format=torch.channels_last)
        if param.dim() == 5:
            assert all(param[i].is_contiguous(memory_format=torch.channels_last) for i in range(len(param)))


def test_augmentation_crops_and_flips_within_the_padded_image() -> None:
    x = torch.arange(1, 1 + 4 * 3 * 8 * 8, dtype=torch.float32).reshape(4, 3, 8, 8)
    pad = 2
    out = augment(x, "crop-flip", torch.Generator().manual_seed(0), pad=pad)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    for image, source in zip(out, padded):
        crops = [source[:, i:i + 8, j:j + 8] for i in range(2 * pad + 1) for j in range(2 * pad + 1)]
        assert any(torch.equal(image, c) or torch.equal(image, c.flip(2)) for c in crops)
    assert not torch.equal(out, x), "some sample must have moved"
    assert torch.equal(augment(x, "none", torch.Generator()), x)


@pytest.mark.parametrize("name", ["resnet", "continuousnet", "inresnet-lambda"])
def test_compiled_training_is_one_graph_and_matches_eager(digits, name: str, monkeypatch) -> None:
    task, data = digits
    monkeypatch.setattr(train_module, "COMPILE_BACKEND", "aot_eager")
    results, weights = [], []
    for compile_ in (False, True):
        torch.manual_seed(0)
        model = zoo.create_model(name, input_shape=task.input_shape, num_classes=10, width=8, depth=2)
        torch._dynamo.reset()
        counters.clear()
        recipe = Recipe(epochs=1, batch_size=64, lr=5e-3, max_train=256, compile=compile_)
        results.append(train(model, data, task, recipe, device=torch.device("cpu"), seed=0))
        weights.append(model.state_dict())
    assert counters["stats"]["unique_graphs"] >= 1, "the compiled run must have traced the model"
    breaks = dict(counters["graph_break"])
    assert not breaks, f"a fixed-step model should trace into one graph: {breaks}"
    for key, value in weights[0].items():
        torch.testing.assert_close(weights[1][key], value, rtol=1e-4, atol=1e-5, msg=key)
    assert results[1].history[-1]["loss"] == pytest.approx(results[0].history[-1]["loss"], rel=1e-4)


def test_adaptive_models_are_not_compiled() -> None:
    compiled = Recipe(epochs=1, batch_size=8, compile=True)
    node = zoo.create_model("neural-ode", input_shape=(1, 8, 8), num_classes=10, width=8, depth=2)
    assert training_forward(node, compiled) is node  # torchdiffeq's host-driven step control breaks every graph
    resnet = zoo.create_model("resnet", input_shape=(1, 8, 8), num_classes=10, width=8, depth=2)
    assert training_forward(resnet, Recipe(epochs=1, batch_size=8)) is resnet
    wrapped = training_forward(resnet, compiled)
    assert wrapped is not resnet and set(wrapped.parameters()) == set(resnet.parameters())


@pytest.mark.parametrize("name", ["resnet", "continuousnet"])
def test_a_channels_last_bf16_training_step_is_as_accurate_as_the_default_layout(name: str) -> None:
    """What a CUDA training step does differently (train.py: channels-last weights and inputs under bf16 autocast),
    backward included. bf16 rounding alone moves these tiny models' gradients by 10-20% from fp32, differently for
    each layout, so the check is that channels-last adds no error of its own: its gradients are about as close to
    the fp32 ones as the default layout's (measured ratios 0.8-1.3), and in fp32 the two layouts agree."""
    torch.manual_seed(0)
    plain = zoo.create_model(name, input_shape=(3, 32, 32), num_classes=10, width=8, depth=2)
    fast = zoo.create_model(name, input_shape=(3, 32, 32), num_classes=10, width=8, depth=2)
    fast.load_state_dict(plain.state_dict())
    channels_last(fast)
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])

    def gradients(model: torch.nn.Module, inputs: torch.Tensor, bf16: bool) -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(inputs).float(), y)
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    nhwc = x.contiguous(memory_format=torch.channels_last)
    reference = gradients(plain, x, False)
    eps = torch.finfo(torch.float32).eps
    torch.testing.assert_close(gradients(fast, nhwc, False), reference, rtol=1e3 * eps,
                               atol=1e3 * eps * reference.abs().max().item())
    error = {layout: ((gradients(model, inputs, True) - reference).norm() / reference.norm()).item()
             for layout, model, inputs in (("default", plain, x), ("channels_last", fast, nhwc))}
    assert error["channels_last"] <= 3 * error["default"] and error["channels_last"] < 0.5, error
