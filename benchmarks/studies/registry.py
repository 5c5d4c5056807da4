"""Every study declared once, where it is defined: `@register_study(...)` on its `run` function.

The declaration is the study's name, title, the paper claims it serves (keys of `benchmarks/reporting/paper_claims`),
its default task and seeds, its figure (a `LineFigure` spec: which rows to plot, drawn by
`benchmarks/reporting/studies.py` from the study file alone) and the command options it takes. Everything else is
derived from it: the `depthbench study` choices and help, the title and claims written into each study file (so the
report layer never imports a study), and the docs' list of studies. Adding a study is one new module in this package
(+ its test); `all_studies()` finds it.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RunFunction = Callable[..., Path]
OPTIONS = ("checkpoints", "workers")  # the optional arguments `depthbench study` knows how to pass


@dataclass(frozen=True)
class LineFigure:
    """A line plot of the study's rows: y against x, one line per `series` value, averaged over seeds (the rows whose
    `where` fields match)."""

    x: str
    y: str
    series: str
    xlabel: str
    ylabel: str
    where: dict[str, Any] = field(default_factory=dict)
    logx: bool = False
    logy: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StudySpec:
    name: str
    title: str
    summary: str  # one line: what it compares (the docs' list, `depthbench study --help`)
    claims: tuple[str, ...]  # keys of the paper claims it is evidence for
    task: str  # default task
    seeds: tuple[int, ...]  # default seeds
    run: RunFunction
    figure: LineFigure | None = None
    options: tuple[str, ...] = ()  # of OPTIONS

    def header(self) -> dict[str, Any]:
        """What a study file keeps of its declaration (benchmarks/store/studies.py, `details`)."""
        return {"title": self.title, "claims": list(self.claims),
                "figure_spec": None if self.figure is None else self.figure.to_json()}


STUDIES: dict[str, StudySpec] = {}


def register_study(name: str, *, title: str, summary: str, claims: tuple[str, ...] = (), task: str,
                   seeds: tuple[int, ...] = (0, 1, 2), figure: LineFigure | None = None,
                   options: tuple[str, ...] = ()) -> Callable[[RunFunction], RunFunction]:
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise ValueError(f"study {name!r}: unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(OPTIONS)}")

    def register(run: RunFunction) -> RunFunction:
        if name in STUDIES and STUDIES[name].run.__module__ != run.__module__:
            raise ValueError(f"study {name!r} is declared twice: {STUDIES[name].run.__module__} and {run.__module__}")
        STUDIES[name] = StudySpec(name, title, summary, tuple(claims), task, tuple(seeds), run, figure,
                                  tuple(options))
        return run

    return register


def all_studies() -> dict[str, StudySpec]:
    """Every study of this package, by name (importing each module registers it)."""
    package = importlib.import_module(__package__)
    for module in pkgutil.iter_modules(package.__path__):
        if module.name not in ("registry", "common"):
            importlib.import_module(f"{__package__}.{module.name}")
    return dict(sorted(STUDIES.items()))


def get_study(name: str) -> StudySpec:
    studies = all_studies()
    if name not in studies:
        raise ValueError(f"unknown study {name!r}; known: {', '.join(studies)}")
    return studies[name]
