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

pytestmark = pytest.mark.numerics  # float comparisons: run again under each lower CPU capability (cpu_capabilities.py)

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


def test_the_runner_resumes_a_run_killed_mid_training_and_removes_finished_checkpoints(tmp_path, monkeypatch) -> None:
    from benchmarks.execution import runner, runs
    from benchmarks.protocols import SMOKE, Evaluation
    from benchmarks.store.records import iter_records

    from test_runner import _comparable

    protocol = dataclasses.replace(
        SMOKE, name="test-checkpoint", recipes={"pendulum": Recipe(epochs=4, batch_size=64, lr=5e-3)},
        evaluation=Evaluation(attack_subset=20, pgd_steps=2, pgd_restarts=1, apgd_steps=2, apgd_restarts=1,
                              square_queries=5, autoattack_targets=1, transfer_subset=20, transfer_factors=(1.0,),
                              transfer_tolerances=(1e-2,), latency_repeats=2, throughput_batch=16, eval_batch=200,
                              diagnostic_subset=16), data_limit=400)
    run = dict(models=["resnet"], tasks=["pendulum"], device=CPU, progress=False, check_models=False)
    runner.run_tier(protocol, results_dir=tmp_path / "kept", keep_checkpoints=True, **run)
    ((path, reference),) = iter_records(tmp_path / "kept")
    assert torch.load(runs.checkpoint_for(path), weights_only=True)["epoch"] == 4, "kept when asked"
    real_save = TrainingCheckpoint.save

    def save_then_die(self, epoch, **state):
        real_save(self, epoch, **state)
        if epoch == 2:
            raise KeyboardInterrupt  # Ctrl-C, or a kill, after the second epoch

    monkeypatch.setattr(TrainingCheckpoint, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        runner.run_tier(protocol, results_dir=tmp_path / "resumed", **run)
    monkeypatch.undo()
    checkpoint = runs.checkpoint_for(path.relative_to(tmp_path / "kept"))
    assert (tmp_path / "resumed" / checkpoint).is_file() and not list(iter_records(tmp_path / "resumed"))
    summary = runner.run_tier(protocol, results_dir=tmp_path / "resumed", **run)
    ((_, resumed),) = iter_records(tmp_path / "resumed")
    assert len(summary.written) == 1 and _comparable(resumed) == _comparable(reference)
    assert not (tmp_path / "resumed" / checkpoint).exists(), "a finished run's checkpoint is removed by default"


def test_a_tier_version_that_only_measures_more_adopts_the_kept_training(tmp_path) -> None:
    """`depthbench run` of a later tier version whose training is unchanged (same training hash, new protocol
    hash) takes the weights kept by the earlier version's `--keep-checkpoints` run instead of training again."""
    from benchmarks.execution import runner
    from benchmarks.protocols import SMOKE, Evaluation
    from benchmarks.store.records import iter_records

    evaluation = Evaluation(attack_subset=20, pgd_steps=2, pgd_restarts=1, apgd_steps=2, apgd_restarts=1,
                            square_queries=5, autoattack_targets=1, transfer_subset=20, transfer_factors=(1.0,),
                            transfer_tolerances=(1e-2,), latency_repeats=2, throughput_batch=16, eval_batch=200,
                            diagnostic_subset=16)
    earlier = dataclasses.replace(SMOKE, name="test-adopt", recipes={"pendulum": Recipe(epochs=3, batch_size=64,
                                                                                        lr=5e-3)},
                                  evaluation=evaluation, data_limit=300)
    later = dataclasses.replace(earlier, version=earlier.version + 1,
                                evaluation=dataclasses.replace(evaluation, pgd_steps=3))
    retrained = dataclasses.replace(later, version=later.version + 1, training_version=later.training_version + 1)
    assert later.task_hash("pendulum") != earlier.task_hash("pendulum")
    assert later.training_hash("pendulum") == earlier.training_hash("pendulum") != retrained.training_hash("pendulum")
    store = tmp_path / "store"
    run = dict(models=["resnet"], tasks=["pendulum"], device=CPU, progress=False, check_models=False,
               results_dir=store)
    runner.run_tier(earlier, keep_checkpoints=True, **run)
    runner.run_tier(later, **run)
    runner.run_tier(retrained, **run)
    records = {record.protocol["hash"]: record for _, record in iter_records(store)}
    first, adopted, fresh = (records[p.task_hash("pendulum")] for p in (earlier, later, retrained))
    kept = f"{earlier.task_hash('pendulum')}/resnet/seed0.checkpoint.pt"
    assert adopted.provenance["weights_from"]["protocol"] == earlier.task_hash("pendulum")
    assert adopted.provenance["weights_from"]["checkpoint"].endswith(kept)
    assert adopted.history == first.history and adopted.metrics["test_mse"] == first.metrics["test_mse"]
    assert "weights_from" not in fresh.provenance and "weights_from" not in first.provenance
    assert (store / "pendulum" / kept).is_file(), "the kept checkpoint is the earlier run's: left in place"
