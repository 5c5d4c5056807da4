"""The zoo's models: ResNet equivalence, depth transfer, refinement, NFE, sanity, registry and plugins."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import torch

import zoo
from benchmarks.protocols import ALL_MODELS
from zoo import registry
from zoo.layers import ConvRate
from zoo.template import count_params

pytestmark = pytest.mark.numerics  # float comparisons: run again under each lower CPU capability (cpu_capabilities.py)

SHAPES = {"digits": ((1, 8, 8), 10), "mnist": ((1, 28, 28), 10), "cifar": ((3, 32, 32), 10), "pendulum": ((2,), 2)}
FAMILIES = list(ALL_MODELS)  # every built-in model, read from the registry in zoo.models.ORDER
SMALL = {"width": 8, "depth": 3}


def small(name: str, shape: str = "digits", **overrides) -> zoo.DepthModel:
    input_shape, classes = SHAPES[shape]
    torch.manual_seed(0)
    return zoo.create_model(name, input_shape=input_shape, num_classes=classes, **{**SMALL, **overrides})


def test_every_family_is_registered() -> None:
    assert set(FAMILIES) <= set(zoo.list_models())
    assert zoo.list_models() == sorted(zoo.list_models())


def test_resnet_is_a_plain_residual_loop_bit_for_bit() -> None:
    """x_{k+1} = x_k + f_k(x_k) written out by hand with ordinary modules equals the zoo's resnet exactly."""
    model = small("resnet").eval()
    block = model.blocks[0]
    branches = []
    for k in range(3):
        branch = ConvRate(8)
        branch.load_state_dict({name.replace("__", "."): stack[k] for name, stack in block.func.coefficients.items()})
        branches.append(branch)
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        h = model.stem(x)
        for branch in branches:
            h = h + branch(0.0, h)
        expected = model.head(h)
        assert torch.equal(model(x), expected)
        assert torch.equal(model.manifest("euler", 3)(x), expected)


def test_resnet_equals_the_euler_piecewise_constant_continuousnet() -> None:
    resnet = small("resnet").eval()
    continuous = small("continuousnet", scheme="euler", basis="piecewise_constant", n_steps=3).eval()
    continuous.load_state_dict(resnet.state_dict())
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(resnet(x), continuous(x))


@pytest.mark.parametrize("name", ["resnet", "continuousnet", "inresnet"])
def test_refine_without_new_steps_leaves_output_unchanged(name: str) -> None:
    model = small(name).eval()
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        before = model(x)
        sizes = model.blocks[0].func.basis.size
        model.refine(refine_steps=False)
        assert model.blocks[0].func.basis.size > sizes
        after = model(x)
    if name == "continuousnet":  # midpoint coefficients are averages: equal up to rounding
        torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-6)
    else:
        assert torch.equal(after, before)


def test_refine_doubles_steps_and_parameters() -> None:
    model = small("resnet")
    params, steps = count_params(model), model.solvers[0].n_steps
    model.refine()
    assert model.solvers[0].n_steps == 2 * steps
    assert count_params(model) > params
    assert torch.isfinite(model(torch.rand(2, 1, 8, 8))).all()


def _convergence(model, x, scheme: str, steps: list[int], reference_steps: int) -> list[float]:
    with torch.no_grad():
        reference = model.manifest("rk4", reference_steps)(x)
        return [(model.manifest(scheme, n)(x) - reference).abs().max().item() for n in steps]


@pytest.mark.parametrize(("scheme", "order"), [("euler", 1), ("midpoint", 2), ("rk4", 4)])
def test_manifestations_of_a_smooth_continuous_model_converge_at_the_scheme_order(scheme: str, order: int) -> None:
    """ContinuousNet with the hat basis on a smooth (tanh) rate: self-convergence at the scheme's order."""
    torch.manual_seed(1)
    model = zoo.create_model("continuousnet", input_shape=(2,), num_classes=2, width=16, depth=2).double()
    x = torch.randn(16, 2, dtype=torch.float64)
    steps = [2, 4, 8, 16] if order == 4 else [4, 8, 16, 32]
    errors = _convergence(model, x, scheme, steps, reference_steps=256)
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    slope = np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert -slope == pytest.approx(order, abs=0.4), errors


