"""Shared test settings: tiny models run fastest (and most repeatably) on one intra-op thread; no test reaches a
Slurm cluster it did not start; a pass asked to run at a CPU capability (tests/cpu_capabilities.py) really runs at
it; and the fixtures of the command-line tests (a checkout to stand in, instant runs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from benchmarks.execution import runs
from benchmarks.protocols import SMOKE
from benchmarks.store.records import save_record

from cli_helpers import fake_record

torch.set_num_threads(1)
# Slurm's commands (squeue in `depthbench status`, ...) find no cluster in this session and its subprocesses: on a
# login node they would otherwise query, or submit to, the production queue. test_slurm.py starts its own.
os.environ["SLURM_CONF"] = str(Path(__file__).with_name("no-slurm-cluster.conf"))


@pytest.fixture
def fake_runs(monkeypatch):
    """Instant runs: records with accuracy 0.6, failed for models in `failing`; `calls` lists what ran."""
    state = {"calls": [], "failing": set()}

    def run_one(protocol, task, data, model_name, seed, device, on_epoch=None, concurrent_runs=1, checkpoint=None):
        state["calls"].append((task.name, model_name, seed))
        return fake_record(protocol, task.name, model_name, seed, failed=model_name in state["failing"])

    monkeypatch.setattr(runs, "run_one", run_one)
    return state


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A fresh checkout's top level as the working directory: README, CITATION and a published store."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DEPTHBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home-data"))  # where a store outside a checkout would go
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'depthbench'\n")
    (tmp_path / "README.md").write_text("# readme\n<!-- leaderboard:start -->\nold\n<!-- leaderboard:end -->\n")
    (tmp_path / "CITATION.cff").write_text("cff-version: 1.2.0\n")
    save_record(tmp_path / "results", fake_record(SMOKE, "digits", "resnet", 0, accuracy=0.62))
    save_record(tmp_path / "results", fake_record(SMOKE, "digits", "anode", 0, accuracy=0.95))
    return tmp_path


def pytest_configure(config: pytest.Config) -> None:
    # PyTorch ignores an ATEN_CPU_CAPABILITY the CPU lacks (or misspelt) with a warning and runs at its own level:
    # such a pass would prove nothing about the level it names, so it stops here.
    asked = os.environ.get("ATEN_CPU_CAPABILITY", "").strip().lower()
    running = torch.backends.cpu.get_cpu_capability().lower()
    if asked and asked != running:
        raise pytest.UsageError(f"ATEN_CPU_CAPABILITY={asked} did not take: PyTorch runs at {running.upper()} "
                                f"(a level this CPU lacks, or a misspelt one; valid here: default, avx2, avx512 "
                                f"up to the CPU's own)")


def pytest_report_header(config: pytest.Config) -> str:
    return f"CPU capability: {torch.backends.cpu.get_cpu_capability()} (torch {torch.__version__})"
