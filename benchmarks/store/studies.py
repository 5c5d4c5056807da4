"""Study results: one JSON file per (study, task), the record type of the papers' questions.

The tier runner writes one record per (model, task, seed); a study (convergence test, refinement, compression,
memory, stiffness) compares several trainings, so its unit is the whole comparison. Every study file has the same
frame, so `leaderboards/claims.md` can read any of them without knowing how it was produced:

    {"schema": 1, "study": "refinement", "task": "digits", "tier": "cpu-study", "seeds": [0, 1, 2],
     "summary": {"refined_accuracy": {"mean": .., "std": .., "n": 3, "values": [..]}, ...},
     "rows": [...],            # the study's own table rows (free-form dicts of JSON scalars)
     "figure": "leaderboards/refinement/digits.png" | null,
     "details": {...},         # anything else the study needs to re-render its table
     "provenance": {...}}      # run_provenance(): command, git commit, machine, packages, start/finish

`summary` holds the numbers a claim cites, each the mean ± sample std over seeds with the per-seed values kept.
Files live under `results/<study>/<task>.json` (committed) or the local store (a user's own runs).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.io import write_atomic

SCHEMA = 1
_FIELDS = {"schema": int, "study": str, "task": str, "tier": str, "seeds": list, "summary": dict, "rows": list,
           "details": dict, "provenance": dict}


class StudyFileError(ValueError):
    """A study file that is missing a field, has a field of the wrong type, or is not JSON."""


def quantity(values: Sequence[float]) -> dict[str, Any]:
    """Mean ± sample std (0 for one value) over seeds, keeping the values so the summary can be recomputed."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("a summary quantity needs at least one value")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"a summary quantity must be finite, got {values}")
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "n": len(values), "values": values}


def study_path(root: Path, study: str, task: str) -> Path:
    return Path(root) / study / f"{task}.json"


def write_study(root: Path, *, study: str, task: str, tier: str, seeds: Sequence[int],
                per_seed: Mapping[str, Sequence[float]], rows: Sequence[Mapping[str, Any]],
                provenance: Mapping[str, Any], figure: str | None = None,
                details: Mapping[str, Any] | None = None) -> Path:
    """Write `results/<study>/<task>.json` atomically; `per_seed` maps a quantity's name to its value per seed."""
    for name, values in per_seed.items():
        if len(values) != len(seeds):
            raise ValueError(f"{study}/{task}: quantity {name!r} has {len(values)} values for {len(seeds)} seeds")
    payload = {
        "schema": SCHEMA, "study": study, "task": task, "tier": tier, "seeds": [int(s) for s in seeds],
        "summary": {name: quantity(values) for name, values in sorted(per_seed.items())},
        "rows": [dict(row) for row in rows], "figure": figure, "details": dict(details or {}),
        "provenance": dict(provenance),
    }
    path = study_path(root, study, task)
    write_atomic(path, json.dumps(payload, indent=1, sort_keys=True, allow_nan=False) + "\n")
    return path


def read_study(path: Path) -> dict[str, Any]:
    """Load and check one study file; errors name the file and the field."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise StudyFileError(f"{path}: cannot read study file ({error})") from None
    if not isinstance(payload, dict):
        raise StudyFileError(f"{path}: a study file holds a JSON object")
    for field, kind in _FIELDS.items():
        if not isinstance(payload.get(field), kind):
            raise StudyFileError(f"{path}: field {field!r} missing or not {kind.__name__}")
    if payload["schema"] != SCHEMA:
        raise StudyFileError(f"{path}: schema {payload['schema']}, this depthbench reads schema {SCHEMA}")
    for name, value in payload["summary"].items():
        if not (isinstance(value, dict) and {"mean", "std", "n", "values"} <= set(value)):
            raise StudyFileError(f"{path}: summary {name!r} needs mean, std, n and values")
    return payload


def find_studies(root: Path, study: str) -> list[dict[str, Any]]:
    """Every task's file of `study` under `root` (none: an empty list, i.e. the study has not been run)."""
    folder = Path(root) / study
    return [read_study(path) for path in sorted(folder.glob("*.json"))] if folder.is_dir() else []
