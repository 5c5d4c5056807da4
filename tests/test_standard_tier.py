"""The standard tier's code paths, end to end on CPU at toy scale.

The standard tier is meant for a GPU, so CI cannot run it as defined. This runs a copy that keeps everything of
STANDARD that picks a code path (its tasks and models, bf16 autocast training, crop + flip, one-cycle schedule,
each task's eps and sigma grids, PGD steps, the depth-transfer schemes, factors and tolerances, the diagnostics)
and shrinks only what sets the cost: examples, widths, epochs, subsets. A regression in any path that the GPU run
takes, short of CUDA itself, fails here rather than in a GPU session.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from benchmarks.cli import main
from benchmarks.data.tasks import DataMissingError, get_task
from benchmarks.evaluation.metrics import eps_key
from benchmarks.execution.runner import run_tier
from benchmarks.protocols import STANDARD
from benchmarks.store.records import iter_records

from data_on_disk import REPO, shared_data_dir, skip_or_fail

TOY_STANDARD = dataclasses.replace(
    STANDARD,
    name="standard-toy",
    seeds=(0,),
    device="cpu",
    data_limit=96,
    optional_tasks=(),
    model_overrides={"width": 8, "depth": 2},
    recipes={task: dataclasses.replace(recipe, epochs=2, batch_size=32) for task, recipe in STANDARD.recipes.items()},
    evaluation=dataclasses.replace(STANDARD.evaluation, attack_subset=24, transfer_subset=24, diagnostic_subset=8,
                                   latency_repeats=2, throughput_batch=16, eval_batch=48, pgd_steps=3,
                                   pgd_restarts=2, apgd_steps=3, apgd_restarts=1, square_queries=10,
                                   autoattack_targets=1),
)


def _data_dir() -> Path:
    """Where cifar10-jpeg.tar.xz is; fashion-mnist comes from Debian's package. CI has both."""
    directory = shared_data_dir() or REPO.parent / "shared/data"
    try:
        for task in STANDARD.tasks:
            get_task(task).load(directory, limit=1)
    except DataMissingError as error:
        skip_or_fail(f"the standard tier's data is missing: {error}")
    return directory


@pytest.fixture(scope="module")
def toy_standard(tmp_path_factory):
    root = tmp_path_factory.mktemp("standard-toy")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DEPTHBENCH_CACHE", str(root / "cache"))  # never write into the user's cache from a test
        summary = run_tier(TOY_STANDARD, results_dir=root / "results", data_dir=_data_dir(),
                           device=torch.device("cpu"), progress=False)
    assert len(summary.written) == len(STANDARD.tasks) * len(STANDARD.models) and not summary.failed
    assert main(["leaderboard", "--results", str(root / "results"), "--out", str(root / "leaderboards"),
                 "--readme", str(root / "README.md"), "--citation", str(root / "CITATION.cff")]) == 0
    return root


def test_every_model_completes_both_standard_tasks(toy_standard) -> None:
    records = {(r.task, r.model): r for _, r in iter_records(toy_standard / "results")}
    assert set(records) == {(task, model) for task in STANDARD.tasks for model in STANDARD.models}
    failed = {key: r.error for key, r in records.items() if r.status != "ok"}
    assert not failed
    for (task_name, _), record in records.items():
        task = get_task(task_name)
        assert record.protocol["hash"] == TOY_STANDARD.task_hash(task_name)
        for eps in task.attack_eps:  # the task's own grid: /255 units for CIFAR, 0.05.. for 28x28 grey
            assert {f"fgsm@{eps_key(eps)}", f"pgd@{eps_key(eps)}"} <= set(record.metrics)
        for sigma in task.noise_sigmas:
            assert f"noise@{eps_key(sigma)}" in record.metrics
        assert 0.0 <= record.metrics["accuracy"] <= 1.0 and record.metrics["train_seconds"] > 0
        assert record.metrics["line_shape"] >= 1.0 - 1e-5 and record.metrics["jacobian_sigma_max"] > 0


def test_the_depth_transfer_grid_is_the_standard_one(toy_standard) -> None:
    evaluation = STANDARD.evaluation
    for _, record in iter_records(toy_standard / "results"):
        grid = record.depth_transfer
        fixed = [e for e in grid if e["rtol"] is None]
        own = {e["scheme"] for e in fixed if e["trained"]}  # a scheme of the model's own (pde-hyperbolic: leapfrog)
        assert {e["scheme"] for e in fixed} == set(evaluation.transfer_schemes) | own
        assert sum(e["trained"] for e in grid) == 1
        if record.solver[0]["n_steps"] is None:  # adaptive (neural-ode, anode, tisode, sonode)
            assert sorted(e["rtol"] for e in grid if e["rtol"] is not None) == sorted(evaluation.transfer_tolerances)
        else:  # every scheme at 1/4x .. 4x the trained steps, where that is a whole number of steps
            (trained,) = [e["n_steps"] for e in grid if e["trained"]]
            steps = {int(trained * f) for f in evaluation.transfer_factors if (trained * f).is_integer()}
            assert max(steps) == 4 * trained
            for scheme in evaluation.transfer_schemes:
                assert {e["n_steps"] for e in fixed if e["scheme"] == scheme} == steps
            assert all(e["factor"] == e["n_steps"] / trained for e in fixed)


def test_leaderboards_have_a_table_per_standard_task(toy_standard) -> None:
    out = toy_standard / "leaderboards" / TOY_STANDARD.name
    for task in STANDARD.tasks:
        text = (out / f"{task}.md").read_text(encoding="utf-8")
        assert f"hash {TOY_STANDARD.task_hash(task)}" in text
        rows = [line for line in text.splitlines() if line.startswith("| ") and "/seed0.json" in line]
        assert len(rows) == len(STANDARD.models)
        assert (out / "plots" / f"{task}_depth_transfer.png").is_file()
