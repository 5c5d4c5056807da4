"""tests/cpu_capabilities.py: the numerics tests run again at each SIMD level below this CPU's, and a pass that
asks for a level PyTorch does not take is refused rather than run at the native level."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import cpu_capabilities
from data_on_disk import REPO
from waiting import SAFETY_NET_S

PROBE = '''
import pytest
import torch


@pytest.mark.numerics
def test_probe():
    # a float comparison that holds only at {level}, as 1e-9 on a float32 norm held only under 'default'
    assert torch.backends.cpu.get_cpu_capability() == "{level}"
'''


def test_the_levels_below_this_cpus_and_the_marker_combined_with_the_callers() -> None:
    assert cpu_capabilities.lower_levels("avx512", "x86_64") == ["default", "avx2"]
    assert cpu_capabilities.lower_levels("avx2", "x86_64") == ["default"]
    assert cpu_capabilities.lower_levels("default", "x86_64") == []
    assert cpu_capabilities.lower_levels("sve256", "aarch64") == []
    assert cpu_capabilities.pytest_arguments(["-q", "-n", "auto"]) == ["-m", "numerics", "-q", "-n", "auto"]
    assert cpu_capabilities.pytest_arguments(["-m", "not slow", "tests/x.py"]) == \
        ["-m", "numerics and (not slow)", "tests/x.py"]
    env = cpu_capabilities.pass_environment("default", {})
    assert env == {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
                   "ONEDNN_MAX_CPU_ISA": "SSE41"}


def test_a_numerics_test_that_holds_only_at_one_level_fails_the_passes(tmp_path) -> None:
    native = cpu_capabilities.native_capability()
    levels = cpu_capabilities.lower_levels(native)
    if not levels:
        pytest.skip(f"this CPU runs at {native}: no lower x86-64 level to run at")
    for level in (native, levels[0]):
        (tmp_path / f"test_{level}.py").write_text(PROBE.format(level=level.upper()))
    args = ["-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path)]
    # holds only at this CPU's own level: every lower pass fails, and the runner with them
    assert cpu_capabilities.main([*args, str(tmp_path / f"test_{native}.py")]) == 1
    # holds only at the lowest level: the first pass really ran there (and the others fail)
    assert cpu_capabilities.main([*args, str(tmp_path / f"test_{levels[0]}.py")]) == (1 if len(levels) > 1 else 0)


def test_a_level_pytorch_does_not_take_is_refused() -> None:
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only",
                           "tests/test_setup.py"], cwd=REPO, capture_output=True, text=True, timeout=SAFETY_NET_S,
                          env={**os.environ, "ATEN_CPU_CAPABILITY": "avx1024"})
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    assert "ATEN_CPU_CAPABILITY=avx1024 did not take" in done.stderr
