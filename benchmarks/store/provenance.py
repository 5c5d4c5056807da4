"""Where, when and with what a record was produced: every leaderboard row must be traceable."""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

import zoo
from benchmarks.store.machine import machine_info

RECORDED_PACKAGES = ("depthbench", "torch", "torchvision", "torchdiffeq", "torchode", "torchattacks", "numpy", "pandas",
                     "scikit-learn")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _git(cwd: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def source_tree() -> Path | None:
    """The depthbench checkout that ran: the package's own tree, else the working directory's (tox installs
    a copy of the package, so its files are not the checkout's)."""
    for start in (Path(__file__).resolve().parents[1], Path.cwd()):
        top = _git(start, "rev-parse", "--show-toplevel")
        if top and (Path(top) / "zoo" / "__init__.py").is_file() and (Path(top) / "benchmarks").is_dir():
            return Path(top)
    return None


def git_state() -> dict[str, Any]:
    """The commit of the code that ran, and whether its tracked sources had uncommitted changes.

    Without a git checkout, $DEPTHBENCH_GIT_COMMIT names the commit (marked as declared, cleanliness unknown)."""
    top = source_tree()
    if top is None:
        # A copy without .git (a container image, a tree synced to a cluster) can say where it came from.
        declared = os.environ.get("DEPTHBENCH_GIT_COMMIT", "").strip()
        if not declared:
            return {"git_commit": "unknown", "git_dirty": None}
        if not re.fullmatch(r"[0-9a-f]{7,40}", declared):
            raise ValueError(f"DEPTHBENCH_GIT_COMMIT must be a hex commit id, got {declared!r}")
        return {"git_commit": declared, "git_dirty": None, "git_commit_declared_by": "DEPTHBENCH_GIT_COMMIT"}
    commit = _git(top, "rev-parse", "HEAD")
    status = _git(top, "status", "--porcelain", "--untracked-files=no", "--", "zoo", "benchmarks", "pyproject.toml")
    return {"git_commit": commit or "unknown", "git_dirty": bool(status) if status is not None else None}


def package_versions() -> dict[str, str]:
    versions = {}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def model_source(name: str) -> dict[str, Any]:
    """Which code provided model `name`: in-tree (the record's git commit says which), or an installed plugin's
    distribution, version and entry point, plus where pip installed it from when pip recorded that (PEP 610
    `direct_url.json`: the VCS commit of a `pip install git+...`, the directory of a local or editable install)."""
    found = zoo.registry.model_distribution(name)
    if found is None:
        return {"kind": "in-tree"}
    source: dict[str, Any] = {"kind": "plugin", **found}
    try:
        text = metadata.distribution(found["distribution"]).read_text("direct_url.json")
        direct = json.loads(text) if text else {}
    except (metadata.PackageNotFoundError, ValueError, OSError):
        direct = {}  # no PEP 610 file: installed from an index (the version names it) or by hand
    if isinstance(direct, dict) and direct.get("url"):
        source["url"] = str(direct["url"])
        vcs = direct.get("vcs_info") or {}
        if vcs.get("commit_id"):
            source["vcs"], source["commit"] = str(vcs.get("vcs", "")), str(vcs["commit_id"])
        if (direct.get("dir_info") or {}).get("editable"):
            source["editable"] = True
    return source


def device_description(device: torch.device) -> str:
    info = machine_info(device)
    if device.type == "cuda":
        return f"{info['device_name']} (driver {info['driver_version']}, CUDA {info['cuda_version']})"
    return f"CPU: {info['cpu']}, {info['torch_threads']} threads"


def retyped_command(argv: list[str]) -> str:
    """The command as a user retypes it: `depthbench ...` whether it ran as the installed script (argv[0] is that
    script's absolute path) or as `python -m benchmarks.cli` (argv[0] is this checkout's benchmarks/cli/__main__.py,
    or benchmarks/cli.py before the command became a package); a record should not name the directory of whoever
    produced it."""
    program = Path(argv[0]) if argv else Path("depthbench")
    if program.name == "depthbench" or program.parts[-2:] == ("benchmarks", "cli.py") or \
            program.parts[-3:] == ("benchmarks", "cli", "__main__.py"):
        return shlex.join(["depthbench", *argv[1:]])
    return shlex.join(argv)


def run_provenance(device: torch.device, started: str, command: list[str] | None = None) -> dict[str, Any]:
    return {
        **git_state(),
        "command": retyped_command(list(command if command is not None else sys.argv)),
        "device": device_description(device),
        "host": platform.node(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "started": started,
        "finished": now(),
        # Runnable processes on the host when the record was written (1-minute mean) and its cores: timings made
        # on a busy machine are slower than the same code alone, and a reader should be able to tell.
        "load_average": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
    }
