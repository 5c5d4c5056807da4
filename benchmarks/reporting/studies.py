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

import matplotlib
from matplotlib.figure import Figure

from benchmarks.io import write_atomic
from benchmarks.reporting.plots import RC, _save
from benchmarks.store.studies import read_study

TITLES = {
    "refinement": "Refinement training vs full depth (Queiruga et al. 2020)",
    "compression": "Compression by depth transfer: the cheapest manifestation within 0.5 pt (Queiruga et al. 2020)",
    "memory": "Peak training memory vs steps, direct vs adjoint backprop; ODE-Net vs ResNet parameters "
              "(Chen et al. 2018)",
    "stiffness": "Stiffness penalty on the rate Jacobian's spectral radius (after Hudson et al. 2023)",
    "suite-strength": "The cpu tier's reduced attack budgets against the full-strength suite",
}


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
    lines = [f"# {TITLES.get(study['study'], study['study'])}: {study['task']}", "",
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


def memory_figure(study: dict[str, Any]) -> Figure | None:
    points = [r for r in study["rows"] if r.get("kind") == "sweep"]
    if not points:
        return None
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(5.2, 3.6))
        ax = fig.add_subplot()
        for mode, marker in (("direct", "o"), ("adjoint", "s")):
            steps = sorted({r["n_steps"] for r in points if r["mode"] == mode})
            means = [sum(r["peak_mib"] for r in points if r["mode"] == mode and r["n_steps"] == n)
                     / sum(1 for r in points if r["mode"] == mode and r["n_steps"] == n) for n in steps]
            ax.plot(steps, means, marker=marker, label=f"{mode} backprop")
        ax.set_xlabel("RK4 steps (depth)")
        ax.set_ylabel("peak training memory above baseline (MiB)")
        ax.set_title(f"Peak training memory, {study['task']} study (mean over {len(study['seeds'])} seeds)")
        # bottom right: above the flat adjoint line, below the rising direct one
        ax.text(0.98, 0.12, study["details"].get("measure", ""), transform=ax.transAxes, fontsize=6, color="grey",
                ha="right")
        ax.legend()
        fig.tight_layout()
    return fig


FIGURES: dict[str, Callable[[dict[str, Any]], Figure | None]] = {"memory": memory_figure}


def render(json_path: Path | str, out_dir: Path | str) -> list[Path]:
    """Write <task>.md, <task>.csv (and <task>.png/.svg where the study has a figure) under `out_dir`."""
    study = read_study(Path(json_path))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = out / study["task"]
    written = [Path(f"{base}.md"), Path(f"{base}.csv")]
    write_atomic(written[0], table(study))
    write_atomic(written[1], rows_csv(study))
    make = FIGURES.get(study["study"])
    fig = make(study) if make else None
    if fig is not None:
        written += _save(fig, base)
    return written
