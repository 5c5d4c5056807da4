"""A single static HTML page of all leaderboards: sortable tables, provenance, plots. No server, no CDN.

Every string that comes from a record or a model card goes through `html.escape` (a card is data written
by whoever added a model; it must not be able to inject markup or script), and only http(s) URLs become
links. Sorting is a few lines of inline JS reading `data-sort` attributes (the raw mean), so the sort is
numeric whatever the display format. `index.html#sort=<table-id>:<column-key>[:desc]` clicks that header
on load, which lets a headless browser (`chromium --dump-dom`) test the real click handler.

Metric columns belong to groups (accuracy, robustness, cost, depth transfer, diagnostics) that checkboxes show
or hide; by default only accuracy and cost are shown, so a full table fits a 1400 px laptop window, and the
model column stays in view when a wide table scrolls. `#show=<group>,...` (or `#show=all`) picks the groups on
load. Tables of pipeline-check tiers (smoke) carry a "not for citing" banner.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from benchmarks.io import write_atomic
from benchmarks.reporting.claims import render_claims_html
from benchmarks.reporting.render import pipeline_check_banner
from benchmarks.reporting.tables import (
    TableKey,
    cell,
    display_columns,
    header_lines,
    metric_doc,
    metric_docs,
    one_line,
    row_commits,
    safe_url,
    several_commits,
)
from benchmarks.specs import spec_for

# Column groups of the page, in display order, with whether they are shown by default. The default set keeps a
# full smoke table (28 columns) within a 1400 px laptop window; the others are one click away.
GROUPS = {"accuracy": ("accuracy", True), "robustness": ("robustness", False), "cost": ("cost", True),
          "transfer": ("depth transfer", False), "diagnostics": ("diagnostics", False)}
def column_group(metric: str) -> str:
    """The page group of a metric column, from its spec (a metric without a spec counts as diagnostics)."""
    spec = spec_for(metric)
    return spec.group if spec else "diagnostics"


CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:110em}
table{border-collapse:collapse;font-size:13px;margin:.5em 0 1em}
th,td{border-bottom:1px solid #ddd;padding:3px 8px;text-align:right;white-space:nowrap}
td.t,th.t{text-align:left}
th[data-key]{cursor:pointer;background:#f4f4f4;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
.std{color:#777}.note{color:#a60;font-size:11px}ul.prov{font-size:13px;color:#444}
img{max-width:100%;border:1px solid #eee;margin:4px}.wrap{overflow-x:auto}
th.model,td.model{position:sticky;left:0;background:#fff;z-index:1;box-shadow:1px 0 0 #ddd}
th.model{background:#f4f4f4}
.banner{border:2px solid #c60;background:#fff4e5;padding:.5em 1em;margin:.5em 0;font-weight:600}
.groups{position:sticky;top:0;background:#fff;z-index:2;padding:.4em 0;border-bottom:1px solid #ddd;font-size:13px}
.groups label{margin-right:1.2em;cursor:pointer}.overflows::after{content:"scroll for more columns →";
font-size:11px;color:#777;position:sticky;left:0}
""".strip()

