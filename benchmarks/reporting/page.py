"""A single static HTML page of all leaderboards: sortable tables, provenance, plots. No server, no CDN.

The page is the jinja2 template `templates/index.html.j2`, which inlines `templates/page.css` and
`templates/page.js` (one self-contained file); this module only gathers the values it shows. Every string that
comes from a record or a model card goes through `html.escape` (a card is data written by whoever added a model;
it must not be able to inject markup or script): the template environment escapes every expression it writes
(`_escape`), and only http(s) URLs become links. Sorting is a few lines of inline JS reading `data-sort`
attributes (the raw mean), so the sort is numeric whatever the display format.
`index.html#sort=<table-id>:<column-key>[:desc]` clicks that header on load, which lets a headless browser
(`chromium --dump-dom`) test the real click handler.

Metric columns belong to groups (accuracy, robustness, cost, depth transfer, diagnostics) that checkboxes show
or hide; by default only accuracy and cost are shown, so a full table fits a 1400 px laptop window, and the
model column stays in view when a wide table scrolls. `#show=<group>,...` (or `#show=all`) picks the groups on
load. Tables of pipeline-check tiers (smoke) carry a "not for citing" banner.
"""

from __future__ import annotations

import functools
import html
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

import jinja2
import pandas as pd
from markupsafe import Markup

from benchmarks.io import write_atomic
from benchmarks.reporting.claims import claims_for_page
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
TEMPLATE = "index.html.j2"  # in benchmarks/reporting/templates/, beside page.css and page.js


def column_group(metric: str) -> str:
    """The page group of a metric column, from its spec (a metric without a spec counts as diagnostics)."""
    spec = spec_for(metric)
    return spec.group if spec else "diagnostics"


def table_id(key: TableKey) -> str:
    """A stable element id for a table: `t-<protocol>-<task>-<hash>` with anything odd replaced by `_`."""
    task, protocol, phash = key
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"t-{protocol}-{task}-{phash}")



def _escape(value: object) -> str:
    """How the template writes every `{{ expression }}`: one line, HTML-escaped (quotes too), unless `Markup`."""
    return value if isinstance(value, Markup) else html.escape(one_line(value), quote=True)


@functools.lru_cache(maxsize=4)
def environment(templates: Path | None = None) -> jinja2.Environment:
    """The page's jinja2 environment: the package's templates (or those in `templates`), every expression
    escaped by `_escape`, block tags on their own line leaving no line behind."""
    loader = jinja2.FileSystemLoader(templates) if templates else jinja2.PackageLoader(__package__, "templates")
    env = jinja2.Environment(loader=loader, autoescape=False, finalize=_escape, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)

    def inline(name: str) -> Markup:
        """A file beside the template (CSS, JS), verbatim and never parsed as a template, without its last
        newline: the page stays one self-contained file."""
        return Markup(env.loader.get_source(env, name)[0].removesuffix("\n"))

    env.globals["inline"] = inline
    return env


def _href(path: str | Path, base: Path) -> str:
    return quote(os.path.relpath(Path(path).resolve(), base.resolve()).replace(os.sep, "/"))


def _sort_value(value: object) -> str:
    return "" if value is None or pd.isna(value) else repr(float(value))


def _banner(protocol: str) -> dict[str, object] | None:
    banner = pipeline_check_banner(protocol)
    if not banner:
        return None
    title, rest = banner.split(": ", 1)
    return {"title": title, "text": Markup(re.sub(r"`([^`]*)`", r"<code>\1</code>", _escape(rest)))}


def _table(key: TableKey, table: pd.DataFrame, plots: Sequence[Path], base: Path, docs: dict[str, str]) -> dict:
    """What the template needs of one table: plain values (the template escapes them)."""
    task, protocol, phash = key
    columns, root = display_columns(table), Path(table.attrs.get("repo_root", "."))
    commits = several_commits(table)
    sources = any(row["sources"] for _, row in table.iterrows())
    heads = [("rank", "#", "number", "", "rank by the table's sort metric"), ("model", "model", "text", "t model", ""),
             ("n", "n", "number", "", "successful seeds")]
    heads += [(c.key, c.label, "number", f"g-{column_group(c.key)}", metric_doc(c.key, docs)) for c in columns]
    heads += [("flags", "flags", "text", "t", "warnings recorded by the harness, failed runs")]
    heads += [("commit", "commit", "text", "t", "the commit(s) that produced the row's records")] if commits else []
    heads += [("source", "model code", "text", "t", "the plugin distribution that provided the model")] \
        if sources else []
    rows, ranked = [], 0
    for _, row in table.iterrows():
        ranked += row["seeds"] > 0
        metrics = []
        for column in columns:
            mean, std, note = cell(row, column)
            metrics.append({"group": column_group(column.key), "sort": _sort_value(row[f"{column.key}_mean"]),
                            "mean": mean, "std": std, "note": note})
        records = [{"href": _href(root / p, base), "label": p.rsplit("/", 1)[-1]} for p in row["records"]]
        records += [{"href": _href(root / p, base), "label": p.rsplit("/", 1)[-1] + " (failed)"}
                    for p in row["failed_records"]]
        rows.append({"rank_sort": str(ranked) if row["seeds"] else "",  # failed-only rows: no rank
                     "rank": str(ranked) if row["seeds"] else "–", "model": row["model"],
                     "url": safe_url(row["url"]), "title": row["title"], "seeds": row["seeds"], "metrics": metrics,
                     "notes": list(row["flags"]) + ["failed " + f for f in row["failures"]],
                     "commit": row_commits(row) if commits else "", "source": "; ".join(row["sources"]) or "in-tree",
                     "records": records})
    return {"id": table_id(key), "task": task, "protocol": protocol, "hash": phash, "banner": _banner(protocol),
            "provenance": header_lines(table), "commits": commits, "sources": sources,
            "heads": [dict(zip(("key", "label", "type", "cls", "doc"), h)) for h in heads], "rows": rows,
            # claimed vs reproduced, where a model card claims a number
            "claims": claims_for_page(table),
            "images": [{"src": _href(p, base), "alt": Path(p).stem} for p in plots if Path(p).suffix == ".png"]}


def render_page(tables: Mapping[TableKey, pd.DataFrame], plots: Mapping[TableKey, Sequence[Path]], base: Path,
                templates: Path | str | None = None) -> str:
    """The page's HTML; links are relative to `base`, the folder the page goes to. `templates`: a folder with
    index.html.j2, page.css and page.js to use instead of the package's."""
    docs = metric_docs()  # header tooltips: the metric definitions
    env = environment(Path(templates).resolve() if templates else None)
    return env.get_template(TEMPLATE).render(
        groups=[{"key": g, "label": label, "shown": shown} for g, (label, shown) in GROUPS.items()],
        hidden=" ".join(f"hide-{g}" for g, (_, shown) in GROUPS.items() if not shown),
        tables=[_table(key, table, plots.get(key, ()), base, docs) for key, table in tables.items()])


def write_page(tables: Mapping[TableKey, pd.DataFrame], plots: Mapping[TableKey, Sequence[Path]],
               out_path: Path | str, templates: Path | str | None = None) -> Path:
    """Write `out_path` (one HTML file); `plots` maps a table key to image files (PNG shown, others skipped)."""
    out_path = Path(out_path)
    write_atomic(out_path, render_page(tables, plots, out_path.parent, templates))
    return out_path
