"""Inference time of every zoo model at the standard size: batch-1 latency and large-batch throughput."""

from __future__ import annotations

import pytest
import torch

import zoo
from benchmarks.protocols import STANDARD
from benchmarks.suites.conftest import sync


def _model(name: str, task, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    model = zoo.create_model(name, input_shape=task.input_shape, num_classes=task.num_classes,
                             **STANDARD.model_overrides)
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

    benchmark.extra_info.update({"model": name, "task": task.name, "batch": batch, "device": str(device)})
    benchmark.pedantic(forward, warmup_rounds=3, rounds=20 if batch == 1 else 10, iterations=1)
    benchmark.extra_info["nfe"] = model.nfe