# Missing values sort last in both directions; numbers compare as numbers, text with localeCompare.
JS = """
(function () {
  function sortBy(th) {
    var row = th.parentNode, table = th.closest("table"), body = table.tBodies[0];
    var idx = Array.prototype.indexOf.call(row.children, th);
    var dir = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
    Array.prototype.forEach.call(row.children, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir);
    var numeric = th.getAttribute("data-type") === "number";
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[idx].getAttribute("data-sort"), y = b.cells[idx].getAttribute("data-sort");
      var xm = x === null || x === "", ym = y === null || y === "";
      if (xm || ym) { return xm === ym ? 0 : (xm ? 1 : -1); }
      var c = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
      return dir === "ascending" ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  document.querySelectorAll("th[data-key]").forEach(function (th) {
    th.addEventListener("click", function () { sortBy(th); });
    th.addEventListener("keydown", function (e) { if (e.key === "Enter") { th.click(); } });
  });
  // Column groups: a checkbox per group shows/hides its cells (body class hide-<group>); `#show=a,b` in the URL
  // picks the visible groups on load. A table wider than its box gets the class "overflows" (and a hint).
  var boxes = document.querySelectorAll("input[data-group]");
  function markOverflow() {
    document.querySelectorAll(".wrap").forEach(function (w) {
      w.classList.toggle("overflows", w.scrollWidth > w.clientWidth + 1);
    });
  }
  function apply() {
    boxes.forEach(function (b) {
      document.body.classList.toggle("hide-" + b.getAttribute("data-group"), !b.checked);
    });
    markOverflow();
  }
  var show = /(?:^#|&)show=([^&]*)/.exec(decodeURIComponent(location.hash));
  if (show) {
    var wanted = show[1].split(",");
    boxes.forEach(function (b) {
      b.checked = wanted.indexOf("all") >= 0 || wanted.indexOf(b.getAttribute("data-group")) >= 0;
    });
  }
  boxes.forEach(function (b) { b.addEventListener("change", apply); });
  window.addEventListener("resize", markOverflow);
  apply();
  var m = /^#sort=([^:]+):([^:]+)(?::(asc|desc))?$/.exec(decodeURIComponent(location.hash));
  if (m) {
    var table = document.getElementById(m[1]);
    var th = table && table.querySelector('th[data-key="' + CSS.escape(m[2]) + '"]');
    if (th) { th.click(); if (m[3] === "desc") { th.click(); } }
  }
})();
""".strip()


def table_id(key: TableKey) -> str:
    """A stable element id for a table: `t-<protocol>-<task>-<hash>` with anything odd replaced by `_`."""
    task, protocol, phash = key
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"t-{protocol}-{task}-{phash}")


def _e(text: object) -> str:
    return html.escape(one_line(text), quote=True)


def _href(path: str | Path, base: Path) -> str:
    rel = os.path.relpath(Path(path).resolve(), base.resolve()).replace(os.sep, "/")
    return _e(quote(rel))


def _sort_value(value: object) -> str:
    return "" if value is None or pd.isna(value) else repr(float(value))


def _table_html(key: TableKey, table: pd.DataFrame, base: Path, docs: dict[str, str]) -> list[str]:
    columns, root = display_columns(table), Path(table.attrs.get("repo_root", "."))
    heads = [("rank", "#", "number", "", "rank by the table's sort metric"), ("model", "model", "text", "t model", ""),
             ("n", "n", "number", "", "successful seeds")]
    heads += [(c.key, c.label, "number", f"g-{column_group(c.key)}", metric_doc(c.key, docs)) for c in columns]
    heads += [("flags", "flags", "text", "t", "warnings recorded by the harness, failed runs")]
    commits = several_commits(table)
    heads += [("commit", "commit", "text", "t", "the commit(s) that produced the row's records")] if commits else []
    sources = any(row["sources"] for _, row in table.iterrows())
    heads += [("source", "model code", "text", "t", "the plugin distribution that provided the model")] \
        if sources else []
    out = [f'<div class="wrap"><table id="{_e(table_id(key))}"><thead><tr>']
    out += [f'<th data-key="{_e(k)}" data-type="{t}" tabindex="0" class="{c}" title="{_e(doc)}">{_e(label)}</th>'
            for k, label, t, c, doc in heads]
    out.append('<th class="t">records</th></tr></thead><tbody>')
    ranked = 0
    for _, row in table.iterrows():
        ranked += row["seeds"] > 0
        url, model = safe_url(row["url"]), _e(row["model"])
        name = f'<a href="{_e(url)}" title="{_e(row["title"])}">{model}</a>' if url else model
        rank = (str(ranked), str(ranked)) if row["seeds"] else ("", "–")  # (sort value, shown); failed-only: none
        cells = [f'<td data-sort="{rank[0]}">{rank[1]}</td>', f'<td class="t model" data-sort="{model}">{name}</td>',
                 f'<td data-sort="{row["seeds"]}">{row["seeds"]}</td>']
        for column in columns:
            mean, std, note = cell(row, column)
            text = "—" if mean is None else _e(mean) + (f' <span class="std">± {_e(std)}</span>' if std else "")
            text += f' <span class="note">({_e(note)})</span>' if note else ""
            group = column_group(column.key)
            cells.append(f'<td class="g-{group}" data-sort="{_sort_value(row[f"{column.key}_mean"])}">{text}</td>')
        notes = list(row["flags"]) + ["failed " + f for f in row["failures"]]
        cells.append(f'<td class="t" data-sort="{_e(", ".join(notes))}">{"<br>".join(_e(n) for n in notes)}</td>')
        if commits:
            cells.append(f'<td class="t" data-sort="{_e(row_commits(row))}">{_e(row_commits(row))}</td>')
        if sources:
            source = "; ".join(row["sources"]) or "in-tree"
            cells.append(f'<td class="t" data-sort="{_e(source)}">{_e(source)}</td>')
        links = [f'<a href="{_href(root / p, base)}">{_e(p.rsplit("/", 1)[-1])}</a>' for p in row["records"]]
        links += [f'<a href="{_href(root / p, base)}">{_e(p.rsplit("/", 1)[-1])} (failed)</a>'
                  for p in row["failed_records"]]
        cells.append(f'<td class="t">{" ".join(links)}</td>')
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return out


