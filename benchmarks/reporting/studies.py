"""Renders a study file (benchmarks/store/studies.py) as a Markdown table, a CSV of its rows and, for the studies
that have one, a figure: from the JSON alone, no torch, so tables can be regenerated anywhere.

The Markdown holds the summary (mean ± std over seeds, the per-seed values, and the paper's figure where the study
file carries one in `details["paper"]`, in its own column: the paper's numbers are not ours), then every row.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.io import write_atomic
from benchmarks.reporting import convergence
from benchmarks.reporting.plots import _save, line_figure
from benchmarks.store.studies import read_study


def _columns(study: dict[str, Any]) -> list[str]:
    """The study's own column order (`details["columns"]`; the file's keys are sorted), then any others."""
    found = dict.fromkeys(key for row in study["rows"] for key in row)
    return [c for c in study["details"].get("columns", []) if c in found] + sorted(
        set(found) - set(study["details"].get("columns", [])))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return "—"
        return f"{value:.4g}"
    return "—" if value is None else str(value)


def _quantity(q: dict[str, Any]) -> str:
    return f"{q['mean']:.4g} ± {q['std']:.2g}"


def table(study: dict[str, Any]) -> str:
    prov, details = study["provenance"], study["details"]
    paper = details.get("paper", {})
    lines = [f"# {details.get('title', study['study'])}: {study['task']}", "",
             f"Produced by `{prov.get('command', '?')}` at commit {str(prov.get('git_commit', '?'))[:12]}"
             f"{' (dirty)' if prov.get('git_dirty') else ''} on {prov.get('device', '?')}, {prov.get('finished', '?')}"
             f"; tier {study['tier']}, seeds {', '.join(map(str, study['seeds']))}"
             + (f"; {details['seconds']:g} s" if "seconds" in details else "") + ".", ""]
    if details.get("note"):
        lines += [details["note"] + ".", ""]
    head = "| quantity | ours: mean ± std | per seed |" + (f" {paper.get('label', 'paper')} |" if paper else "")
    lines += [head, "|---|---|---|" + ("---|" if paper else "")]
    for name, q in study["summary"].items():
        values = ", ".join(f"{v:.4g}" for v in q["values"])
        lines.append(f"| {name} | {_quantity(q)} | {values} |" + (f" {paper.get(name, '')} |" if paper else ""))
    rows = study["rows"]
    if rows:
        columns = _columns(study)
        lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def rows_csv(study: dict[str, Any]) -> str:
    rows = study["rows"]
    columns = _columns(study)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def render(json_path: Path | str, out_dir: Path | str) -> list[Path]:
    """Write <task>.md, <task>.csv (and <task>.png/.svg where the study declares a figure) under `out_dir`; a study
    with a renderer of its own (`RENDERERS`) is rendered by it."""
    study = read_study(Path(json_path))
    if study["study"] in RENDERERS:
        return RENDERERS[study["study"]](json_path, out_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = out / study["task"]
    written = [Path(f"{base}.md"), Path(f"{base}.csv")]
    write_atomic(written[0], table(study))
    write_atomic(written[1], rows_csv(study))
    fig = line_figure(study)
    if fig is not None:
        written += _save(fig, base)
    return written


# Studies whose figure is more than a declared line plot: the convergence test's error-vs-Δt curves per scheme pair.
RENDERERS: dict[str, Callable[[Path | str, Path | str], list[Path]]] = {"convergence": convergence.render}
