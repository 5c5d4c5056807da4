"""Where the stores are, and what counts as one.

A depthbench checkout's top level (a `pyproject.toml` of the project `depthbench`) holds the published store,
`results/` (committed), and the user's own, `local/results/` (git-ignored), with its leaderboards in
`local/leaderboards/`. Outside a checkout (depthbench installed from a wheel, run from any directory) there is no
published store to compare with or publish into, and a `./local` would litter whatever directory one stands in: the
user's store then lives in `$XDG_DATA_HOME/depthbench/` (default `~/.local/share/depthbench/`).

A results store is a directory of `<task>/<protocol hash>/<model>/seed<N>.json` records, study files
`<study>/<task>.json` and `benchmarks/suites.json`. `store_problem` tells a directory that cannot be one (a file, a
home directory, `/`) from a store or a directory still to be made, so that a mistyped `--results` is refused before
anything is written, read as "empty", or rendered over another store's leaderboards.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

DEFAULT_RESULTS = Path("results")  # the published store of a checkout (committed)
LOCAL_RESULTS = Path("local/results")  # the user's own store in a checkout (git-ignored)
LOCAL_LEADERBOARDS = Path("local/leaderboards")
LEADERBOARDS_SUFFIX = "-leaderboards"  # `--results DIR` renders into DIR-leaderboards beside it unless --out says


def in_checkout(directory: Path | None = None) -> bool:
    """Whether `directory` (default: the current one) is the top level of a depthbench checkout."""
    pyproject = Path(directory or ".") / "pyproject.toml"
    try:
        text = pyproject.read_text(encoding="utf-8")
    except OSError:
        return False
    return re.search(r"""(?m)^name\s*=\s*["']depthbench["']""", text) is not None


def user_data_dir() -> Path:
    """The user's depthbench directory outside a checkout: $XDG_DATA_HOME/depthbench, else ~/.local/share/depthbench."""
    base = os.environ.get("XDG_DATA_HOME") or "~/.local/share"
    return Path(base).expanduser() / "depthbench"


def local_results() -> Path:
    """The user's own store: `local/results` in a checkout, else `user_data_dir()/results`."""
    return LOCAL_RESULTS if in_checkout() else user_data_dir() / "results"


def leaderboards_for(results: Path) -> Path:
    """Where `depthbench run` renders the store `results` when --out is not given: beside the default local store its
    `leaderboards`, beside any other store DIR its own `DIR-leaderboards`, so that two stores never share (and so
    never delete each other's) rendered files."""
    results = Path(results)
    if results.resolve() == local_results().resolve():
        return results.parent / "leaderboards"
    name = results.resolve().name
    if not name:
        raise ValueError(f"{results} cannot be a results store; give a directory of its own with --results DIR")
    return results.parent / f"{results.name or name}{LEADERBOARDS_SUFFIX}"


def store_problem(path: Path) -> str | None:
    """Why `path` cannot be a results store (None: it is one, is empty, or does not exist yet).

    A store's top level holds only directories (tasks, studies, `benchmarks`), and those only directories and
    `.json` files; hidden entries (probes, locks) are ignored. The first entry that breaks this is named."""
    path = Path(path)
    if not path.exists():
        return None
    if not path.is_dir():
        return f"{path} is a file, not a results store (a directory of <task>/<protocol hash>/<model>/seed<N>.json " \
               "records)"
    try:
        for top in sorted(os.scandir(path), key=lambda e: e.name):
            if top.name.startswith("."):
                continue
            if not top.is_dir():
                return f"{path} is not a results store: it holds the file {top.name}, and a store's top level " \
                       "holds only task and study directories"
            for entry in sorted(os.scandir(top.path), key=lambda e: e.name):
                if not entry.name.startswith(".") and not entry.is_dir() and not entry.name.endswith(".json"):
                    return f"{path} is not a results store: it holds {top.name}/{entry.name}, and a store holds " \
                           "only records, study files and checkpoints below its task directories"
    except OSError as error:
        return f"{path} cannot be read as a results store ({error.strerror or error})"
    return None


def existing_store_problem(path: Path, hint: str = "run `depthbench run` first, or check the path") -> str | None:
    """As `store_problem`, and a store that does not exist is a problem too (for commands that read one)."""
    if not Path(path).exists():
        return f"no results store at {path}: {hint}"
    return store_problem(path)
