"""`depthbench status`: where a tier stands in a results store, read from the store itself, plus Slurm's queue.

Each (model, task, seed) of the tier is
- done: its record says ok;
- failed: its record says failed (`depthbench run --retry-failed` runs it again);
- running: no record, but a local `depthbench run` holds its lock (`seed<N>.lock`, benchmarks/store/locks.py), or a
  Slurm job was submitted for it (`seed<N>.slurm` beside the record) and is still in squeue, pending or running;
  where squeue is not available (a copy of the store on another machine) every submitted run without a record
  counts as running, and the output says so;
- missing: none of these (never run, cancelled, or its job ended without a record): `depthbench run` does it,
  continuing from its checkpoint where one is left.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from benchmarks.execution.cluster import read_marker, squeue_states
from benchmarks.execution.runner import tier_models
from benchmarks.execution.runs import checkpoint_for
from benchmarks.protocols import Protocol
from benchmarks.store.locks import is_locked
from benchmarks.store.records import RecordError, load_record, record_path

STATES = ("done", "failed", "running", "missing")


def run_states(protocol: Protocol, results: Path, models: Sequence[str] | None = None,
               tasks: Sequence[str] | None = None, seeds: Sequence[int] | None = None,
               queue: dict[str, tuple[str, str]] | None = None) -> dict[tuple[str, str, int], str]:
    """The state of every (model, task, seed) of the tier: one of STATES. `queue` is squeue's view (None: unknown)."""
    models = list(models or tier_models(protocol))
    tasks = list(tasks or dict.fromkeys([*protocol.tasks, *protocol.optional_tasks]))
    states = {}
    for task in tasks:
        for model in models:
            for seed in seeds or protocol.seeds:
                path = record_path(results, model, task, protocol.task_hash(task), seed)
                try:
                    record = load_record(path, results) if path.exists() else None
                except RecordError:
                    record = None  # damaged: `depthbench run` redoes it
                if record is not None:
                    states[model, task, seed] = "done" if record.status == "ok" else "failed"
                    continue
                marker = read_marker(path)
                alive = is_locked(path) or (marker is not None and (queue is None or marker.get("job_id") in queue))
                states[model, task, seed] = "running" if alive else "missing"
    return states


def matrix(states: dict[tuple[str, str, int], str]) -> str:
    """Models down, tasks across; a cell counts the seeds in each state ("3 done, 1 running, 1 missing")."""
    models = list(dict.fromkeys(m for m, _, _ in states))
    tasks = list(dict.fromkeys(t for _, t, _ in states))
    cells = {(m, t): Counter(s for (m2, t2, _), s in states.items() if (m2, t2) == (m, t)) for m in models
             for t in tasks}
    text = {key: ", ".join(f"{count[s]} {s}" for s in STATES if count[s]) or "-" for key, count in cells.items()}
    width = max(len(m) for m in models) if models else 5
    columns = {t: max(len(t), *(len(text[m, t]) for m in models)) for t in tasks}
    lines = [f"{'model':<{width}}  " + "  ".join(f"{t:<{columns[t]}}" for t in tasks)]
    lines += [f"{m:<{width}}  " + "  ".join(f"{text[m, t]:<{columns[t]}}" for t in tasks) for m in models]
    total = Counter(states.values())
    lines.append("total: " + ", ".join(f"{total[s]} {s}" for s in STATES) + f" (of {len(states)} runs)")
    return "\n".join(line.rstrip() for line in lines)


def show_status(protocol: Protocol, results: Path, *, models: Sequence[str] | None = None,
                tasks: Sequence[str] | None = None, seeds: Sequence[int] | None = None, cost: bool = False,
                workers: int = 2, cost_hash: str | None = None) -> int:
    results = Path(results)
    queue = squeue_states()
    states = run_states(protocol, results, models, tasks, seeds, queue)
    seeds_shown = ",".join(str(s) for s in dict.fromkeys(seed for _, _, seed in states))
    hashes = ", ".join(f"{task} {h}" for task, h in protocol.hashes().items() if not tasks or task in tasks)
    print(f"tier {protocol.name} v{protocol.version} ({hashes}) in {results}, seeds {seeds_shown}:")
    print(matrix(states))
    resumable = sum(checkpoint_for(record_path(results, m, t, protocol.task_hash(t), s)).exists()
                    for (m, t, s), state in states.items() if state in ("missing", "running"))
    if resumable:
        print(f"{resumable} of the runs without a record have a training checkpoint: they continue from its epoch")
    if cost:
        from benchmarks.execution.tier_cost import cost_table

        for task in tasks or protocol.tasks:
            print("\n" + cost_table(protocol, task, results, workers, task_hash=cost_hash))
    if queue is None:
        print("\nSlurm: squeue is not available here, so every submitted run without a record is shown as running")
        return 0
    print("\nSlurm's view (squeue, depthbench jobs):")
    out = subprocess.run([shutil.which("squeue") or "squeue", "--me", "-n", "depthbench", "-o",
                          "%.16i %.10P %.9T %.10M %.10l %R"], capture_output=True, text=True, timeout=60)
    print(out.stdout.rstrip() or "  (no depthbench jobs)", file=sys.stdout if not out.returncode else sys.stderr)
    if out.returncode:
        print(f"  squeue failed: {out.stderr.strip()}")
    return 0
