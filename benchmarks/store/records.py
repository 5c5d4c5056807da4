"""Result records: one JSON file per (model, task, protocol hash, seed), written atomically.

A record is the only thing a leaderboard may read. Its layout (schema 1):

```
{
  "schema": 1,
  "model": "resnet", "task": "digits", "seed": 0,
  "protocol": {"name": "smoke", "version": 1, "hash": "3f2a9c1d0b7e"},
  "status": "ok" | "failed",
  "error": null | "what went wrong (one line)",
  "metrics": {"accuracy": 0.97, "params": 12345, "fgsm@0.1": 0.41, ...},   # flat: name -> number
  "flags": ["unreliable", "unreliable:pgd-weaker-than-fgsm@0.1", ...],
  "not_applicable": ["dt_delta_2x", "line_shape", ...],  # metrics the model lacks the capability for (n/a)
  "depth_transfer": [{"scheme": "rk4", "n_steps": 12, "nfe": 48, "accuracy": 0.96, "latency_ms": 1.2,
                      "dt": 0.5, "trained": false, ...}, ...],
  "trajectory": [{"stage": 0, "t": 0.0, "t0": 0.0, "t1": 6.0, "h": 1.0, "sigma": 3.1}, ...],  # diagnostics
  "solver": [{"scheme": "rk4", "n_steps": 3, "rtol": 0.001, "atol": 0.001, "adjoint": false,
              "max_num_steps": 1000}, ...],   # the model's resolved solver per stage ([] for other models)
  "history": [{"epoch": 1, "loss": 0.61, "val": 0.84, "seconds": 15.2}, ...],  # the training curve (plateau?)
  "card": {"title": ..., "arxiv": ..., "bibkey": ..., ...},
  "provenance": {"git_commit": ..., "git_dirty": false,
                 "model_source": {"kind": "in-tree"} | {"kind": "plugin", "distribution": ..., "version": ...,
                                  "entry_point": ..., "url"?, "vcs"?, "commit"?, "editable"?},
                 "checkpoint"?: {"file": ..., "sha256": ...},   # depthbench evaluate: weights not trained here
                 "command": ..., "device": ..., "host": ...,
                 "started": ISO-8601, "finished": ISO-8601, "packages": {"torch": ..., ...},
                 "phase_seconds": {"train": 12.1, "attacks": 3.4, "depth_transfer": 2.2, ...},
                 "concurrent_runs": 1}   # runs that shared the device (depthbench run --workers)
}
```

Metric names are documented in `benchmarks/specs.py`; a leaderboard column is a metric name.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.io import write_atomic

SCHEMA_VERSION = 1
STATUSES = ("ok", "failed")


class RecordError(ValueError):
    """A record file that cannot be used: bad JSON, another schema, missing or mistyped fields, or content that
    does not match where the file lies. The message starts with the file's path."""


class DamagedRecordWarning(UserWarning):
    """`iter_records` skipped a damaged record (the message names the file and what is wrong)."""


@dataclass
class Record:
    model: str
    task: str
    seed: int
    protocol: dict[str, Any]
    status: str = "ok"
    error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    not_applicable: list[str] = field(default_factory=list)  # see zoo.contract.CAPABILITY_METRICS
    depth_transfer: list[dict[str, Any]] = field(default_factory=list)
    trajectory: list[dict[str, Any]] = field(default_factory=list)  # stiffness profile along depth
    solver: list[dict[str, Any]] = field(default_factory=list)  # resolved zoo.Solver settings, one per stage
    history: list[dict[str, Any]] = field(default_factory=list)  # per training epoch: loss, validation metric, seconds
    card: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA_VERSION

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.model, self.task, self.protocol["hash"], self.seed)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        problem = _schema_problem(data)
        if problem:
            raise ValueError(problem)
        return cls(**data)


_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str,), "task": (str,), "seed": (int,), "protocol": (dict,), "status": (str,), "error": (str, type(None)),
    "metrics": (dict,), "flags": (list,), "depth_transfer": (list,), "trajectory": (list,), "card": (dict,),
    "solver": (list,), "history": (list,), "not_applicable": (list,), "provenance": (dict,), "schema": (int,),
}
_REQUIRED = ("schema", "model", "task", "seed", "protocol", "status")


def _schema_problem(data: Any) -> str | None:
    """What makes `data` not a schema-1 record (None when it is one); checked field by field so that a damaged
    file is reported with its actual fault rather than a TypeError from the constructor."""
    if not isinstance(data, dict):
        return f"a record is a JSON object, this is a {type(data).__name__}"
    if data.get("schema") != SCHEMA_VERSION:
        return f"record schema {data.get('schema')!r} is not the supported {SCHEMA_VERSION}"
    missing = [name for name in _REQUIRED if name not in data]
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    unknown = sorted(set(data) - set(_TYPES))
    if unknown:
        return f"unknown field(s) {', '.join(unknown)}"
    for name, value in data.items():
        if not isinstance(value, _TYPES[name]) or (isinstance(value, bool) and bool not in _TYPES[name]):
            return f"field {name!r} should be {' or '.join(t.__name__ for t in _TYPES[name])}, got {value!r:.60}"
    if data["seed"] < 0:
        return f"seed {data['seed']} is negative"
    if data["status"] not in STATUSES:
        return f"status {data['status']!r} is not one of {', '.join(STATUSES)}"
    if not isinstance(data["protocol"].get("hash"), str) or not isinstance(data["protocol"].get("name"), str):
        return "field 'protocol' needs a string 'name' and 'hash'"
    for key, value in data.get("metrics", {}).items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return f"metric {key!r} is not a finite number: {value!r:.60}"
    return None


def record_path(root: Path, model: str, task: str, protocol_hash: str, seed: int) -> Path:
    """Where the record of one run lives: `root/<task>/<protocol hash>/<model>/seed<N>.json`."""
    return Path(root) / task / protocol_hash / model / f"seed{seed}.json"


def save_record(root: Path, record: Record) -> Path:
    path = record_path(root, record.model, record.task, record.protocol["hash"], record.seed)
    write_atomic(path, json.dumps(record.to_json(), indent=2, sort_keys=True, allow_nan=False) + "\n")
    return path


def load_record(path: Path, root: Path | None = None) -> Record:
    """The record in `path`; raises `RecordError` naming the file and its fault. With the store's `root`, the
    record must also be the one its location says (task/hash/model/seed), so a misplaced file is not counted."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RecordError(f"{path}: unreadable ({error})") from None
    try:
        record = Record.from_json(data)
    except ValueError as error:
        raise RecordError(f"{path}: {error}") from None
    if root is not None:
        expected = record_path(root, record.model, record.task, record.protocol["hash"], record.seed)
        if Path(expected) != path:
            raise RecordError(f"{path}: holds the record of {record.task}/{record.protocol['hash']}/{record.model}/"
                              f"seed{record.seed}, which belongs at {expected}")
    return record


def iter_records(root: Path, *, strict: bool = False) -> Iterator[tuple[Path, Record]]:
    """Every record below `root`, in a stable order, with the file it came from (for provenance links).

    A damaged record (see `RecordError`) is skipped with a `DamagedRecordWarning` naming it, so one bad file does
    not stop a leaderboard; `strict=True` raises instead."""
    root = Path(root)
    for path in sorted(root.glob("*/*/*/seed*.json")):
        try:
            record = load_record(path, root)
        except RecordError as error:
            if strict:
                raise
            warnings.warn(f"skipping damaged record {error}; rerun `depthbench run` to redo it or delete the file",
                          DamagedRecordWarning, stacklevel=2)
            continue
        yield path, record
