"""Leaderboards from records: `python -m benchmarks.reporting.leaderboard RECORDS_ROOT` regenerates every table.

Public API (the pieces live in `tables`, `render`, `plots` and `page`):

- `load_frame(records_root)`: one pandas row per record;
- `aggregate(frame)`: one table per (task, protocol name, protocol hash), mean/std over seeds of OK records;
- `render_markdown`, `render_csv`, `render_latex`, `render_bibtex`, `render_citation`: text of one table / all;
- `write_leaderboards(records_root, ...)`: every file below, written atomically and deterministically.

Layout written by `write_leaderboards` (out_dir defaults to `leaderboards/`):

    <out_dir>/README.md                         index of all tables
    <out_dir>/index.html                        all tables, sortable, with plots (static, self-contained)
    <out_dir>/references.bib                    model papers + the suite's own entry
    <out_dir>/<protocol>/<task>.md|.csv|.tex    one table per (task, protocol); `<task>-<hash>` for older hashes
    <out_dir>/<protocol>/<task>.claims.csv      claimed vs reproduced, where a model card claims a number
    <out_dir>/<protocol>/plots/<task>_<kind>.png|.svg
    <out_dir>/.generated                        files written last time (those no longer produced are removed),
                                                after the records root they come from (another store is refused)
    CITATION.cff, README.md (between the leaderboard markers: the highest-ranked tier's first table, then links
                                                to the others; `readme_section`)

Records are the only input: a table whose records were deleted disappears with its files, so no number
survives without a record behind it.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
from importlib import metadata
from pathlib import Path

import pandas as pd

from benchmarks.io import write_atomic
from benchmarks.protocols import tier_rank
from benchmarks.reporting.claims import render_claims_csv
from benchmarks.reporting.page import write_page
from benchmarks.reporting.plots import write_plots
from benchmarks.reporting.render import (
    pipeline_check_banner,
    render_bibtex,
    render_citation,
    render_csv,
    render_index,
    render_latex,
    render_markdown,
)
from benchmarks.reporting.tables import TableKey, aggregate, extreme_time, find_repo_root, load_frame, parse_time

__all__ = [
    "aggregate", "load_frame", "render_bibtex", "render_citation", "render_csv", "render_index", "render_latex",
    "render_markdown", "readme_section", "readme_table", "replace_readme_section",
    "repository_url", "suite_version", "write_leaderboards",
]

START, END = "<!-- leaderboard:start -->", "<!-- leaderboard:end -->"
GENERATED_LIST = ".generated"  # the files this writer made last time (others are never deleted)
SOURCE_LINE = "# records: "  # the listing's first line: the records root, relative to the folder


def suite_version() -> str:
    """The depthbench version: installed package metadata, else `pyproject.toml` next to this package."""
    try:
        return metadata.version("depthbench")
    except metadata.PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    if pyproject.exists():
        match = re.search(r'(?m)^version\s*=\s*"([^"]+)"', pyproject.read_text(encoding="utf-8"))
        if match:
            return match.group(1)
    return "0+unknown"


def repository_url(root: Path | str) -> str | None:
    """The public URL of the repository at `root`: pyproject's `[project.urls]` Repository (or Source/Homepage),
    else `git remote get-url origin` as https; None when neither says (CITATION.cff then has no URL)."""
    pyproject = Path(root) / "pyproject.toml"
    if pyproject.exists():
        text = pyproject.read_text(encoding="utf-8")
        section = re.search(r"(?ms)^\[project\.urls\]\s*$(.*?)(?=^\[|\Z)", text)
        for name in ("Repository", "Source", "Homepage"):
            match = section and re.search(rf'(?mi)^"?{name}"?\s*=\s*"([^"]+)"', section.group(1))
            if match:
                return match.group(1)
    try:
        done = subprocess.run(["git", "-C", str(root), "remote", "get-url", "origin"], capture_output=True,
                              text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    url = done.stdout.strip() if done.returncode == 0 else ""
    url = re.sub(r"^(?:ssh://)?git@([^:/]+)[:/]", r"https://\1/", url)  # git@host:owner/repo -> https://host/...
    url = re.sub(r"^(https?://)[^/@]*@", r"\1", url)  # never publish credentials embedded in the remote
    url = url.removesuffix(".git")
    return url if re.match(r"^https?://[^\s]+$", url) else None


def _rel(target: Path, start: Path) -> str:
    """Relative POSIX path from folder `start` to `target` (links inside generated Markdown/HTML)."""
    return os.path.relpath(Path(target).resolve(), Path(start).resolve()).replace(os.sep, "/")


def _link_base(table: pd.DataFrame, folder: Path) -> str:
    rel = _rel(Path(table.attrs.get("repo_root", ".")), folder)
    return "" if rel == "." else rel + "/"


def replace_readme_section(text: str, content: str) -> str | None:
    """`text` with everything between the leaderboard markers replaced; None if the markers are missing."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        return None
    return text[: start + len(START)] + "\n\n" + content.strip("\n") + "\n\n" + text[end:]


