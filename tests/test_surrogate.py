"""The same-size ResNet surrogate: trained like the resnet row, cached once, retrained when damaged, and its
transferred PGD examples counted in the worst case and in the black-box sanity check."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_attacks import SMALL, Quantised, digits, one_thread, resnet  # noqa: F401 - pytest fixtures

import zoo
from benchmarks.data.tasks import get_task
from benchmarks.evaluation import attacks, surrogate
from benchmarks.protocols import SMOKE, recipe_for
from benchmarks.reporting.tables import attack_key
from benchmarks.specs import DOCS as METRIC_DOCS
from benchmarks.training.train import seed_everything, train

pytestmark = pytest.mark.numerics  # float comparisons: run again under each lower CPU capability (cpu_capabilities.py)

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def task_data():
    task = get_task("digits")
    return task, task.load()


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPTHBENCH_CACHE", str(tmp_path))
    return tmp_path


def _refuse(*args, **kwargs):
    raise AssertionError("the surrogate was trained again instead of read from the cache")


def test_the_cached_surrogate_is_the_resnet_row_bit_for_bit_and_is_reused(task_data, cache, monkeypatch) -> None:
    task, data = task_data
    cached = surrogate.resnet_surrogate(task, data, SMOKE, 1, CPU, "neural-ode")
    path = surrogate.surrogate_path(task, SMOKE, 1)
    assert path.is_file() and path.is_relative_to(cache) and SMOKE.training_hash(task.name) in path.name
    # A tier version that measures otherwise but trains alike shares it; one that trains otherwise does not.
    measures_more = dataclasses.replace(SMOKE, version=SMOKE.version + 1,
                                        evaluation=dataclasses.replace(SMOKE.evaluation, pgd_steps=3))
    assert surrogate.surrogate_path(task, measures_more, 1) == path
    retrained = dataclasses.replace(measures_more, training_version=SMOKE.training_version + 1)
    assert surrogate.surrogate_path(task, retrained, 1) != path
    # What run_one does for the resnet row of seed 1.
    seed_everything(1)
    row = zoo.create_model("resnet", input_shape=task.input_shape, num_classes=task.num_classes,
                           **SMOKE.model_overrides)
    train(row, data, task, recipe_for(SMOKE, task.name), device=CPU, seed=1)
    for (name, a), b in zip(row.state_dict().items(), cached.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    monkeypatch.setattr(surrogate, "train", _refuse)
    again = surrogate.resnet_surrogate(task, data, SMOKE, 1, CPU, "neural-ode")
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), cached.state_dict().values()))
    assert not again.training


def test_a_corrupt_cache_is_retrained_and_the_resnet_and_regression_need_none(task_data, cache) -> None:
    task, data = task_data
    path = surrogate.surrogate_path(task, SMOKE, 0)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a state dict")
    with pytest.warns(UserWarning, match="retraining"):
        model = surrogate.resnet_surrogate(task, data, SMOKE, 0, CPU, "anode")
    assert torch.load(path, weights_only=True).keys() == model.state_dict().keys()  # rewritten whole
    assert surrogate.resnet_surrogate(task, data, SMOKE, 0, CPU, "resnet") is None
    assert surrogate.resnet_surrogate(get_task("pendulum"), data, SMOKE, 0, CPU, "anode") is None


def _suite(model, digits, surrogate, grid=(0.05, 0.1), headline=0.1):  # noqa: F811 - digits is a fixture value
    x, y = digits
    return attacks.robustness_suite(model, x[1400:1500], y[1400:1500], eps_grid=grid, headline_eps=headline,
                                    ev=SMALL, batch_size=64, seed=0, surrogate=surrogate)


def test_the_resnet_transfer_is_inside_the_worst_case(resnet, digits) -> None:  # noqa: F811
    torch.manual_seed(3)
    other = zoo.create_model("resnet", input_shape=(1, 8, 8), num_classes=10, width=8, depth=2).eval()
    suite = _suite(other, digits, resnet)
    for eps, result in suite.by_eps.items():
        key = f"{eps:.3g}"
        assert f"transfer_resnet@{key}" in suite.metrics
        survived = result.survived("transfer_resnet", suite.n)
        assert not (result.robust & ~survived).any()  # worst case <= the transfer attack, per example
        assert suite.metrics[f"robust@{key}"] <= suite.metrics[f"transfer_resnet@{key}"]
    assert "transfer_resnet@0.1" not in _suite(other, digits, None).metrics
    assert "transfer_resnet@<eps>" in METRIC_DOCS and attack_key("transfer_resnet@0.1") is not None  # CSV column


def test_a_surrogate_that_breaks_what_white_box_missed_flags_the_row(resnet, digits) -> None:  # noqa: F811
    # Quantising the input masks every gradient; the unmasked ResNet's PGD examples still break it.
    masked = Quantised(resnet).eval()
    without = _suite(masked, digits, None, grid=(0.1,), headline=None)  # no Square: only the surrogate is black-box
    assert "unreliable:black-box-beats-white-box@0.1" not in without.flags
    suite = _suite(masked, digits, resnet, grid=(0.1,), headline=None)
    assert "unreliable:black-box-beats-white-box@0.1" in suite.flags
    assert suite.metrics["robust@0.1"] < without.metrics["robust@0.1"]
