"""What `depthbench run` checks before the first training: the device, the stores and cache it writes to, the lists
it was given; each failure says what is wrong and what to do, so that a mistake costs seconds, not a lost run."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.data.tasks import cache_root
from benchmarks.protocols import Protocol


def pick_device(requested: str | None, protocol: Protocol) -> torch.device:
    """The device to run `protocol` on: `requested`, else the tier's own; raises with what to do when it is not
    usable here (checked by computing on it and reading the result back, before any run)."""
    if requested is None:
        if protocol.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"the {protocol.name!r} tier is meant for a CUDA GPU and none is available here; "
                               "run `--tier smoke`, or `--device cpu` to force it onto the CPU (slow)")
        requested = protocol.device
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ValueError(f"--device {requested!r} is not a torch device; use e.g. cpu, cuda or cuda:1") from None
    default = f"leave --device out to run the {protocol.name} tier on its own device ({protocol.device})" \
        if protocol.device == "cpu" else "use --device cpu to force it onto the CPU (slow)"
    if device.type == "cuda" and not torch.cuda.is_available():
        built = "" if torch.version.cuda else f" (this torch {torch.__version__} is built without CUDA)"
        raise RuntimeError(f"--device {requested}: no CUDA GPU is available here{built}; {default}")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise RuntimeError(f"--device {requested}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                           f"numbered from 0")
    refuse_meta(device, requested)
    try:
        # A device must compute and give the numbers back: an allocation alone passes on devices that cannot.
        probe = torch.arange(3.0, device=device)
        if float((probe * 2).sum().cpu().item()) != 6.0:
            raise RuntimeError("2 * (0 + 1 + 2) did not come back as 6")
    except Exception as error:  # noqa: BLE001 - any backend's refusal becomes one clear message
        first = (str(error).splitlines() or [type(error).__name__])[0]
        raise RuntimeError(f"--device {requested} cannot be used here ({first}); {default}") from None
    return device


def refuse_meta(device: torch.device, requested: str) -> None:
    """The meta device allocates tensors without data, so every check short of computing passes on it; Slurm jobs,
    whose device is checked where they run, are refused it here too."""
    if device.type == "meta":
        raise ValueError(f"--device {requested}: the meta device holds shapes, not numbers, so no model can train "
                         "or be measured on it; use cpu, cuda or mps")


def chosen(kind: str, given: Sequence[Any] | None, default: Sequence[Any]) -> list[Any]:
    """The names / seeds asked for (first occurrences, in order), or the protocol's; an explicit empty list is an
    error, not a silent "nothing" or "everything"."""
    if given is None:
        return list(default)
    if isinstance(given, str) or not len(given):
        raise ValueError(f"no {kind} given: name at least one (comma-separated), or leave the option out for the "
                         f"tier's {kind}")
    return list(dict.fromkeys(given))


def writable_problem(root: Path, leave_no_trace: bool = False) -> str | None:
    """Why files cannot be written under `root` (None when they can): a probe file is created and removed there,
    creating the directory if needed (and removing the directories it created, with `leave_no_trace`)."""
    root = Path(root)
    created = [p for p in (root, *root.parents) if not p.exists()]
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=root, prefix=".depthbench-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        return error.strerror or str(error)
    finally:
        if leave_no_trace:
            for folder in created:  # innermost first
                try:
                    folder.rmdir()
                except OSError:
                    break
    return None


def check_writable(root: Path, what: str = "records", fix: str = "choose another store with --results DIR",
                   leave_no_trace: bool = False) -> None:
    """Fail now, not after the first training, when `what` cannot be written under `root`."""
    problem = writable_problem(root, leave_no_trace)
    if problem is not None:
        raise RuntimeError(f"cannot write {what} under {root} ({problem}); fix its permissions or {fix}")


def check_cache_writable() -> None:
    """The cache (decoded data, the transfer attacks' ResNet surrogate, written after a training) must take files:
    checked before the first training, naming the variable that moves it."""
    root = cache_root()
    problem = writable_problem(root)
    if problem is not None:
        setting = f"DEPTHBENCH_CACHE={os.environ['DEPTHBENCH_CACHE']}" if os.environ.get("DEPTHBENCH_CACHE") else \
            "the default, as DEPTHBENCH_CACHE is not set"
        raise RuntimeError(f"cannot write the cache (decoded data, attack surrogates) under {root} ({problem}; "
                           f"{setting}): set DEPTHBENCH_CACHE to a writable directory")


def available_cores() -> int:
    """CPU cores this process may run on (its affinity where the system tells it, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1
