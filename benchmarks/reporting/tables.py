"""Records -> one pandas row per record -> one aggregated table per (task, protocol name, protocol hash).

This is the only place where leaderboard numbers are computed, and it reads nothing but records
(`benchmarks.store.records.iter_records`): every number a renderer prints is a mean / std of metric values
of successful records, and every table carries the paths of the records behind each row.
The renderers (`render`, `page`, `plots`) share the column set and formatting defined here,
so the Markdown, LaTeX and HTML tables always show the same cells.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.protocols import PROTOCOLS, current_hash, tier_citable
from benchmarks.specs import BY_PATTERN, DOCS, TABLE_HEAD, TABLE_TAIL, MetricKey, radius_text
from benchmarks.specs import SPECS as METRIC_SPECS
from benchmarks.store.records import iter_records

TableKey = tuple[str, str, str]  # (task, protocol name, protocol hash)

META_COLUMNS = [
    "model", "task", "protocol", "protocol_version", "protocol_hash", "seed", "status", "error", "flags",
    "not_applicable",
    "git_commit", "git_dirty", "device", "started", "finished", "concurrent_runs", "packages", "model_source", "card",
    "depth_transfer", "trajectory", "record",
]
HEADER_PACKAGES = ("torch", "torchdiffeq", "torchattacks")  # versions stated in every table header
CARD_FIELDS = ("name", "family", "title", "authors", "year", "arxiv", "doi", "url", "bibkey", "bibtex", "variant")
# Per-radius metrics in display order (benchmarks/evaluation/attacks.py): the headline worst case and its 95% interval,
# each attack of the suite, then noise. Tables show the worst case (with its interval) and noise; the CSV has them all.
ATTACK_KINDS = {s.base: s.attack for s in METRIC_SPECS if s.attack}  # kind -> (label, radius symbol)
DISPLAYED_KINDS = tuple(kind for kind, spec in ((s.base, s) for s in METRIC_SPECS if s.attack)
                        if spec.shown == "table")  # the worst case and noise; single attacks go to the CSV


def find_repo_root(start: Path) -> Path:
    """The repository holding `start` (first parent with .git or pyproject.toml), else start's parent.

    Record paths are reported relative to it so that tables link to records portably."""
    start = Path(start).resolve()
    for parent in (start, *start.parents):
        if (parent / ".git").exists() or (parent / "pyproject.toml").exists():
            return parent
    return start.parent


def _number(value: Any) -> float:
    # bool is an int in Python, but True is not a measurement; non-finite values are no measurement either.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return math.nan
    return float(value)


def _text(value: Any) -> str:
    # "" rather than None: pandas 3 turns None in a string column into NaN, which is truthy and prints "nan".
    return "" if value is None else str(value)


def load_frame(records_root: Path | str, repo_root: Path | str | None = None) -> pd.DataFrame:
    """One row per record below `records_root`: identity, status, every metric (NaN where absent), provenance.

    Failed records are kept (their error becomes a failure note); `aggregate` never averages them."""
    records_root = Path(records_root)
    root = Path(repo_root).resolve() if repo_root is not None else find_repo_root(records_root)
    rows, metric_names = [], set()
    for path, rec in iter_records(records_root):
        prov, proto = rec.provenance or {}, rec.protocol or {}
        rel = os.path.relpath(path.resolve(), root).replace(os.sep, "/")
        row = {
            "model": str(rec.model), "task": str(rec.task), "protocol": str(proto.get("name", "")),
            "protocol_version": proto.get("version"), "protocol_hash": str(proto.get("hash", "")),
            "seed": int(rec.seed), "status": str(rec.status), "error": _text(rec.error),
            "flags": tuple(sorted({str(f) for f in rec.flags or []})),
            "not_applicable": tuple(sorted({str(m) for m in getattr(rec, "not_applicable", None) or []})),
            "git_commit": _text(prov.get("git_commit")), "git_dirty": bool(prov.get("git_dirty", False)),
            "device": _text(prov.get("device")), "started": _text(prov.get("started")),
            "finished": _text(prov.get("finished")), "concurrent_runs": int(prov.get("concurrent_runs") or 1),
            "packages": dict(prov.get("packages") or {}), "model_source": source_label(prov.get("model_source")),
            "card": dict(rec.card or {}),
            "depth_transfer": list(rec.depth_transfer or []), "trajectory": list(rec.trajectory or []),
            "record": rel,
        }
        for name, value in (rec.metrics or {}).items():
            if name in META_COLUMNS:
                raise ValueError(f"{path}: metric name {name!r} collides with a frame column")
            row[name] = _number(value)
            metric_names.add(name)
        rows.append(row)
    frame = pd.DataFrame(rows, columns=META_COLUMNS + order_metrics(metric_names))
    frame = frame.astype({m: "float64" for m in metric_names})
    dupes = frame[frame.duplicated(["model", "task", "protocol_hash", "seed"], keep=False)]
    if not dupes.empty:  # two files claiming the same run would be counted twice as "seeds"
        raise ValueError(f"several records for the same (model, task, protocol hash, seed): {list(dupes.record)}")
    frame.attrs["repo_root"] = str(root)
    return frame


def metric_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in META_COLUMNS]


def attack_key(name: str) -> tuple[int, float] | None:
    """(kind order, radius) of a per-radius metric such as `pgd@0.0314`, None for other metrics."""
    key = MetricKey.parse(name)
    if key.at is None or key.name not in ATTACK_KINDS:
        return None
    return list(ATTACK_KINDS).index(key.name), key.at


def order_metrics(names: Any) -> list[str]:
    """Leaderboard order: primary, validation, attacks by kind then radius, cost columns, then the rest by name."""
    names = set(names)
    attacks = sorted((n for n in names if attack_key(n)), key=lambda n: (attack_key(n), n))
    fixed = [n for n in TABLE_HEAD if n in names] + attacks + [n for n in TABLE_TAIL if n in names]
    return fixed + sorted(names - set(fixed))


def parse_time(text: str) -> datetime | None:
    try:
        stamp = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.astimezone()  # naive -> local time, comparable with aware ones


def extreme_time(values: Any, latest: bool) -> str | None:
    """The earliest/latest ISO timestamp as written in the record (compared as times, not as strings)."""
    parsed = [(s, str(v)) for v in values if v and (s := parse_time(v)) is not None]
    if not parsed:
        return None
    return (max if latest else min)(parsed)[1]


def run_seconds(started: Any, finished: Any) -> float:
    """One run's wall time, start to finish (training, every metric, the record); 0 when not recorded."""
    start, end = parse_time(started), parse_time(finished)
    return max(0.0, (end - start).total_seconds()) if start and end else 0.0