def test_neural_ode_can_be_manifested_with_fixed_steps_and_tolerances() -> None:
    model = small("neural-ode", "pendulum").double().eval()
    x = torch.randn(8, 2, dtype=torch.float64)
    with torch.no_grad():
        tight = model.manifest("dopri5", rtol=1e-9, atol=1e-9)(x)
        errors = [(model.manifest("rk4", n)(x) - tight).abs().max().item() for n in (1, 2, 4, 8)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    fixed = model.manifest("rk4", 3)
    assert fixed.blocks[0].func is model.blocks[0].func  # same parameters, another graph
    with torch.no_grad():
        fixed(x)
    assert fixed.nfe == 12
    with pytest.raises(ValueError, match="rtol/atol, not n_steps"):
        model.manifest("dopri5", 4)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_models_are_sane(name: str, shape: str) -> None:
    model = small(name, shape).eval()
    input_shape, classes = SHAPES[shape]
    x = torch.rand(6, *input_shape, requires_grad=True)
    out = model(x)
    assert out.shape == (6, classes) and torch.isfinite(out).all()
    assert model.nfe > 0
    out.sum().backward()
    assert x.grad.abs().sum() > 0, "input gradients must be non-zero"
    with torch.no_grad():
        if getattr(model, "stochastic", False):  # random by design (zoo/contract.py): reproducible under a seed
            torch.manual_seed(0)
            first = model(x)
            torch.manual_seed(0)
            assert torch.equal(model(x), first), "a stochastic forward must be fixed by the global seed"
        else:
            assert torch.equal(model(x), model(x)), "forward must be deterministic"


@pytest.mark.parametrize("name", zoo.list_models())
def test_checkpoints_reload_strictly_into_a_fresh_model(name: str) -> None:
    """create -> forward -> state_dict -> strict load into a fresh model -> the same outputs, for every model.

    A forward must not add state: adaptive blocks once registered their call counter as a submodule, which put
    `blocks.N._counter.func.*` duplicates of every parameter into the checkpoint."""
    model = small(name).eval()
    x = torch.rand(4, 1, 8, 8)
    keys = set(model.state_dict())
    with torch.no_grad():
        torch.manual_seed(2)  # the same draw for a stochastic model (resnet-sde); no effect on the others
        expected = model(x)
    checkpoint = model.state_dict()
    assert set(checkpoint) == keys, sorted(set(checkpoint) ^ keys)
    torch.manual_seed(1)  # other initial weights: the load must overwrite all of them
    fresh = zoo.create_model(name, input_shape=(1, 8, 8), num_classes=10, **SMALL).eval()
    fresh.load_state_dict(checkpoint, strict=True)
    with torch.no_grad():
        torch.manual_seed(2)
        assert torch.equal(fresh(x), expected)


# adaptive steps are chosen for the whole batch; a stochastic model's noise is drawn for the whole batch
@pytest.mark.parametrize("name", [n for n in FAMILIES if not ({"batch_coupling", "stochastic"}
                                                              & set(zoo.model_card(n).capabilities))])
def test_fixed_step_logits_do_not_depend_on_the_rest_of_the_batch(name: str) -> None:
    model = small(name).eval()
    x = torch.rand(8, 1, 8, 8)
    with torch.no_grad():
        alone = model(x[:1])
        in_batch = model(x)[:1]
        in_other_batch = model(torch.cat([x[:1], torch.rand(5, 1, 8, 8)]))[:1]
    torch.testing.assert_close(alone, in_batch, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(alone, in_other_batch, rtol=1e-5, atol=1e-6)


def test_fixed_step_nfe_is_steps_times_stages_for_every_manifestation() -> None:
    model = small("continuousnet")
    for scheme in ["euler", "midpoint", "heun", "rk4", "rk4_38"]:
        for n in (1, 3, 5):
            twin = model.manifest(scheme, n)
            twin(torch.rand(2, 1, 8, 8))
            assert twin.nfe == n * zoo.get_tableau(scheme).stages


def test_adaptive_nfe_with_the_adjoint_counts_backward() -> None:
    model = small("neural-ode", adjoint=True)
    out = model(torch.rand(3, 1, 8, 8))
    assert model.nfe > 0 and model.nfe_backward == 0
    out.sum().backward()
    assert model.nfe_backward > 0


PAPER_SIZE = {"width": 16, "depth": 18, "stages": 3}  # ResNet-110-size stages, the paper tier's


@pytest.mark.parametrize("name", FAMILIES)
def test_multi_stage_models_run(name: str) -> None:
    torch.manual_seed(0)
    model = zoo.create_model(name, input_shape=(3, 32, 32), num_classes=10, width=8, depth=2, stages=3)
    out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    assert len(model.blocks) == 3 and len(model.solvers) == 3
    assert model.manifest("rk4", [1, 2, 3]).solvers[2].n_steps == 3


@pytest.mark.parametrize("size", [{}, {"width": 16, "depth": 3}, PAPER_SIZE], ids=["default", "smoke", "paper"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_families_are_parameter_matched(shape: str, size: dict) -> None:
    input_shape, classes = SHAPES[shape]
    if len(input_shape) == 1 and size.get("stages", 1) > 1:
        with pytest.raises(ValueError, match="single stage"):
            zoo.create_model("resnet", input_shape=input_shape, num_classes=classes, **size)
        return
    counts = {n: count_params(zoo.create_model(n, input_shape=input_shape, num_classes=classes, **size))
              for n in FAMILIES}
    target = counts["resnet"]
    assert all(abs(c - target) / target < 0.10 for c in counts.values()), counts


def test_cards_carry_citations() -> None:
    for name in FAMILIES:
        card = zoo.model_card(name)
        assert card.name == name and card.title and card.year > 2000 and (card.arxiv or card.doi or card.url)
        assert card.bibtex.startswith("@") and card.bibkey in card.bibtex
        # the arXiv abstract where there is one; resnet-stiffness's paper has only its publication page
        assert card.link.startswith("https://arxiv.org/abs/") or (not card.arxiv and card.link == card.url)
    assert small("resnet").card.family == "resnet"


def test_unknown_model_lists_known_ones() -> None:
    with pytest.raises(KeyError, match="known models: .*resnet"):
        zoo.create_model("resnet-9000", input_shape=(1, 8, 8), num_classes=10)


def test_bad_overrides_name_the_parameter_and_accepted_values() -> None:
    with pytest.raises(TypeError, match="no parameter 'colour'.*accepted: width, depth"):
        small("resnet", colour="red")
    with pytest.raises(ValueError, match="unknown scheme 'rk5'; accepted values: .*euler"):
        small("continuousnet", scheme="rk5")
    with pytest.raises(ValueError, match="width must be a positive int"):
        small("inresnet", width=0)
    with pytest.raises(ValueError, match="input_shape"):
        zoo.create_model("resnet", input_shape=(8, 8), num_classes=10)
    with pytest.raises(ValueError, match="adaptive"):
        small("continuousnet", scheme="dopri5")


def test_entry_point_plugins_are_discovered(tmp_path, monkeypatch) -> None:
    """A tiny installed distribution that declares a `depthbench.models` entry point, found with no core edit."""
    (tmp_path / "tinyplugin.py").write_text(textwrap.dedent("""
        import torch
        def tiny(input_shape, num_classes, *, width=4):
            return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(num_classes))
    """))
    info = tmp_path / "tinyplugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinyplugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[depthbench.models]\ntiny-linear = tinyplugin:tiny\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    try:
        assert "tiny-linear" in zoo.list_models()
        model = zoo.create_model("tiny-linear", input_shape=(1, 8, 8), num_classes=3, width=2)
        assert model(torch.rand(2, 1, 8, 8)).shape == (2, 3)
        assert zoo.model_card("tiny-linear").family == "plugin"
        with pytest.raises(TypeError, match="no parameter 'depth'"):
            zoo.create_model("tiny-linear", input_shape=(1, 8, 8), num_classes=3, depth=2)
    finally:
        sys.modules.pop("tinyplugin", None)
