"""Inference time of every zoo model: batch-1 latency and large-batch throughput.

Models are built at the standard tier's size on a GPU and at the smoke tier's size on a CPU (where the
standard size would make this suite take many minutes for numbers nobody should compare with GPU ones).
"""

from __future__ import annotations

import pytest
import torch

import zoo
from benchmarks.evaluation.timing import sync
from benchmarks.protocols import SMOKE, STANDARD


def _size(device: torch.device) -> dict:
    return dict(STANDARD.model_overrides if device.type == "cuda" else SMOKE.model_overrides)


def _model(name: str, task, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    model = zoo.create_model(name, input_shape=task.input_shape, num_classes=task.num_classes, **_size(device))
    return model.to(device).eval()


@pytest.mark.parametrize("batch", [1, 256], ids=["latency-bs1", "throughput-bs256"])
@pytest.mark.parametrize("name", STANDARD.models)
def test_inference(benchmark, name: str, batch: int, bench_data, device: torch.device) -> None:
    task, data = bench_data
    model = _model(name, task, device)
    x = data.test.inputs()[:batch].to(device)
    if len(x) < batch:
        x = x.repeat((batch + len(x) - 1) // len(x), *([1] * (x.dim() - 1)))[:batch]

    def forward() -> None:
        with torch.inference_mode():
            model(x)
        sync(device)

    benchmark.extra_info.update({"model": name, "task": task.name, "batch": batch, "device": str(device),
                                 "size": _size(device)})
    benchmark.pedantic(forward, warmup_rounds=3, rounds=20 if batch == 1 else 10, iterations=1)
    benchmark.extra_info["nfe"] = model.nfe