def format_duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def commit_label(commit: Any, dirty: Any) -> str:
    return (str(commit) if commit else "unknown") + ("+dirty" if dirty else "")


def primary_metric(metrics: list[str]) -> str | None:
    """The metric tables are sorted by: test accuracy for classification, test MSE for regression."""
    return "accuracy" if "accuracy" in metrics else "test_mse" if "test_mse" in metrics else None


def _model_row(model: str, rows: pd.DataFrame, metrics: list[str]) -> dict[str, Any]:
    ok, failed = rows[rows.status == "ok"], rows[rows.status != "ok"]
    row: dict[str, Any] = {"model": model, "seeds": len(ok), "failed": len(failed)}
    for m in metrics:  # pandas skips NaN: a metric missing in one seed is averaged over the others (see m_n)
        row[f"{m}_mean"], row[f"{m}_std"], row[f"{m}_n"] = ok[m].mean(), ok[m].std(ddof=1), int(ok[m].count())
    row["flags"] = tuple(sorted({f for flags in rows["flags"] for f in flags}))
    # Metrics the model cannot have (it lacks the capability, zoo/contract.py): "n/a" rather than "not recorded".
    row["not_applicable"] = tuple(sorted({m for names in ok["not_applicable"] for m in names}))
    row["failures"] = tuple(f"seed {s}: {one_line(e) or 'no error message'}" for s, e in zip(failed.seed, failed.error))
    row["records"], row["failed_records"] = tuple(ok.record), tuple(failed.record)
    card = rows.card.iloc[0]  # rows are in record-path order: the card of the first record
    for name in CARD_FIELDS:
        row[name] = _text(card.get(name))  # year too: "" when absent keeps the column free of NaN
    row["url"] = card_link(card)
    row["claims"] = tuple(card.get("claims") or ())  # compared with the row's numbers by benchmarks/reporting/claims.py
    row["git_commits"] = tuple(sorted({commit_label(c, d) for c, d in zip(rows.git_commit, rows.git_dirty)}))
    row["devices"] = tuple(sorted({str(d) for d in rows.device if d}))
    row["started"], row["finished"] = extreme_time(rows.started, False), extreme_time(rows.finished, True)
    row["run_seconds"] = sum(run_seconds(s, f) for s, f in zip(rows.started, rows.finished))
    row["concurrent_runs"] = int(rows.concurrent_runs.max())
    row["sources"] = tuple(sorted({s for s in rows.model_source if s}))  # plugin distribution(s) behind the row
    names = sorted({name for packages in rows.packages for name in packages})
    row["packages"] = {n: tuple(sorted({str(p[n]) for p in rows.packages if p.get(n)})) for n in names}
    return row


