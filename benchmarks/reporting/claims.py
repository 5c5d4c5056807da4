"""Claimed vs reproduced: the numbers a model card states, against the mean ± std of the records of a table.

A card's `claims` entry is `{"task", "protocol", "metric", "value", "source"[, "tolerance"]}`: `protocol` is the
tier name whose tables it is compared with, `metric` a record metric name, `value` and `tolerance` in the records'
units (fractions for accuracies: 0.93, not 93), `source` where the number comes from ("Table 2 of the paper").
A row is marked when |reproduced mean − claimed| exceeds the stated tolerance; without a tolerance it is not judged.
"""

from __future__ import annotations

import csv
import html
import io
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from benchmarks.reporting.tables import column_for, one_line

REQUIRED = ("task", "protocol", "metric", "value", "source")


@dataclass(frozen=True)
class Claim:
    task: str
    protocol: str
    metric: str
    value: float
    source: str
    tolerance: float | None = None


def parse_claims(model: str, entries: Any) -> list[Claim]:
    """A card's `claims` entries, checked; a malformed one is an error naming the model and what to fix."""
    claims = []
    for i, raw in enumerate(entries or ()):
        where = f"model {model!r}: card claim #{i + 1}"
        if not isinstance(raw, dict):
            raise ValueError(f"{where} must be a mapping with keys {', '.join(REQUIRED)}, got {raw!r}")
        missing = [k for k in REQUIRED if k not in raw]
        if missing:
            raise ValueError(f"{where} lacks {', '.join(missing)} (needs {', '.join(REQUIRED)}[, tolerance])")
        value, tolerance = raw["value"], raw.get("tolerance")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{where}: value must be a finite number in the records' units, got {value!r}")
        if tolerance is not None and (isinstance(tolerance, bool) or not isinstance(tolerance, int | float)
                                      or not tolerance >= 0):
            raise ValueError(f"{where}: tolerance must be a number >= 0, got {tolerance!r}")
        claims.append(Claim(str(raw["task"]), str(raw["protocol"]), str(raw["metric"]), float(value),
                            str(raw["source"]), None if tolerance is None else float(tolerance)))
    return claims


def compare(table: pd.DataFrame) -> list[dict[str, Any]]:
    """One entry per claim of a row's card that concerns this table's task and protocol, in table order."""
    at, out = table.attrs, []
    for _, row in table.iterrows():
        for claim in parse_claims(row["model"], row.get("claims")):
            if claim.task != at["task"] or claim.protocol != at["protocol"]:
                continue
            mean = row.get(f"{claim.metric}_mean", math.nan)
            std = row.get(f"{claim.metric}_std", math.nan)
            n = int(row.get(f"{claim.metric}_n", 0) or 0)
            diff = mean - claim.value if not pd.isna(mean) else math.nan
            outside = None if claim.tolerance is None or pd.isna(diff) else abs(diff) > claim.tolerance + 1e-12
            out.append({"model": row["model"], "metric": claim.metric, "claimed": claim.value, "mean": mean,
                        "std": std, "n": n, "difference": diff, "tolerance": claim.tolerance, "outside": outside,
                        "source": claim.source})
    return out


def _fmt(value: float, metric: str, regression: bool) -> str:
    column = column_for(metric, regression)
    value *= column.scale
    return f"{value:.{column.digits - 1}e}" if column.kind == "sci" else f"{value:,.{column.digits}f}"


HEAD = ("model", "metric", "claimed", "reproduced (mean ± std, n)", "difference", "tolerance", "", "source")
INTRO = ("Claimed vs reproduced (claims from the model cards; values in the units of the table above; "
         "difference = reproduced − claimed; ⚠ = outside the claim's stated tolerance)")


def _cells(c: dict[str, Any], regression: bool) -> list[str]:
    """One comparison as display strings, in HEAD's order (shared by the Markdown and HTML renderers)."""
    def f(v: float | None) -> str:
        return "—" if v is None or pd.isna(v) else _fmt(v, c["metric"], regression)

    reproduced = "—" if pd.isna(c["mean"]) else (
        f(c["mean"]) + (f" ± {f(c['std'])}" if not pd.isna(c["std"]) else "") + f" (n={c['n']})")
    diff = "—" if pd.isna(c["difference"]) else ("+" if c["difference"] >= 0 else "") + f(c["difference"])
    mark = {True: "⚠ outside", False: "within", None: ""}[c["outside"]]
    tolerance = "not stated" if c["tolerance"] is None else "±" + f(c["tolerance"])
    return [one_line(x) for x in (c["model"], c["metric"], f(c["claimed"]), reproduced, diff, tolerance, mark,
                                  c["source"])]


def render_claims_markdown(table: pd.DataFrame) -> str:
    """A 'Claimed vs reproduced' section ("" when no card claims anything for this task and protocol)."""
    rows = compare(table)
    if not rows:
        return ""
    regression = table.attrs.get("primary") == "test_mse"
    lines = ["", INTRO + ":", "", "| " + " | ".join(HEAD) + " |", "|---|---|---:|---:|---:|---:|---|---|"]
    for c in rows:
        cells = [html.escape(x, quote=False).replace("|", "\\|") for x in _cells(c, regression)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def claims_for_page(table: pd.DataFrame) -> dict[str, Any] | None:
    """The same comparison for the page's template (index.html.j2): intro, head and rows of plain cells, which the
    template escapes; None when no card claims anything for this table."""
    rows = compare(table)
    if not rows:
        return None
    regression = table.attrs.get("primary") == "test_mse"
    return {"intro": INTRO, "head": list(HEAD), "rows": [_cells(c, regression) for c in rows]}


def render_claims_csv(table: pd.DataFrame) -> str:
    """Plain numbers (records' units) of the comparison; "" when there is nothing to compare."""
    rows = compare(table)
    if not rows:
        return ""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    keys = ["model", "metric", "claimed", "mean", "std", "n", "difference", "tolerance", "outside", "source"]
    writer.writerow(["task", "protocol", "protocol_hash", *keys])
    for c in rows:
        values = ["" if v is None or (isinstance(v, float) and math.isnan(v)) else
                  (f"{v:.12g}" if isinstance(v, float) else v) for v in (c[k] for k in keys)]
        writer.writerow([table.attrs["task"], table.attrs["protocol"], table.attrs["protocol_hash"], *values])
    return out.getvalue()