def _write(path: Path, text: str, written: list[Path]) -> None:
    # Unchanged files are not rewritten: regenerating touches nothing, so mtimes and git stay quiet.
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        write_atomic(path, text)
    written.append(path)


def _path_part(text: str) -> str:
    """Record text as one path component: no separators, no leading dots (so no `..`, no hidden files)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).lstrip(".") or "_"


def _recency(table: pd.DataFrame) -> tuple[int, float]:
    stamp = parse_time(extreme_time(table.finished, True) or "")
    return max(table.attrs["protocol_versions"] or [0]), stamp.timestamp() if stamp else 0.0


def file_stems(tables: dict[TableKey, pd.DataFrame]) -> dict[TableKey, str]:
    """`<protocol>/<task>` per table; when one (protocol, task) has several hashes, the newest protocol version
    (then the latest run) keeps the plain name and the others get `-<hash>`, so no two tables share a file."""
    groups: dict[tuple[str, str], list[TableKey]] = {}
    for key in tables:
        groups.setdefault((key[0], key[1]), []).append(key)
    stems = {}
    for (task, protocol), keys in groups.items():
        newest_first = sorted(keys, key=lambda k: (*_recency(tables[k]), k[2]), reverse=True)
        for i, key in enumerate(newest_first):
            suffix = "" if i == 0 else f"-{_path_part(key[2])}"
            stems[key] = f"{_path_part(protocol)}/{_path_part(task)}{suffix}"
    return stems


def readme_table(tables: dict[TableKey, pd.DataFrame], stems: dict[TableKey, str]) -> TableKey | None:
    """The one table README shows: the highest-ranked tier's (`Protocol.rank`, lowest first) first task, its
    newest hash (the one whose files have the plain name); None without tables."""
    if not tables:
        return None
    newest = [key for key in tables if stems[key] == f"{_path_part(key[1])}/{_path_part(key[0])}"]
    return min(newest, key=lambda key: (tier_rank(key[1]), list(tables).index(key)))


def readme_section(tables: dict[TableKey, pd.DataFrame], stems: dict[TableKey, str],
                   plots: dict[TableKey, list[Path]], out: Path, folder: Path) -> str:
    """README's leaderboard block: the `readme_table` in full, then a link to every other table under `out`."""
    key = readme_table(tables, stems)
    if key is None:
        return "No leaderboard records yet.\n"
    pngs = [_rel(p, folder) for p in plots[key] if p.suffix == ".png"]
    lines = [render_markdown(tables[key], _link_base(tables[key], folder), heading_level=3, plots=pngs).rstrip("\n"),
             "", f"All tables: [{_rel(out / 'README.md', folder)}]({_rel(out / 'README.md', folder)}) (index), "
             f"[{_rel(out / 'index.html', folder)}]({_rel(out / 'index.html', folder)}) (sortable, with plots)."]
    others = [k for k in tables if k != key]
    if others:
        lines += ["", "Other tables:", ""]
        for other in others:
            path = _rel(out / f"{stems[other]}.md", folder)
            note = " (pipeline check, not for citing)" if pipeline_check_banner(other[1]) else ""
            lines.append(f"- [{other[0]} — {other[1]} (hash {other[2]})]({path}){note}")
    return "\n".join(lines) + "\n"


