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




def _seconds(value: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value / 1e-9:.3g} ns"


def summary_lines(benchmarks: list, report: str | None) -> list[str]:
    """One short line per benchmark (median and IQR of its rounds), then where the full report is: what `tox -e bench`
    shows instead of pytest-benchmark's 250-column table, so that the bench ends with the user's own results."""
    lines = [f"pytest-benchmark: {len(benchmarks)} benchmarks, median (IQR) per call:"]
    width = max((len(b.name) for b in benchmarks), default=0)
    for bench in sorted(benchmarks, key=lambda b: b.name):
        if bench.has_error or not bench.stats:
            lines.append(f"  {bench.name:<{width}}  error")
            continue
        lines.append(f"  {bench.name:<{width}}  {_seconds(bench.stats.median)} ({_seconds(bench.stats.iqr)}), "
                     f"{bench.stats.rounds} rounds")
    if report:
        lines.append(f"every statistic and the machine: {report}")
    return lines


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """With --benchmark-quiet (tox.ini's bench), a compact summary in place of pytest-benchmark's table."""
    session = getattr(config, "_benchmarksession", None)
    if session is None or not config.getoption("benchmark_quiet", default=False) or not session.benchmarks:
        return
    report = config.getoption("benchmark_json", default=None)
    for line in summary_lines(session.benchmarks, getattr(report, "name", report)):
        terminalreporter.write_line(line)
