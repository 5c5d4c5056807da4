"""What `depthbench run` prints at its end: the user's own table and the comparison with the published records.

Torch-free (records and numbers only), so that the last screen of a run is cheap to produce and to test.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.protocols import tier_citable
from benchmarks.reporting.reproduce import compare_stores, describe_tolerance, format_rows, tolerance_for
from benchmarks.store.records import Record

if TYPE_CHECKING:  # the runner loads torch; its summary is only read here
    from benchmarks.execution.runs import RunSummary

NOT_PUBLISHED = "no published record of this protocol hash"


def results_table(records: Sequence[Record]) -> str:
    """The compact table printed after a run: per task, each model's main metric (mean ± std over seeds), best
    first; failed runs are counted, never averaged."""
    lines = []
    for task in sorted({r.task for r in records}):
        rows: dict[str, list[Record]] = {}
        for r in records:
            if r.task == task:
                rows.setdefault(r.model, []).append(r)
        metric = "accuracy" if any("accuracy" in r.metrics for r in records if r.task == task) else "test_mse"
        scale, unit = (100.0, "test accuracy (%)") if metric == "accuracy" else (1.0, "test MSE")
        entries = []
        for model, runs in rows.items():
            values = [scale * r.metrics[metric] for r in runs if r.status == "ok" and metric in r.metrics]
            failed = sum(r.status != "ok" for r in runs)
            entries.append((model, values, failed))
        entries.sort(key=lambda e: (not e[1], (-1 if metric == "accuracy" else 1) * statistics.fmean(e[1])
                                    if e[1] else 0.0))
        lines.append(f"  {task}: {unit}")
        for model, values, failed in entries:
            if values:
                fmt = "{:.2f}" if metric == "accuracy" else "{:.3g}"
                cell = fmt.format(statistics.fmean(values))
                if len(values) > 1:
                    cell += " ± " + fmt.format(statistics.stdev(values))
                cell += f"  (n={len(values)})"
            else:
                cell = "—"
            lines.append(f"    {model:<22} {cell}" + (f"  [{failed} failed]" if failed else ""))
    return "\n".join(lines)


def table_heading(protocol_name: str, version: int, results: Path) -> str:
    """The line above the user's table; a pipeline-check tier (not citable) says so, so that nobody cites it."""
    heading = f"Results of tier {protocol_name} v{version} in {results}:"
    if not tier_citable(protocol_name):
        heading += (f"\n  (the {protocol_name} tier is a pipeline check: tiny models, a few epochs, one seed. It shows "
                    "that training, every metric, records and leaderboards work here; its numbers rank nothing)")
    return heading


def hashes_text(hashes: dict[str, str]) -> str:
    """`task hash, ...` of a tier's (tier, task) hashes."""
    return ", ".join(f"{task} {h}" for task, h in hashes.items())


def comparison(results: Path, published: Path, protocol_name: str, hashes: dict[str, str], *, checkout: bool) -> str:
    """The comparison of a store with the published records of a tier's (tier, task) `hashes` (task -> hash), with
    what to do next.

    `checkout`: whether the command runs at the top of a depthbench checkout; only there is `depthbench publish`
    the next step (elsewhere there is no published store to publish into)."""
    if Path(results).resolve() == Path(published).resolve():
        return f"Records were written into the published store {published}; nothing to compare with."
    if not Path(published).is_dir():
        where = "" if checkout else " (this directory is not a depthbench checkout; `--published DIR` names the " \
                                    "results/ of one)"
        return f"No published records at {published}{where}: nothing to compare with."
    rows = compare_stores(results, published, set(hashes.values()))
    lines = [f"Comparison with the published records in {published} (protocol hashes {hashes_text(hashes)}; "
             f"tolerance of the {protocol_name} tier: {describe_tolerance(tolerance_for(protocol_name))}, or 2 "
             "standard errors of the seed spread where larger; see benchmarks/reporting/reproduce.py):"]
    lines.append(format_rows(rows) if rows else "  no records of this protocol hash in the local store")
    for task in sorted({row.task for row in rows}):
        missing = sorted({row.model for row in rows if row.task == task and row.note == NOT_PUBLISHED})
        if not missing or not checkout:
            continue
        task_hash = hashes.get(task, "?")
        anything = any(Path(published).glob(f"{task}/{task_hash}/*/seed*.json"))
        what = f"no published record of {', '.join(missing)} on {task} under {task_hash}" if anything else \
            f"nothing is published on {task} under {task_hash} yet"
        lines.append(f"  ({what}: `depthbench publish` then `depthbench leaderboard` make yours the published "
                     "records)")
    return "\n".join(lines)


def summary_text(summary: RunSummary, protocol_name: str, results: Path, max_minutes: float | None) -> str:
    """What the runs of one `depthbench run` came to, one `depthbench:` line per fact (for stderr)."""
    lines = [f"{len(summary.written)} runs recorded, {len(summary.failed)} failed, {len(summary.skipped)} already "
             f"done (records under {results})"]
    if summary.failed_before:
        lines.append(f"{len(summary.failed_before)} of those already done are failed runs; `--retry-failed` runs "
                     "them again")
    lines += [f"optional task {name} not run: its data is not on disk (`depthbench run --tasks {name} --download` "
              "fetches it where torchvision can)" for name in summary.unavailable]
    lines += [f"warning: plugin model {name} was left out: it fails `depthbench check` (`depthbench check {name}` "
              f"shows why; `--models {name}` runs it anyway, and fails)" for name in summary.left_out]
    if summary.phase_seconds:
        spent = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in
                          sorted(summary.phase_seconds.items(), key=lambda item: -item[1]))
        lines.append(f"time by phase over the runs just done: {spent}")
    lines += [f"{label} has no record: {why}" for label, why in summary.unfinished.items()]
    lines += [f"{label} was left to {holder}, which is running it" for label, holder in summary.busy.items()]
    if summary.busy:
        lines.append(f"{len(summary.busy)} runs were left to other processes; rerun the same command once they are "
                     "done to see their records here")
    if summary.submitted:
        lines.append(f"{len(summary.submitted)} runs are in Slurm's hands; `depthbench status --tier {protocol_name} "
                     f"--results {results}` follows them, and the same command again (when they are done) shows the "
                     "table")
    if summary.postponed:
        lines.append(f"{len(summary.postponed)} runs not started within --max-minutes {max_minutes:g}; rerun the "
                     "same command to do them")
    return "\n".join(f"depthbench: {line}" for line in lines)
