"""A description of the machine a run or timing happened on: accelerator, driver, CPU, library versions.

Lives in the store layer because provenance records it; timing (evaluation) and the pytest-benchmark suites read it too.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys

import torch


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _driver_version() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    return lines[0] if lines else None


def machine_info(device: torch.device | str | None = None) -> dict[str, object]:
    """What a timing depends on, as JSON-serialisable values: accelerator, driver, CPU, library versions.

    `device` defaults to the first GPU when there is one. The CPU is always described: it drives kernel launches
    and host-side solver logic even when the arithmetic runs on the GPU.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    info: dict[str, object] = {
        "device": device.type,
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),  # intra-op threads: CPU timings scale with them
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        info.update(
            device_name=torch.cuda.get_device_name(index),
            driver_version=_driver_version(),
            cuda_version=torch.version.cuda,
            capability=f"{major}.{minor}",
        )
    else:
        info["device_name"] = info["cpu"]
    info["python_implementation"] = sys.implementation.name
    return info