def write_page(tables: Mapping[TableKey, pd.DataFrame], plots: Mapping[TableKey, Sequence[Path]],
               out_path: Path | str) -> Path:
    """Write `out_path` (one HTML file); `plots` maps a table key to image files (PNG shown, others skipped)."""
    out_path = Path(out_path)
    base, docs = out_path.parent, metric_docs()  # header tooltips: the metric definitions
    hidden = " ".join(f"hide-{g}" for g, (_, shown) in GROUPS.items() if not shown)
    group_css = "".join(f".hide-{g} .g-{g}{{display:none}}" for g in GROUPS)
    body = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            "<title>depthbench leaderboards</title>", f"<style>{CSS}\n{group_css}</style>",
            # without JS the checkboxes do nothing, so every column is shown (the table then scrolls)
            f"<noscript><style>{''.join(f'.hide-{g} .g-{g}{{display:table-cell}}' for g in GROUPS)}"
            "</style></noscript></head>", f'<body class="{hidden}">',
            "<h1>depthbench leaderboards</h1>",
            "<p>Generated by <code>benchmarks/reporting/leaderboard.py</code> from result records only; click a column "
            "header to sort (again to reverse). Model names link to their papers. Tick a column group below to "
            "show it.</p>",
            '<div class="groups">Columns: ' + "".join(
                f'<label><input type="checkbox" data-group="{g}"{" checked" if shown else ""}> {_e(label)}</label>'
                for g, (label, shown) in GROUPS.items()) + "</div>"]
    if not tables:
        body.append("<p>No records yet.</p>")
    body.append("<ul>" + "".join(f'<li><a href="#{_e(table_id(k))}">{_e(k[0])} — {_e(k[1])} ({_e(k[2])})</a>'
                                 + (" — pipeline check, not for citing" if pipeline_check_banner(k[1]) else "")
                                 + "</li>" for k in tables) + "</ul>")
    for key, table in tables.items():
        task, protocol, phash = key
        body.append(f"<h2>{_e(task)} — protocol <code>{_e(protocol)}</code> (hash <code>{_e(phash)}</code>)</h2>")
        banner = pipeline_check_banner(protocol)
        if banner:
            title, rest = banner.split(": ", 1)
            rest = re.sub(r"`([^`]*)`", r"<code>\1</code>", _e(rest))  # _e leaves backticks alone
            body.append(f'<p class="banner" role="note">⚠ {_e(title)}: {rest}</p>')
        body.append('<ul class="prov">' + "".join(f"<li><b>{_e(label)}:</b> {_e(text)}</li>"
                                                  for label, text in header_lines(table)) + "</ul>")
        body += _table_html(key, table, base, docs)
        claims = render_claims_html(table)  # claimed vs reproduced, where a model card claims a number
        if claims:
            body.append(claims)
        for path in plots.get(key, ()):
            if Path(path).suffix == ".png":
                body.append(f'<img src="{_href(path, base)}" alt="{_e(Path(path).stem)}" loading="lazy">')
    body += [f"<script>{JS}</script>", "</body></html>"]
    write_atomic(out_path, "\n".join(body) + "\n")
    return out_path