def aggregate(frame: pd.DataFrame) -> dict[TableKey, pd.DataFrame]:
    """One table per (task, protocol name, protocol hash); rows = models, best first.

    Per metric: `<m>_mean`, `<m>_std` (sample std, ddof=1, NaN for one seed) and `<m>_n` over OK records only;
    `seeds` counts OK records, `failed` the others (their errors are in `failures`, their numbers nowhere).
    Tables never mix protocol hashes: results under different protocols are not comparable."""
    tables: dict[TableKey, pd.DataFrame] = {}
    all_metrics = metric_columns(frame)
    for (task, protocol, phash), group in frame.groupby(["task", "protocol", "protocol_hash"], sort=True):
        ok = group[group.status == "ok"]
        metrics = [m for m in all_metrics if ok[m].notna().any()]  # a metric no OK record has gets no column
        table = pd.DataFrame([_model_row(m, rows, metrics) for m, rows in group.groupby("model", sort=True)])
        primary = primary_metric(metrics)
        if primary:
            table = table.sort_values([f"{primary}_mean", "model"], ascending=[primary == "test_mse", True],
                                      na_position="last", kind="mergesort")
        table = table.reset_index(drop=True)
        versions = sorted({int(v) for v in group.protocol_version.dropna()})
        table.attrs = {
            "task": task, "protocol": protocol, "protocol_hash": phash, "protocol_versions": versions,
            "metrics": metrics, "primary": primary, "repo_root": frame.attrs.get("repo_root", "."),
        }
        tables[(task, protocol, phash)] = table
    return tables


@dataclass(frozen=True)
class Column:
    key: str  # metric name, as in records
    label: str  # header, with unit
    kind: str  # fixed | signed | sci | si
    digits: int = 2
    scale: float = 1.0  # 100: a fraction shown in %
    note: str = ""  # what the numbers mean, printed once per table in the "Units" header line


_ROBUST = BY_PATTERN["robust@<eps>"]  # every per-radius column (attacks, noise) is formatted as accuracies
ACC = (_ROBUST.kind, _ROBUST.digits, _ROBUST.scale, _ROBUST.note)
# metric -> (label, kind, digits, scale, note), from the metric specs (benchmarks/specs.py)
SPECS = {s.pattern: (s.label, s.kind, s.digits, s.scale, s.note) for s in METRIC_SPECS if s.label}
REGRESSION_SPECS = {s.pattern: s.regression for s in METRIC_SPECS if s.regression}  # depth transfer: relative MSE


def column_for(metric: str, regression: bool = False) -> Column:
    key = MetricKey.parse(metric)
    if key.at is not None and key.name in ATTACK_KINDS:
        name, symbol = ATTACK_KINDS[key.name]
        return Column(metric, f"{name} {symbol}={radius_text(key.at)} (%)", *ACC)
    base = "dt_delta_2x" if metric == "dt_delta_half" else metric  # ½× shares the 2× spec but its label
    spec = (REGRESSION_SPECS if regression and base in REGRESSION_SPECS else SPECS).get(base)
    if spec is None:
        return Column(metric, metric, "fixed", 3)
    label = spec[0].replace("2×", "½×") if metric == "dt_delta_half" else spec[0]
    return Column(metric, label, *spec[1:])


def display_columns(table: pd.DataFrame) -> list[Column]:
    """The leaderboard column set, restricted to metrics some OK record of this table actually has."""
    present = set(table.attrs.get("metrics", []))
    keep = [m for m in order_metrics(present)
            if m in TABLE_HEAD or m in TABLE_TAIL or (attack_key(m) and MetricKey.parse(m).name in DISPLAYED_KINDS)]
    return [column_for(m, regression=table.attrs.get("primary") == "test_mse") for m in keep]


