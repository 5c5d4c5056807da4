"""Does a run reproduce the published records of the same protocol hash? One verdict per (task, model).

The same protocol hash fixes every recipe field, but not the hardware: float kernels differ between CPUs and GPUs,
so a cold run elsewhere gives other numbers, by about as much as another seed would. A difference of means is
therefore judged against the larger of

- the tier's stated tolerance (`Protocol.tolerance` in benchmarks/protocols.py, deliberately *not* part of the
  protocol hash, since it says how results are compared, not how they are produced), and
- `SPREAD_FACTOR` standard errors of that difference, from the seed spread (pooled sample std of the sides that
  have n > 1 seeds): 2 x s x sqrt(1/n_published + 1/n_local).

Accuracies are compared in points (percentage points of test accuracy); MSEs as ratios, on a log scale, so that
"twice as large" and "half as large" are the same distance: a relative tolerance r accepts a ratio within
[1/(1+r), 1+r]. `compare_values` works on plain lists of numbers, so a model card's claimed numbers can be
judged against a reproduction the same way.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.protocols import Tolerance, tier_tolerance
from benchmarks.store.records import Record, iter_records

SPREAD_FACTOR = 2.0  # standard errors of the difference of means: about a 95% band for normal seed noise


def tolerance_for(protocol_name: str) -> Tolerance:
    return tier_tolerance(protocol_name)


def describe_tolerance(tolerance: Tolerance) -> str:
    """The rule in docs/running.md's words: "10 points of accuracy or an MSE ratio within 3×"."""
    return f"{tolerance.accuracy_points:g} points of accuracy or an MSE ratio within {1 + tolerance.mse_relative:g}×"


@dataclass(frozen=True)
class Verdict:
    """`published` and `local` are means in display units (% for accuracy, raw MSE); `difference` and `allowed` are
    points for accuracy and a relative change (0.3 = +30%) for MSE."""

    metric: str
    published: float
    local: float
    n_published: int
    n_local: int
    difference: float
    allowed: float
    reproduces: bool
    basis: str  # "tolerance" or "seed spread": which of the two set `allowed`

    def describe(self) -> str:
        if self.metric == "accuracy":
            diff = f"{self.difference:+.2f} pt, allowed ±{self.allowed:.2f} pt"
        else:  # as docs/running.md states the rule: the ratio of the MSEs, allowed within a factor either way
            diff = f"ratio {1 + self.difference:.3g}×, allowed within {1 + self.allowed:.3g}×"
        return f"{'reproduces' if self.reproduces else 'DIFFERS'} ({diff} by {self.basis})"


def _pooled_std(groups: Sequence[Sequence[float]]) -> float | None:
    """Pooled sample std over the groups with at least two values (None when there is none)."""
    usable = [g for g in groups if len(g) > 1]
    if not usable:
        return None
    dof = sum(len(g) - 1 for g in usable)
    return math.sqrt(sum(statistics.variance(g) * (len(g) - 1) for g in usable) / dof)


def compare_values(metric: str, published: Sequence[float], local: Sequence[float],
                   tolerance: Tolerance) -> Verdict:
    """Judge the seeds of a run (`local`) against the published ones, for `accuracy` (fractions, as records keep
    them) or `test_mse`; see the module docstring for the rule."""
    if not published or not local:
        raise ValueError("both sides need at least one value")
    if metric == "accuracy":
        pub, loc = [100 * v for v in published], [100 * v for v in local]
        transform, limit = (lambda v: v), tolerance.accuracy_points
    elif metric == "test_mse":
        if min(*published, *local) <= 0:
            raise ValueError("MSEs must be positive")
        pub, loc = list(published), list(local)
        transform, limit = math.log, math.log1p(tolerance.mse_relative)
    else:
        raise ValueError(f"no reproduction rule for metric {metric!r} (accuracy or test_mse)")
    a, b = [transform(v) for v in pub], [transform(v) for v in loc]
    gap = statistics.fmean(b) - statistics.fmean(a)
    spread = _pooled_std([a, b])
    by_spread = SPREAD_FACTOR * spread * math.sqrt(1 / len(a) + 1 / len(b)) if spread is not None else 0.0
    allowed = max(limit, by_spread)
    basis = "seed spread" if by_spread > limit else "tolerance"
    if metric == "test_mse":  # report the ratio of the geometric means as a relative change
        difference, shown_allowed = math.expm1(gap), math.expm1(allowed)
    else:
        difference, shown_allowed = gap, allowed
    return Verdict(metric, statistics.fmean(pub), statistics.fmean(loc), len(a), len(b), difference, shown_allowed,
                   abs(gap) <= allowed, basis)


@dataclass(frozen=True)
class Row:
    task: str
    protocol: str
    protocol_hash: str
    model: str
    verdict: Verdict | None
    note: str  # why there is no verdict ("" when there is one)


def _main_metric(records: Iterable[Record]) -> str | None:
    names = {name for r in records for name in r.metrics}
    return "accuracy" if "accuracy" in names else "test_mse" if "test_mse" in names else None


def compare_records(local: Iterable[Record], published: Iterable[Record]) -> list[Row]:
    """One row per (task, protocol hash, model) of `local`: its verdict against the published records of the same
    protocol hash, or a note saying why there is none."""
    def grouped(records: Iterable[Record]) -> dict[tuple[str, str, str, str], list[Record]]:
        out: dict[tuple[str, str, str, str], list[Record]] = {}
        for r in records:
            out.setdefault((r.task, r.protocol["name"], r.protocol["hash"], r.model), []).append(r)
        return out

    mine, theirs = grouped(local), grouped(published)
    rows = []
    for key in sorted(mine):
        ok = [r for r in mine[key] if r.status == "ok"]
        ref = [r for r in theirs.get(key, []) if r.status == "ok"]
        metric = _main_metric(ok + ref)
        if key not in theirs:
            note = "no published record of this protocol hash"
        elif not ok:
            note = "every run failed here"
        elif not ref:
            note = "every published run failed"
        elif metric is None or any(metric not in r.metrics for r in ok + ref):
            note = "the main metric is missing from some records"
        else:
            values = [[r.metrics[metric] for r in side] for side in (ref, ok)]
            verdict = compare_values(metric, values[0], values[1], tolerance_for(key[1]))
            rows.append(Row(*key, verdict, ""))
            continue
        rows.append(Row(*key, None, note))
    return rows


def compare_stores(local_root: Path, published_root: Path, hashes: Collection[str] | None = None) -> list[Row]:
    """`compare_records` over two stores, restricted to the records of these (tier, task) hashes if given."""
    def load(root: Path) -> list[Record]:
        if not Path(root).is_dir():
            return []
        return [r for _, r in iter_records(root) if hashes is None or r.protocol["hash"] in hashes]

    return compare_records(load(local_root), load(published_root))


def format_rows(rows: Sequence[Row]) -> str:
    """A plain-text table: task, model, published mean (n), this run's mean (n), verdict."""
    lines = []
    for row in rows:
        label = f"  {row.task:<14} {row.model:<20}"
        if row.verdict is None:
            lines.append(f"{label} {row.note}")
            continue
        v = row.verdict
        fmt = (lambda x: f"{x:6.2f}%") if v.metric == "accuracy" else (lambda x: f"{x:.3g}")
        lines.append(f"{label} published {fmt(v.published)} (n={v.n_published}), this run {fmt(v.local)} "
                     f"(n={v.n_local}): {v.describe()}")
    return "\n".join(lines)
