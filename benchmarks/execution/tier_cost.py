"""`depthbench status --cost`: what a tier costs, read from its records' phase times (`provenance.phase_seconds`).

A tier is sized by measurement, not by guess (the `cpu` tier's target: every model x 3 seeds in 3 hours of wall time
on 2 cores). Per model: the mean minutes of a run by phase (training, the attack suite, the rest) over its
successful records. Then the sum over models (one seed of every model) and for every seed of the tier, in run-hours
and as wall time for `workers` runs at once (run-hours / workers: runs are single-threaded and independent). A model
without a record is named, and the totals say they leave it out. A run that adopted weights trained under an earlier
hash (`provenance.weights_from`) has no training phase; its training minutes are taken from a run that trained,
where the store holds one of the same model under that hash. `task_hash` reads the records of an earlier definition
of the tier (what it cost before a change), the models being the current definition's.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.execution.runner import tier_models
from benchmarks.protocols import Protocol
from benchmarks.store.records import Record, RecordError, load_record, record_path

PHASES = ("train", "attacks")  # shown apart; every other phase is summed as "rest"


@dataclass(frozen=True)
class ModelCost:
    model: str
    runs: int
    minutes: dict[str, float]  # phase group -> mean minutes per run ("train", "attacks", "rest")
    load_average: float  # the mean 1-minute load average the runs saw (>= cpus: they shared the cores)

    @property
    def per_run(self) -> float:
        return sum(self.minutes.values())


def _phases(record_provenance: dict) -> dict[str, float]:
    seconds = record_provenance.get("phase_seconds") or {}
    grouped = {phase: seconds.get(phase, 0.0) for phase in PHASES}
    grouped["rest"] = sum(v for k, v in seconds.items() if k not in PHASES)
    return grouped


def _ok_record(path: Path, results: Path) -> Record | None:
    """The successful record at `path`; None for a missing, damaged or failed one."""
    try:
        record = load_record(path, results) if path.exists() else None
    except RecordError:
        return None
    return record if record is not None and record.status == "ok" else None


def model_costs(protocol: Protocol, task: str, results: Path,
                models: Sequence[str] | None = None, task_hash: str | None = None) -> tuple[list[ModelCost], list[str]]:
    """The measured cost of each model with successful records of `task` under the tier's hash (or `task_hash`),
    and the models without one."""
    task_hash = task_hash or protocol.task_hash(task)
    measured, missing = [], []
    for model in models or tier_models(protocol):
        runs = []  # every seed recorded, not only the tier's: each is a measured run
        for path in sorted(record_path(results, model, task, task_hash, 0).parent.glob("seed*.json")):
            record = _ok_record(path, results)
            if record is not None:
                runs.append(record.provenance)
        if not runs:
            missing.append(model)
            continue
        phases = [_phases(p) for p in runs]
        trained = [p["train"] for p, prov in zip(phases, runs) if not prov.get("weights_from")]
        train = statistics.fmean(trained) if trained else _trained_elsewhere(runs, results, model, task)
        minutes = {"train": train / 60, **{k: statistics.fmean(p[k] for p in phases) / 60 for k in ("attacks", "rest")}}
        load = statistics.fmean(float(p.get("load_average") or 0.0) for p in runs)
        measured.append(ModelCost(model, len(runs), minutes, load))
    return measured, missing


def _trained_elsewhere(runs: Sequence[dict], results: Path, model: str, task: str) -> float:
    """Training seconds of the runs that trained the adopted weights (0 where none of them is in this store): the
    adopted checkpoint lies beside its own record, `<hash>/<model>/seed<N>.checkpoint.pt`."""
    seconds = []
    for prov in runs:
        source = Path((prov.get("weights_from") or {}).get("checkpoint") or "")
        if not source.name.endswith(".checkpoint.pt"):
            continue
        path = results / task / source.parent.parent.name / model / source.name.replace(".checkpoint.pt", ".json")
        record = _ok_record(path, results)
        if record is not None:
            seconds.append(_phases(record.provenance)["train"])
    return statistics.fmean(seconds) if seconds else 0.0


def cost_table(protocol: Protocol, task: str, results: Path, workers: int = 2, task_hash: str | None = None) -> str:
    current = protocol.task_hash(task)
    measured, missing = model_costs(protocol, task, results, task_hash=task_hash)
    which = (f"v{protocol.version} on {task} ({current})" if task_hash in (None, current) else
             f"on {task} under {task_hash} (an earlier definition; v{protocol.version} is {current})")
    lines = [f"cost of tier {protocol.name} {which}, from "
             f"{sum(c.runs for c in measured)} records' phase times (minutes per run, mean over seeds):",
             f"{'model':<20} {'runs':>4} {'train':>7} {'attacks':>7} {'rest':>7} {'per run':>7} {'load':>5}"]
    for c in sorted(measured, key=lambda c: -c.per_run):
        lines.append(f"{c.model:<20} {c.runs:>4} {c.minutes['train']:>7.1f} {c.minutes['attacks']:>7.1f} "
                     f"{c.minutes['rest']:>7.1f} {c.per_run:>7.1f} {c.load_average:>5.2f}")
    per_seed = sum(c.per_run for c in measured) / 60
    seeds = len(protocol.seeds)
    left_out = f"; without {', '.join(missing)} (no record yet)" if missing else ""
    lines.append(f"one seed of every model: {per_seed:.2f} run-hours; {seeds} seeds: {per_seed * seeds:.2f} "
                 f"run-hours, ~{per_seed * seeds / workers:.2f} h wall time with --workers {workers}{left_out}")
    return "\n".join(lines)