def _fmt(value: float, column: Column) -> str:
    value *= column.scale
    if column.kind in ("fixed", "signed") and round(value, column.digits) == 0:
        value = 0.0  # float noise such as -1e-17 must not print as "-0.00"
    if column.kind == "sci":
        return f"{value:.{column.digits - 1}e}"
    if column.kind == "signed":
        return f"{value:+,.{column.digits}f}"
    if column.kind == "si":
        for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if abs(value) >= factor:
                return f"{value / factor:.{column.digits}g}{suffix}"
        return f"{value:.{column.digits}g}"
    return f"{value:,.{column.digits}f}"


def cell(row: Any, column: Column) -> tuple[str | None, str | None, str | None]:
    """(mean, std, note) as display strings; mean None = no record has it. Std is None for a single value."""
    mean, std, n = row[f"{column.key}_mean"], row[f"{column.key}_std"], row[f"{column.key}_n"]
    if pd.isna(mean):
        return ("n/a" if column.key in row.get("not_applicable", ()) else None), None, None
    show_std = not pd.isna(std) and not (column.kind == "si" and std == 0)
    notes = [f"n={int(n)}"] if int(n) != int(row["seeds"]) else []  # metric missing in some seeds
    if column.key.startswith("robust@"):
        low, high = (row.get(column.key.replace("robust@", f"robust_ci_{end}@") + "_mean") for end in ("low", "high"))
        if low is not None and high is not None and not (pd.isna(low) or pd.isna(high)):
            notes.append(f"CI {_fmt(low, column)}–{_fmt(high, column)}")
        if "unreliable" in row["flags"]:
            notes.append("unreliable")
    return _fmt(mean, column), _fmt(std, column).lstrip("+") if show_std else None, "; ".join(notes) or None


def sort_description(table: pd.DataFrame) -> str:
    primary = table.attrs.get("primary")
    if primary == "accuracy":
        return "sorted by test accuracy, descending"
    if primary == "test_mse":
        return "sorted by test MSE, ascending"
    return "sorted by model name (no test accuracy or test MSE recorded)"


def _versions(values: Any) -> str:
    values = sorted(values)
    return ", ".join(values) if values else "not recorded"


def short_commit(commit: str) -> str:
    # 12 hex digits identify a commit in a header; the CSV keeps the full hash.
    return re.sub(r"^([0-9a-f]{12})[0-9a-f]{28}", r"\1", commit)


def several_commits(table: pd.DataFrame) -> bool:
    """Whether the table's rows come from more than one commit (then every row names its own)."""
    return len({c for cs in table.git_commits for c in cs}) > 1


def row_commits(row: Any) -> str:
    return " ".join(short_commit(c) for c in row["git_commits"])


def header_lines(table: pd.DataFrame) -> list[tuple[str, str]]:
    """Header lines (label, plain text) shared by every renderer: where the numbers of this table come from."""
    at = table.attrs
    versions = "/".join(f"v{v}" for v in at.get("protocol_versions", [])) or "version not recorded"
    starts = extreme_time(table.started, False) or "unknown"
    ends = extreme_time(table.finished, True) or "unknown"
    packages = []
    for name in HEADER_PACKAGES:
        found = {v for p in table.packages for v in p.get(name, ())}
        packages.append(f"{name} {_versions(found)}")
    ok, failed = int(table.seeds.sum()), int(table.failed.sum())
    outdated = outdated_note(at["protocol"], at["task"], at["protocol_hash"])
    return [
        ("Protocol", f"{at['protocol']} {versions}, hash {at['protocol_hash']}"),
        *([("Citable", citable_note(at["protocol"]))] if tier_citable(at["protocol"]) else []),
        *([("Outdated", outdated)] if outdated else []),
        ("Runs", f"{starts} to {ends} ({ok} successful, {failed} failed)"),
        ("Run time", f"{format_duration(float(table.run_seconds.sum()))} in total over {ok + failed} runs "
                     "(sum of each run's start to finish: training, every metric, writing the record)"),
        ("Devices", _versions({d for ds in table.devices for d in ds})),
        *([("Concurrency", f"up to {int(table.concurrent_runs.max())} runs shared the device at a time: train times, "
            "latencies and throughputs include that contention (benchmarks/suites times every model alone)")]
          if table.concurrent_runs.max() > 1 else []),
        ("Packages", "; ".join(packages)),
        ("Commits", _versions({short_commit(c) for cs in table.git_commits for c in cs})
                     + ("; each row's in its commit column" if several_commits(table) else "")),
        *([("Eval batch", eval_batch_note(table))] if "eval_batch" in at.get("metrics", []) else []),
        *([("Stochastic", STOCHASTIC_NOTE)] if any("stochastic" in flags for flags in table["flags"]) else []),
        ("Order", sort_description(table)),
        ("Cells", "mean ± sample std (ddof=1) over the n seeds of successful runs; (n=k) marks a metric present "
                  "in only k of them; — = not recorded; n/a = not applicable (the model lacks the capability)"),
        ("Units", units_note(display_columns(table))),
    ]


