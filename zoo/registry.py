"""The model registry: in-tree families register with a decorator, installed packages through the
`depthbench.models` entry-point group (name = model name, value = a constructor with the zoo's
signature ``(input_shape, num_classes, **overrides) -> nn.Module``, optionally carrying a `card`).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from typing import Any

from torch import nn

ENTRY_POINT_GROUP = "depthbench.models"
Constructor = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelCard:
    """What a leaderboard prints about a model: its paper, and how this variant differs from it."""

    name: str
    family: str
    title: str
    authors: str
    year: int
    arxiv: str
    bibkey: str
    bibtex: str
    variant: str
    differences: str = ""
    params: dict[str, int] = field(default_factory=dict)  # parameter counts at default size, per input shape
    doi: str = ""  # e.g. "10.1000/xyz123", for papers without an arXiv id (or besides one)
    url: str = ""  # any other page of the paper or model (http(s))
    # Numbers the authors report, compared with the reproduced ones on leaderboards (benchmarks/claims.py):
    # {"task", "protocol", "metric", "value", "source"[, "tolerance"]}, values in the records' units.
    claims: tuple[dict[str, Any], ...] = ()

    @property
    def link(self) -> str:
        """Where a leaderboard links the model: its arXiv abstract, else its DOI, else its URL ("" if none)."""
        if self.arxiv:
            return f"https://arxiv.org/abs/{self.arxiv}"
        return f"https://doi.org/{self.doi}" if self.doi else self.url

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "link": self.link}


@dataclass(frozen=True)
class _Entry:
    constructor: Constructor
    card: ModelCard


_REGISTRY: dict[str, _Entry] = {}
_entry_points_loaded = False


def register_model(name: str, card: ModelCard) -> Callable[[Constructor], Constructor]:
    """Decorator: make `constructor` available as `zoo.create_model(name, ...)`."""

    def decorate(constructor: Constructor) -> Constructor:
        if name in _REGISTRY and _REGISTRY[name].constructor is not constructor:
            raise ValueError(f"model name {name!r} is already registered")
        _REGISTRY[name] = _Entry(constructor, replace(card, name=name))
        return constructor

    return decorate


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if point.name in _REGISTRY:
            continue
        try:
            constructor = point.load()
        except Exception as error:  # a broken plugin must not take the zoo down with it
            warnings.warn(f"depthbench model plugin {point.name!r} ({point.value}) failed to load: {error}",
                          stacklevel=2)
            continue
        card = getattr(constructor, "card", None) or ModelCard(
            name=point.name, family="plugin", title="", authors="", year=0, arxiv="", bibkey="", bibtex="",
            variant=f"third-party model from {point.value}")
        if point.name not in _REGISTRY:
            _REGISTRY[point.name] = _Entry(constructor, replace(card, name=point.name))


def list_models() -> list[str]:
    """Sorted names of every registered model (in-tree and installed plugins)."""
    _load_entry_points()
    return sorted(_REGISTRY)


def _entry(name: str) -> _Entry:
    _load_entry_points()
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def model_distribution(name: str) -> dict[str, str] | None:
    """The installed distribution whose `depthbench.models` entry point provides `name`: its name, version and
    entry point; None for a model registered in-tree (or by code that is not an installed distribution)."""
    constructor = _entry(name).constructor
    for point in metadata.entry_points(group=ENTRY_POINT_GROUP, name=name):
        try:
            provides = point.load() is constructor  # an in-tree model of the same name shadows the plugin
        except Exception:  # noqa: BLE001 - a broken plugin provides nothing (its load warned already)
            continue
        if provides and point.dist is not None:
            return {"distribution": point.dist.name, "version": point.dist.version, "entry_point": point.value}
    return None


def model_card(name: str) -> ModelCard:
    return _entry(name).card


def create_model(name: str, *, input_shape: Sequence[int], num_classes: int, **overrides: Any) -> nn.Module:
    """Build a registered model for inputs in [0, 1] of `input_shape`, returning `num_classes` logits."""
    entry = _entry(name)
    signature = inspect.signature(entry.constructor)
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    accepted = [p for p in signature.parameters if p not in ("input_shape", "num_classes")]
    unknown = sorted(set(overrides) - set(accepted))
    if unknown and not accepts_any:
        raise TypeError(f"model {name!r} has no parameter {', '.join(map(repr, unknown))}; "
                        f"accepted: {', '.join(accepted) or 'none'}")
    model = entry.constructor(tuple(input_shape), num_classes, **overrides)
    model.card = entry.card
    model.name = name
    return model
