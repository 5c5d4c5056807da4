"""The odenet-params study (Chen et al.: the ODE-Net at 0.37x the ResNet's parameters) and seeds run in worker
processes (`depthbench study ... --workers N`)."""

from __future__ import annotations

import pytest
import torch

import zoo
from benchmarks.cli import main
from benchmarks.data.tasks import get_task
from benchmarks.protocols import Recipe
from benchmarks.store.studies import read_study
from benchmarks.studies import common, odenet_params


def test_matched_channels_are_the_closest_to_the_seeds_ratio() -> None:
    task = get_task("fashion-mnist")
    size = odenet_params.size_class("fashion-mnist")
    assert size == {"width": 16, "depth": 3}  # the cpu tier's size class
    channels, odenet, resnet = odenet_params.matched_channels(task, size)
    target = 0.22 / 0.60 * resnet

    def count(c: int) -> int:
        return zoo.count_params(zoo.create_model("neural-ode", input_shape=task.input_shape, num_classes=10, **size,
                                                 channels=c))

    assert resnet == zoo.count_params(zoo.create_model("resnet", input_shape=task.input_shape, num_classes=10, **size))
    assert odenet == count(channels)
    assert abs(odenet - target) <= abs(count(channels - 1) - target)
    assert abs(odenet - target) <= abs(count(channels + 1) - target)
    assert abs(odenet / resnet - 0.22 / 0.60) < 0.05


def test_plateau_gain_is_the_validation_gain_over_the_last_two_epochs() -> None:
    history = [{"val": v} for v in (0.70, 0.80, 0.85, 0.86, 0.861)]
    assert odenet_params.plateau_gain(history) == pytest.approx(0.861 - 0.85)
    assert odenet_params.plateau_gain(history[:2]) == pytest.approx(0.10)  # shorter than 2 epochs: from the start


def test_study_command_writes_the_odenet_params_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(common, "study_recipe", lambda task: Recipe(epochs=2, batch_size=32, lr=5e-3))
    monkeypatch.setattr(odenet_params, "EPOCHS", 4)
    code = main(["study", "odenet-params", "--task", "digits", "--seeds", "0", "--limit", "150", "--results",
                 str(tmp_path / "r"), "--out", str(tmp_path / "l")])
    assert code == 0
    study = read_study(tmp_path / "r" / "odenet-params" / "digits.json")
    summary = study["summary"]
    assert set(summary) == {"accuracy_difference", "odenet_accuracy", "resnet_accuracy", "param_ratio",
                            "odenet_plateau_gain", "resnet_plateau_gain", "odenet_nfe"}
    rows = {row["arm"]: row for row in study["rows"]}
    odenet, resnet = rows["odenet"], rows["resnet"]
    assert summary["param_ratio"]["values"] == [odenet["params"] / resnet["params"]]
    assert summary["accuracy_difference"]["values"] == [pytest.approx(odenet["accuracy"] - resnet["accuracy"])]
    assert summary["odenet_nfe"]["values"] == [odenet["nfe"]] and odenet["nfe"] >= 6  # dopri5: 6 stages a step
    curves = study["details"]["validation_curves"]["0"]
    assert len(curves["odenet"]) == len(curves["resnet"]) == 4  # the study's own epoch count, not the recipe's 2
    assert summary["resnet_plateau_gain"]["values"] == [pytest.approx(curves["resnet"][-1] - curves["resnet"][-3])]
    assert study["details"]["recipe"]["epochs"] == 4
    assert "0.22 M / 0.60 M = 0.37" in (tmp_path / "l" / "odenet-params" / "digits.md").read_text()


def test_seeds_in_worker_processes_give_the_same_values() -> None:
    # Each seed's result depends on its seed alone, not on the process it ran in (times aside).
    start = common.begin("digits", [0, 1], None, 100)
    start = start._replace(recipe=Recipe(epochs=3, batch_size=32, lr=5e-3))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers run (and `depthbench study` sets)
    try:
        here = common.run_seeds(odenet_params.one_seed, start, limit=100, workers=1)
    finally:
        torch.set_num_threads(threads)
    there = common.run_seeds(odenet_params.one_seed, start, limit=100, workers=2)
    for a, b in zip(here, there):
        assert a["curves"] == b["curves"] and a["values"] == b["values"]
    assert here[0]["curves"] != here[1]["curves"]  # the seeds do differ
    # the study's own split, every (arm, seed) a call of its own, variant by variant: the same arms
    arms = common.run_seeds(odenet_params.one_arm, start, limit=100, workers=2,
                            variants=[{"arm": arm} for arm in odenet_params.ARMS])
    assert [a["model"] for a in arms] == ["neural-ode", "neural-ode", "resnet", "resnet"]
    for k, seed in enumerate(start.seeds):
        split = odenet_params.combine(seed, {"odenet": arms[k], "resnet": arms[2 + k]})
        assert split["curves"] == here[k]["curves"] and split["values"] == here[k]["values"]
    with pytest.raises(ValueError, match="workers > 1 runs seeds in CPU processes"):
        common.run_seeds(odenet_params.one_seed, start._replace(device=torch.device("meta")), limit=100, workers=2)


def test_workers_is_refused_for_a_study_that_does_not_take_it(capsys) -> None:
    assert main(["study", "memory", "--workers", "2"]) == 2
    assert "--workers applies to the studies that run seeds in processes" in capsys.readouterr().err
