"""Training checkpoints: a run interrupted after any epoch and resumed is bit-identical to an uninterrupted one."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
import torch

import zoo
from benchmarks.data.tasks import get_task
from benchmarks.protocols import Recipe
from benchmarks.training.checkpoint import TrainingCheckpoint
from benchmarks.training.train import seed_everything, train

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    task = get_task("digits")
    return task, task.load(limit=400)


class Interrupted(Exception):
    """Stands for the kill: raised right after the checkpoint of a given epoch is on disk."""


def _train(model_name: str, recipe: Recipe, digits, checkpoint: TrainingCheckpoint | None = None):
    task, data = digits
    seed_everything(3)
    model = zoo.create_model(model_name, input_shape=task.input_shape, num_classes=10, width=8, depth=3)
    result = train(model, data, task, recipe, device=CPU, seed=3, checkpoint=checkpoint)
    after = (random.random(), np.random.rand(), torch.rand(()).item())  # the generators go on where they would
    return model, result, after


def _untimed(result) -> dict:
    data = dataclasses.asdict(result)
    for key in ("train_seconds", "epoch_seconds"):
        data.pop(key)
    data["history"] = [{k: v for k, v in entry.items() if k != "seconds"} for entry in data["history"]]
    return data


RECIPES = {
    # Adam + one-cycle, augmentation drawing from the loop's own generator, a model drawing noise from torch's
    # global generator in training mode: every source of randomness the loop has.
    "onecycle-augment-noise": ("resnet-sde", Recipe(epochs=4, batch_size=64, lr=5e-3, augment="crop-flip")),
    # SGD with momentum buffers and a multistep schedule (its state holds a Counter of milestones)
    "sgd-multistep": ("continuousnet", Recipe(epochs=3, batch_size=64, optimizer="sgd", lr=0.05,
                                              schedule="multistep", milestones=(0.5,), weight_decay=5e-4)),
}


@pytest.mark.parametrize("case", list(RECIPES))
def test_an_interrupted_training_resumes_bit_identically(case, digits, tmp_path, monkeypatch) -> None:
    model_name, recipe = RECIPES[case]
    reference_model, reference, reference_after = _train(model_name, recipe, digits)
    identity = {"model": model_name, "seed": 3}
    for stop_after in range(1, recipe.epochs + 1):  # killed after every possible epoch, the last one included
        checkpoint = TrainingCheckpoint(tmp_path / f"stop{stop_after}.pt", identity)
        real_save = TrainingCheckpoint.save

        def save_then_die(self, epoch, stop_after=stop_after, real_save=real_save, **state):
            real_save(self, epoch, **state)
            if epoch == stop_after:
                raise Interrupted

        monkeypatch.setattr(TrainingCheckpoint, "save", save_then_die)
        with pytest.raises(Interrupted):
            _train(model_name, recipe, digits, checkpoint)
        monkeypatch.undo()
        assert checkpoint.path.is_file()
        model, resumed, after = _train(model_name, recipe, digits, checkpoint)  # a fresh process would do this
        assert _untimed(resumed) == _untimed(reference), f"stopped after epoch {stop_after}"
        for name, tensor in reference_model.state_dict().items():
            assert torch.equal(tensor, model.state_dict()[name]), f"{name} differs after stopping at {stop_after}"
        assert after == reference_after


def test_a_checkpoint_loads_with_weights_only_and_another_runs_is_ignored(digits, tmp_path, capsys) -> None:
    recipe = Recipe(epochs=2, batch_size=64, lr=5e-3)
    checkpoint = TrainingCheckpoint(tmp_path / "run.pt", {"model": "resnet", "seed": 3})
    _, first, _ = _train("resnet", recipe, digits, checkpoint)
    state = torch.load(checkpoint.path, weights_only=True)  # tensors and plain containers only
    assert state["epoch"] == 2 and state["identity"] == {"model": "resnet", "seed": 3}
    assert set(state["rng"]) == {"python", "numpy", "torch", "cuda", "generators"}
    # A complete checkpoint resumes to the end without training again: same result, no epoch rerun
    _, again, _ = _train("resnet", recipe, digits, checkpoint)
    assert _untimed(again) == _untimed(first)
    # Another run's checkpoint (other identity) and a damaged file are ignored, with a message, not resumed from
    other = TrainingCheckpoint(checkpoint.path, {"model": "resnet", "seed": 4})
    _, fresh, _ = _train("resnet", recipe, digits, other)
    assert "ignoring checkpoint" in capsys.readouterr().err and _untimed(fresh) == _untimed(first)
    checkpoint.path.write_bytes(b"not a checkpoint")
    _, fresh, _ = _train("resnet", recipe, digits, checkpoint)
    assert "ignoring unreadable checkpoint" in capsys.readouterr().err and _untimed(fresh) == _untimed(first)
