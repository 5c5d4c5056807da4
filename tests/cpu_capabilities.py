"""Run the `numerics` tests again under every SIMD level below this CPU's own (tox.ini runs this after the suite).

PyTorch picks its vectorised kernels by the CPU (ATen's "capability": DEFAULT, AVX2 or AVX512 on x86-64), and so do
MKL and oneDNN; a reduction that sums in a different order ends a few ulps away. A test whose tolerance is not
derived from the dtype then passes on the CPU it was written on and fails on another (issue #20: 1e-9 on a float32
norm, failing under AVX2 and AVX512 only). The suite's main pass runs at this CPU's level; this runs the tests marked
`numerics` (float comparisons: engine, zoo, metrics, attacks, diagnostics, ...) once per lower level in a fresh
process, with ATEN_CPU_CAPABILITY and MKL's and oneDNN's instruction-set caps set, so a machine with AVX-512 proves
the suite on AVX2 and baseline x86-64 CPUs too. tests/conftest.py refuses a pass whose capability did not take.

    python tests/cpu_capabilities.py [pytest arguments]     # e.g. -q -n auto --dist loadfile; tox passes its own
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence

# x86-64's ATen capabilities, lowest first, and the matching caps for the libraries that dispatch on their own
LEVELS = ("default", "avx2", "avx512")
LIBRARY_CAPS = {
    "default": {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41"},
    "avx2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "avx512": {},
}
NO_TESTS_COLLECTED = 5  # pytest's exit code when the arguments select no numerics test


def native_capability() -> str:
    """This process's ATen capability ("avx512", "avx2", "default", or another architecture's name)."""
    import torch

    return torch.backends.cpu.get_cpu_capability().lower()


def lower_levels(native: str, machine: str | None = None) -> list[str]:
    """The x86-64 levels below `native`, lowest first; none on another architecture."""
    if (machine or platform.machine()).lower() not in ("x86_64", "amd64") or native not in LEVELS:
        return []
    return list(LEVELS[:LEVELS.index(native)])


def pass_environment(level: str, base: dict[str, str] | None = None) -> dict[str, str]:
    return {**(os.environ if base is None else base), "ATEN_CPU_CAPABILITY": level, **LIBRARY_CAPS[level]}


def pytest_arguments(args: Sequence[str]) -> list[str]:
    """`args` restricted to the numerics tests: a -m of the caller's own is combined with it, not replaced."""
    out, marker, rest = [], "numerics", list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "-m" and rest:
            marker = f"numerics and ({rest.pop(0)})"
        elif arg.startswith("-m") and len(arg) > 2:
            marker = f"numerics and ({arg[2:].lstrip('=')})"
        else:
            out.append(arg)
    return ["-m", marker, *out]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    native = native_capability()
    levels = lower_levels(native)
    if not levels:
        print(f"cpu_capabilities: this CPU runs at {native.upper()} on {platform.machine()}: no lower x86-64 level "
              "to check the numerics tests under", flush=True)
        return 0
    failed = []
    for level in levels:
        print(f"\ncpu_capabilities: the numerics tests under ATEN_CPU_CAPABILITY={level} (this CPU: "
              f"{native.upper()})", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, "-m", "pytest", *pytest_arguments(args)],
                               env=pass_environment(level))
        verdict = "passed" if code in (0, NO_TESTS_COLLECTED) else f"FAILED (pytest exit code {code})"
        print(f"cpu_capabilities: {level}: {verdict} in {time.monotonic() - started:.0f} s", flush=True)
        if verdict != "passed":
            failed.append(level)
    if failed:
        print(f"cpu_capabilities: numerics tests fail under {', '.join(failed)} (this CPU: {native.upper()}); where "
              "they pass at this CPU's own level, a tolerance is tighter than the dtype allows (derive it from "
              "torch.finfo(dtype).eps)", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