def citable_note(tier: str) -> str:
    """What a citable tier's table says of itself: that it may be cited, how, and what the tier is."""
    known = PROTOCOLS.get(tier)
    what = f" The tier: {known.description}" if known else ""
    return (f"yes: a `{tier}` tier table; cite a number with its protocol hash and commit (above) and the row's n "
            f"(seeds).{what}")


def outdated_note(tier: str, task: str, phash: str) -> str | None:
    """What a table of records of an earlier (or later) definition of a tier says of itself; None when current."""
    current = current_hash(tier, task)
    if current is None or current == phash:
        return None
    return (f"these records are of hash {phash}, not of the `{tier}` tier as this code defines it (hash {current}): "
            f"they stand for the protocol of their own hash, and `depthbench claims` leaves them out; rerun with "
            f"`depthbench run --tier {tier} --tasks {task}` for the current one")


STOCHASTIC_NOTE = (
    "rows flagged stochastic have a random forward in evaluation (noise injected at test time): each of their "
    "numbers is one draw, reproducible (torch's RNG seeded afresh for every evaluation phase), and their attacks "
    "follow the mean gradient of several draws (expectation over transformation; the record's eot_draws)")


def eval_batch_note(table: pd.DataFrame) -> str:
    """The evaluation batch size(s) behind the table: adaptive solvers' numbers depend on it (batch-coupled)."""
    sizes = sorted({int(v) for v in table["eval_batch_mean"].dropna()})
    return (f"{', '.join(map(str, sizes))} examples per forward pass in every evaluation; rows flagged "
            "batch-coupled give an example other outputs alone than inside such a batch (adaptive solvers choose "
            "their steps for the whole batch), so their numbers hold for this batch size only")


def metric_docs() -> dict[str, str]:
    """One line per metric name (pattern), from the metric specs."""
    return dict(DOCS)


def metric_doc(metric: str, docs: dict[str, str]) -> str:
    return docs.get(MetricKey.parse(metric).pattern(), "")


def units_note(columns: list[Column]) -> str:
    notes = list(dict.fromkeys(c.note for c in columns if c.note))  # in column order, each once
    return "; ".join(notes) or "no metric recorded"


def card_link(card: dict[str, Any]) -> str:
    """Where a row links its model: the card's own resolved `link` (zoo.ModelCard.link: arXiv, else DOI, else URL);
    cards of older records have none, and their `url` (then the arXiv link) comes first. "" if nothing."""
    if "link" in card:
        return _text(card["link"]).strip()
    url, arxiv, doi = (_text(card.get(k)).strip() for k in ("url", "arxiv", "doi"))
    return url or (f"https://arxiv.org/abs/{arxiv}" if arxiv else f"https://doi.org/{doi}" if doi else "")


def safe_url(url: Any) -> str | None:
    """Only http(s) links: a `javascript:` URL in a card must never become a clickable link."""
    url = str(url or "").strip()
    return url if re.match(r"^https?://[^\s]+$", url, re.IGNORECASE) else None


def source_label(source: dict[str, Any] | None) -> str:
    """One line naming a plugin's code for a table ("" for in-tree models): `dist 1.2 (git 0123abcd…)`."""
    if not source or source.get("kind") != "plugin":
        return ""
    label = f"{source.get('distribution', '?')} {source.get('version', '?')}"
    if source.get("commit"):
        label += f" ({source.get('vcs') or 'vcs'} {str(source['commit'])[:12]})"
    elif source.get("editable"):
        label += " (editable, commit unknown)"
    return label


def one_line(text: Any) -> str:
    """Record text collapsed to one line, so it cannot break out of a table row or a comment line."""
    return " ".join(str(text).split())