def write_leaderboards(records_root: Path | str, out_dir: Path | str = "leaderboards",
                       readme: Path | str | None = "README.md",
                       citation: Path | str | None = "CITATION.cff") -> list[Path]:
    """Regenerate every leaderboard file from the records below `records_root`; returns the paths produced.

    Files whose content did not change are left untouched (still listed). Relative paths are taken from the
    current directory, so run it from the repository root (as `depthbench leaderboard` does).
    `readme` is only edited between its leaderboard markers (left alone without them or if it does not exist);
    `readme=None` / `citation=None` skip those files."""
    out = Path(out_dir)
    _refuse_another_stores_folder(out, Path(records_root))
    frame = load_frame(records_root)
    tables = aggregate(frame)
    stems = file_stems(tables)
    version, written = suite_version(), []
    plots: dict[TableKey, list[Path]] = {}
    for key, table in tables.items():
        md_path = out / f"{stems[key]}.md"
        plots[key] = write_plots(frame, table, md_path.parent / "plots", md_path.name.removesuffix(".md"))
        written += plots[key]
        pngs = [_rel(p, md_path.parent) for p in plots[key] if p.suffix == ".png"]
        _write(md_path, render_markdown(table, _link_base(table, md_path.parent), plots=pngs), written)
        _write(out / f"{stems[key]}.csv", render_csv(table), written)
        _write(out / f"{stems[key]}.tex", render_latex(table), written)
        claims = render_claims_csv(table)
        if claims:  # claimed vs reproduced, only where some card claims a number for this table
            _write(out / f"{stems[key]}.claims.csv", claims, written)
    _write(out / "references.bib", render_bibtex(tables.values(), version), written)
    _write(out / "README.md", render_index(tables, stems), written)
    written.append(write_page(tables, plots, out / "index.html"))
    if citation is not None:
        repository = repository_url(find_repo_root(Path(records_root)))
        _write(Path(citation), render_citation(tables.values(), version, repository), written)
    if readme is not None and Path(readme).exists():
        new = replace_readme_section(Path(readme).read_text(encoding="utf-8"),
                                     readme_section(tables, stems, plots, out, Path(readme).resolve().parent))
        if new is not None:
            _write(Path(readme), new, written)
    _remove_stale(out, written, Path(records_root))
    return written


def _listed_source(out: Path) -> Path | None:
    """The records root that `out`'s listing says its files were rendered from (None: no listing, or an older one
    that does not say)."""
    listing = out / GENERATED_LIST
    if not listing.is_file():
        return None
    first = listing.read_text(encoding="utf-8").partition("\n")[0]
    return (out / first.removeprefix(SOURCE_LINE)).resolve() if first.startswith(SOURCE_LINE) else None


def _refuse_another_stores_folder(out: Path, records_root: Path) -> None:
    """Rendering store B where store A's leaderboards are would delete A's tables as stale: refused, named."""
    source = _listed_source(out)
    if source is not None and source != records_root.resolve():
        raise ValueError(f"{out} holds the leaderboards of the records in {source}; rendering {records_root} there "
                         f"would replace them. Choose another folder (--out DIR), or delete {out} first if it is "
                         "no longer wanted")


def _remove_stale(out: Path, written: list[Path], records_root: Path) -> None:
    """Delete files this function generated last time but not now (their records are gone), then record the list,
    headed by the records root they come from (`_refuse_another_stores_folder`).

    Only paths listed in our own listing and inside `out` are ever removed."""
    listing, root = out / GENERATED_LIST, out.resolve()
    now = sorted(_rel(p, out) for p in written if root in Path(p).resolve().parents)
    if listing.exists():
        for line in listing.read_text(encoding="utf-8").splitlines():
            path = (out / line).resolve()
            if line and not line.startswith(SOURCE_LINE) and line not in now and root in path.parents \
                    and path.is_file():
                path.unlink()
    _write(listing, "\n".join([SOURCE_LINE + _rel(records_root, out), *now]) + "\n", [])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("records_root", type=Path)
    parser.add_argument("--out-dir", type=Path, default=Path("leaderboards"))
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    parser.add_argument("--citation", type=Path, default=Path("CITATION.cff"))
    args = parser.parse_args(argv)
    for path in write_leaderboards(args.records_root, args.out_dir, args.readme, args.citation):
        print(path)


if __name__ == "__main__":
    main()
