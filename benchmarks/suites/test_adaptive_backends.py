"""torchdiffeq's per-batch steps against per-example steps (zoo/per_example.py, issue #24), side by side.

neural-ode and anode on 28x28 single-channel images (Fashion-MNIST), at the cpu tier's size on a CPU (width 16,
depth 3) and the standard tier's on a GPU, briefly trained with the default backend so that examples differ in
how hard their dynamics are; then the same weights are timed with each backend at the same tolerance (the zoo's
dopri5, rtol = atol = 1e-3): the forward (evaluation) and forward + backward (a training step's work, direct
backpropagation) of one batch of 128 (the cpu tier's training batch) and of 500 (its evaluation batch).
extra_info keeps the NFE: the batch's under torchdiffeq (every example is integrated with all of its steps), under
per-example steps the mean over examples (the model's `nfe`), their spread, and `nfe_batch`, the evaluations the
batch actually made (the slowest example's: every call evaluates the whole batch, finished examples riding along
with zero steps), which is what the time pays for.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

import zoo
from benchmarks.data.tasks import DataMissingError, get_task
from benchmarks.evaluation.timing import sync
from benchmarks.protocols import CPU, STANDARD

BACKENDS = ("torchdiffeq", "per-example")
TRAIN_STEPS, TRAIN_BATCH = 20, 128  # Adam steps at lr 5e-3 before timing: dynamics that differ between examples


def _size(device: torch.device) -> dict:
    return dict(STANDARD.model_overrides if device.type == "cuda" else CPU.model_overrides)


@pytest.fixture(scope="module")
def images():
    task = get_task("fashion-mnist")
    try:
        data = task.load(limit=TRAIN_STEPS * TRAIN_BATCH)
    except DataMissingError as error:
        pytest.skip(f"28x28 images needed: {error}")
    return task, data


@pytest.fixture(scope="module")
def trained(images, device: torch.device) -> dict[str, zoo.DepthModel]:
    """Each model after TRAIN_STEPS steps with the default backend (the same weights serve both backends)."""
    task, data = images
    x, y = data.train.inputs().to(device), data.train.y.to(device)
    models = {}
    for name in ("neural-ode", "anode"):
        torch.manual_seed(0)
        model = zoo.create_model(name, input_shape=task.input_shape, num_classes=task.num_classes,
                                 **_size(device)).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
        for step in range(TRAIN_STEPS):
            part = slice(step * TRAIN_BATCH, (step + 1) * TRAIN_BATCH)
            loss = F.cross_entropy(model(x[part]), y[part])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        models[name] = model
    return models


def _nfe_info(model: zoo.DepthModel) -> dict:
    counts = model.nfe_per_example
    if counts is None:  # torchdiffeq: every example is integrated with all of the batch's steps
        return {"nfe": model.nfe, "nfe_batch": model.nfe}
    calls = sum(block.per_example_solve.calls for block in model.blocks)
    return {"nfe": model.nfe, "nfe_min": int(counts.min()), "nfe_max": int(counts.max()), "nfe_batch": calls}


# The top decorator varies fastest: the two backends run one right after the other on each case, so that a shared
# machine's load, which drifts over minutes, weighs on both alike.
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["forward", "forward-backward"])
@pytest.mark.parametrize("batch", [128, 500], ids=["bs128", "bs500"])
@pytest.mark.parametrize("name", ["neural-ode", "anode"])
def test_adaptive_backend(benchmark, name: str, backend: str, batch: int, mode: str, images, trained,
                          device: torch.device) -> None:
    task, data = images
    model = trained[name].manifest(backend=backend)  # the same parameters, per batch or per example
    x, y = data.test.inputs()[:batch].to(device), data.test.y[:batch].to(device)

    def forward() -> None:
        with torch.no_grad():
            model(x)
        sync(device)

    def forward_backward() -> None:
        F.cross_entropy(model(x), y).backward()
        model.zero_grad(set_to_none=True)
        sync(device)

    benchmark.extra_info.update({"model": name, "backend": backend, "batch": batch, "mode": mode,
                                 "task": task.name, "device": str(device), "size": _size(device),
                                 "solver": model.solvers[0].describe(), "train_steps": TRAIN_STEPS})
    benchmark.pedantic(forward if mode == "forward" else forward_backward, warmup_rounds=1, rounds=7, iterations=1)
    benchmark.extra_info.update(_nfe_info(model))
