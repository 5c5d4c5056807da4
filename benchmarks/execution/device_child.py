"""The runs of a GPU session, in the child process that `device_session.run_session` supervises
(`python -m benchmarks.execution.device_child PLAN.json`: device_session starts it, it never imports this module).

Reads the plan the supervisor wrote, checks the device (and describes it in device.json), loads every task once
(timed: the JPEG decode fills the cache the runs read), checks the model contract once (timed), then runs the tier
seed by seed under the session's `Budget`. Writes child.json (setup seconds, postponed and failed runs, every
admission decision) even when it is interrupted.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from benchmarks.data.tasks import DataCorruptError, DataMissingError, get_task
from benchmarks.evaluation.check import require_passing
from benchmarks.evaluation.surrogate import surrogate_path
from benchmarks.execution.device_session import Budget, load_estimates, model_order, record_files
from benchmarks.execution.preflight import pick_device
from benchmarks.execution.runner import run_tier, tier_models
from benchmarks.io import write_atomic
from benchmarks.protocols import get_protocol
from benchmarks.store.machine import machine_info

EXIT_FAILED, EXIT_USAGE, EXIT_POSTPONED = 1, 2, 3


def describe_device(device: torch.device) -> dict[str, Any]:
    """What the timings depend on; for CUDA also a first allocation and a bf16 matmul (the GPU really works)."""
    info: dict[str, Any] = {"machine": machine_info(device)}
    if device.type == "cuda":
        started = time.perf_counter()
        a = torch.randn(4096, 4096, device=device, dtype=torch.bfloat16)
        torch.cuda.synchronize(device)
        began = time.perf_counter()
        for _ in range(10):
            a @ a
        torch.cuda.synchronize(device)
        info["bf16_matmul_tflops"] = 10 * 2 * 4096**3 / (time.perf_counter() - began) / 1e12
        info["first_use_seconds"] = began - started
        info["memory_gib"] = torch.cuda.get_device_properties(device).total_memory / 2**30
    return info


def child(plan_path: Path) -> int:
    plan = json.loads(Path(plan_path).read_text(encoding="utf-8"))
    work, results = Path(plan["work"]), Path(plan["results"])
    protocol = get_protocol(plan["tier"])
    summary: dict[str, Any] = {"setup_seconds": {}, "postponed": [], "failed": {}, "unavailable": []}
    budget = None
    try:
        started = time.perf_counter()
        device = pick_device(plan["device"], protocol)
        write_atomic(work / "device.json", json.dumps(describe_device(device), indent=2, default=str))
        summary["setup_seconds"]["device check"] = time.perf_counter() - started
        tasks = []
        for name in plan["tasks"] or protocol.tasks:
            task, started = get_task(name), time.perf_counter()
            try:
                task.check()
                task.load(limit=protocol.data_limit)  # fills the decoded cache the runs read
            except (DataMissingError, DataCorruptError) as error:
                print(f"depthbench: {name} left out of this session: {error}", flush=True)
                summary["unavailable"].append(name)
                continue
            summary["setup_seconds"][f"{name} load"] = time.perf_counter() - started
            tasks.append(name)
        estimates = load_estimates(Path(plan["estimates"]), protocol)
        models = model_order(plan["models"] or tier_models(protocol), tasks, estimates, plan["workers"])
        seeds = plan["seeds"] or list(protocol.seeds)
        started = time.perf_counter()
        require_passing(models, tasks, protocol.model_overrides)
        summary["setup_seconds"]["model contract checks"] = time.perf_counter() - started
        budget = Budget(deadline=plan["deadline_wall"], estimates=estimates, results=results,
                        before=frozenset(record_files(results)), prior=plan["prior"], clock=time.time,
                        surrogate_cached=lambda task, seed: surrogate_path(get_task(task), protocol, seed).is_file())
        print(f"depthbench: session order: seeds {seeds}, tasks {tasks}, models {models}", flush=True)
        for seed in seeds:
            if not tasks:
                break
            done = run_tier(protocol, models=models, tasks=tasks, seeds=[seed], results_dir=results,
                            device=device, workers=plan["workers"], check_models=False, admit=budget.admit)
            summary["postponed"] += [str(p.relative_to(results)) for p in done.postponed]
            summary["failed"].update(done.failures)
        code = EXIT_FAILED if summary["failed"] else EXIT_POSTPONED if summary["postponed"] or not tasks else 0
    except KeyboardInterrupt:
        print("depthbench: session child interrupted at the end of the time budget", flush=True)
        code = 130
    except Exception as error:  # noqa: BLE001 - reported in the archive, whatever it is
        traceback.print_exc()
        summary["error"] = f"{type(error).__name__}: {error}"
        code = EXIT_USAGE
    finally:
        summary["budget"] = budget.decisions if budget is not None else []
        write_atomic(work / "child.json", json.dumps(summary, indent=2, default=str))
    return code


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m benchmarks.execution.device_child PLAN.json (started by run_session)", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    sys.exit(child(Path(sys.argv[1])))
