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
              "max_num_steps": 1000}, ...],   # the model's resolved solver per stage ([] for other models);
                                                # adaptive stages solved per example add "backend": "per-example"
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
from benchmarks.specs import FRACTION, NON_NEGATIVE, spec_for

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
        if not _is_number(value) or not math.isfinite(value):
            return f"metric {key!r} is not a finite number: {value!r:.60}"
        spec = spec_for(key)
        if spec is not None and spec.bounds is not None and not spec.bounds[0] <= value <= spec.bounds[1]:
            return f"metric {key!r} is {value!r}, outside its range {_range(spec.bounds)} (benchmarks/specs.py)"
    return _entries_problem(data)


# What each entry of the record's lists may hold: field -> (types, range); a field not listed may be any JSON scalar.
_NUMBER_OR_NONE = (int, float, type(None))
_ENTRY_FIELDS: dict[str, dict[str, tuple[tuple[type, ...], tuple[float, float] | None]]] = {
    "depth_transfer": {"scheme": ((str,), None), "trained": ((bool,), None), "failed": ((str,), None),
                       "n_steps": ((int, type(None)), NON_NEGATIVE), "dt": (_NUMBER_OR_NONE, NON_NEGATIVE),
                       "rtol": (_NUMBER_OR_NONE, NON_NEGATIVE), "factor": (_NUMBER_OR_NONE, NON_NEGATIVE),
                       "nfe": (_NUMBER_OR_NONE, NON_NEGATIVE), "accuracy": (_NUMBER_OR_NONE, FRACTION),
                       "mse": (_NUMBER_OR_NONE, NON_NEGATIVE), "error": (_NUMBER_OR_NONE, NON_NEGATIVE),
                       "latency_ms": (_NUMBER_OR_NONE, NON_NEGATIVE)},
    "trajectory": {"stage": ((int,), NON_NEGATIVE), "t": (_NUMBER_OR_NONE, None), "t0": (_NUMBER_OR_NONE, None),
                   "t1": (_NUMBER_OR_NONE, None), "h": (_NUMBER_OR_NONE, NON_NEGATIVE),
                   "sigma": (_NUMBER_OR_NONE, NON_NEGATIVE)},
    "solver": {"scheme": ((str,), None), "n_steps": ((int, type(None)), NON_NEGATIVE),
               "rtol": (_NUMBER_OR_NONE, NON_NEGATIVE), "atol": (_NUMBER_OR_NONE, NON_NEGATIVE),
               "adjoint": ((bool,), None), "max_num_steps": ((int, type(None)), NON_NEGATIVE),
               "backend": ((str,), None)},
}
_REQUIRED_ENTRY_FIELDS = {"depth_transfer": ("scheme", "trained"), "trajectory": ("stage",), "solver": ("scheme",)}


def _entries_problem(data: dict[str, Any]) -> str | None:
    """What is wrong with the record's lists (flags, names, depth-transfer grid, trajectory, solvers), if anything:
    the readers (tables, plots, studies) take every entry for a dict of these fields."""
    for name in ("flags", "not_applicable"):
        bad = [item for item in data.get(name, []) if not isinstance(item, str)]
        if bad:
            return f"field {name!r} should hold strings, got {bad[0]!r:.60}"
    for name, allowed in _ENTRY_FIELDS.items():
        for i, entry in enumerate(data.get(name, [])):
            where = f"{name}[{i}]"
            if not isinstance(entry, dict):
                return f"{where} should be an object of {', '.join(allowed)}, got {entry!r:.60}"
            missing = [key for key in _REQUIRED_ENTRY_FIELDS[name] if key not in entry]
            if missing:
                return f"{where} lacks {', '.join(missing)}"
            for key, value in entry.items():
                types, bounds = allowed.get(key, ((str, int, float, bool, type(None)), None))
                if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                    return f"{where}.{key} should be {' or '.join(t.__name__ for t in types)}, got {value!r:.60}"
                if _is_number(value) and not math.isfinite(value):
                    return f"{where}.{key} is not finite: {value!r}"
                if bounds is not None and _is_number(value) and not bounds[0] <= value <= bounds[1]:
                    return f"{where}.{key} is {value!r}, outside its range {_range(bounds)}"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _range(bounds: tuple[float, float]) -> str:
    return f"[{bounds[0]:g}, {bounds[1]:g}]"


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
