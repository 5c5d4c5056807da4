"""Where a claim's effect is read from: a study file's per-seed quantity, or a tier's records paired by seed.

An `Effect` turns the committed results into one value per seed (or trial) and its interval (`rules.py`). Absent or
thin evidence raises `MissingData`, whose message names the command that produces it; the board shows that as
"awaiting data", never as a verdict.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.protocols import current_hash, tier_citable, tier_rank
from benchmarks.reporting.paper_claims.rules import Interval, correlation_interval, ratio_interval, t_interval
from benchmarks.store.records import iter_records
from benchmarks.store.studies import find_studies


class MissingData(Exception):
    """Evidence that is absent, of a pipeline-check tier only, or too thin; the message says what to run."""


class Results:
    """The study files and records under one results root, read once."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._studies: dict[str, list[dict[str, Any]]] = {}
        self._records: dict[tuple[str, str], dict[str, dict[int, dict[str, float]]]] | None = None

    def study(self, name: str, task: str, command: str) -> dict[str, Any]:
        if name not in self._studies:
            self._studies[name] = find_studies(self.root, name)
        found = [s for s in self._studies[name] if s["task"] == task]
        if not found:
            raise MissingData(f"no {name} study of {task} under {self.root}/{name}/: run `{command}`")
        if not tier_citable(found[0]["tier"]):
            raise MissingData(f"the {name} study of {task} is of the pipeline-check tier {found[0]['tier']}: "
                              f"run `{command}`")
        return found[0]

    def records(self, tier: str, task: str) -> dict[str, dict[int, dict[str, float]]]:
        """model -> seed -> metrics of the successful records of `tier` on `task` of the tier's current hash only:
        records of another hash are of another definition of the tier and are left out (of a tier this code does not
        define, the hash with the most runs)."""
        if self._records is None:
            grouped: dict[tuple[str, str, str], dict[str, dict[int, dict[str, float]]]] = defaultdict(
                lambda: defaultdict(dict))
            for _, rec in iter_records(self.root):
                if rec.status == "ok":
                    key = (str(rec.protocol.get("name")), rec.task, str(rec.protocol.get("hash")))
                    grouped[key][rec.model][rec.seed] = {k: float(v) for k, v in rec.metrics.items()}
            self._records = {}
            for (name, task_name, phash), models in sorted(grouped.items(), key=lambda kv: -sum(
                    len(seeds) for seeds in kv[1].values())):  # the hash with the most runs of a (tier, task) ...
                current = current_hash(name, task_name)
                if current is None or phash == current:  # ... unless this code defines the tier: its hash only
                    self._records.setdefault((name, task_name), models)
        return self._records.get((tier, task), {})


@dataclass(frozen=True)
class Effect:
    """How one part of a claim is measured. `kind`: "value" (the per-seed values as they are), "difference"
    (model/quantity a minus b, paired by seed), "ratio" (a / b, or a value that is itself a ratio: interval on
    the logs) or "correlation" (a per-seed correlation: interval cut to [-1, 1]). Exactly one of `study`
    and `tier` says where the values come from."""

    label: str  # what it is, in words: "ODE-Net − CNN accuracy under FGSM ε = 0.3"
    kind: str
    task: str
    command: str  # what produces the evidence
    study: str | None = None
    quantity: str | None = None  # a study's per-seed quantity
    minus: str | None = None  # difference of two study quantities (quantity - minus), paired by seed
    over: str | None = None  # quotient of two study quantities (quantity / over), paired by seed
    tier: str | None = None
    metric: str | None = None  # a record metric
    model: str | None = None
    versus: str | None = None  # the other model of a paired difference / ratio
    scale: float = 1.0  # display scale (100: a fraction shown in points)
    unit: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("value", "difference", "ratio", "correlation"):
            raise ValueError(f"effect kind must be value, difference, ratio or correlation, got {self.kind!r}")
        if (self.study is None) == (self.tier is None):
            raise ValueError(f"effect {self.label!r}: give a study or a tier, not both")

    def values(self, results: Results) -> list[float]:
        if self.study is not None:
            study = results.study(self.study, self.task, self.command)
            summary = study["summary"]
            for name in (self.quantity, self.minus, self.over):
                if name is not None and name not in summary:
                    raise MissingData(f"{self.study}/{self.task}.json has no quantity {name!r}: rerun `{self.command}`")
            values = list(summary[self.quantity]["values"])
            if self.minus is not None:
                values = [a - b for a, b in zip(values, summary[self.minus]["values"])]
            if self.over is not None:
                values = [a / b for a, b in zip(values, summary[self.over]["values"])]
            return values
        models = results.records(self.tier, self.task)
        mine = models.get(self.model, {})
        if self.versus is None:
            return [m[self.metric] for _, m in sorted(mine.items()) if self.metric in m]
        other = models.get(self.versus, {})
        seeds = sorted(s for s in mine if s in other and self.metric in mine[s] and self.metric in other[s])
        if self.kind == "ratio":
            return [mine[s][self.metric] / other[s][self.metric] for s in seeds]
        return [mine[s][self.metric] - other[s][self.metric] for s in seeds]

    def interval(self, results: Results) -> Interval:
        values = self.values(results)
        if not values:
            where = f"the {self.study} study" if self.study else f"{self.tier}-tier records of {self.model}" + (
                f" and {self.versus}" if self.versus else "")
            raise MissingData(f"no values of {where} on {self.task}: run `{self.command}`")
        if self.kind == "ratio":
            if any(not (v > 0 and math.isfinite(v)) for v in values):
                raise MissingData(f"{self.label}: a ratio needs positive values, got {values}")
            return ratio_interval(values)
        if self.kind == "correlation":
            if any(not -1.0 <= v <= 1.0 for v in values):
                raise MissingData(f"{self.label}: a correlation lies in [-1, 1], got {values}")
            return correlation_interval(values)
        return t_interval(values)

    def where(self) -> str:
        if self.study:
            return f"results/{self.study}/{self.task}.json"
        return f"{self.tier} tier records, {self.task}"


def best_tier(results: Results, tiers: Sequence[str], task: str, models: Sequence[str]) -> str | None:
    """The most citable of `tiers` with records of every model on `task` (None: none has them)."""
    have = [t for t in tiers if all(results.records(t, task).get(m) for m in models)]
    return min(have, key=tier_rank) if have else None
