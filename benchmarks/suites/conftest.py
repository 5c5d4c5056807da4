"""pytest-benchmark suites: `pytest benchmarks/suites --benchmark-only --benchmark-json=out.json`.

Timings are CUDA-synchronised inside the timed function, warmed up, and reported by pytest-benchmark
as median and IQR; the JSON's machine info carries the GPU name, driver and torch version.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from benchmarks.data.tasks import get_task
from benchmarks.store.machine import machine_info as describe_machine


def pytest_configure(config: pytest.Config) -> None:
    """pytest-benchmark writes --benchmark-json at the end of the session but does not create its folder."""
    path = config.getoption("benchmark_json", default=None)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def pytest_benchmark_update_machine_info(config, machine_info: dict) -> None:
    """pytest-benchmark hook: add the GPU name, driver, CUDA and torch versions to the JSON's machine info."""
    machine_info["depthbench"] = {**describe_machine(), "bench_task": bench_task_name()}


def bench_task_name() -> str:
    """fashion-mnist on a GPU (the reference figures' task), bundled digits on a CPU unless told otherwise."""
    return os.environ.get("DEPTHBENCH_BENCH_TASK", "fashion-mnist" if torch.cuda.is_available() else "digits")


@pytest.fixture(scope="session")
def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(scope="session")
def bench_data():
    """The benchmark task, capped on CPU so the suite stays a few minutes long."""
    task = get_task(bench_task_name())
    limit = None if torch.cuda.is_available() else int(os.environ.get("DEPTHBENCH_BENCH_LIMIT", "2048"))
    return task, task.load(limit=limit)


