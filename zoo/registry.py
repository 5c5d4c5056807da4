"""The model registry: in-tree families register with a decorator, ``@register_model(CARD)`` (the model's name is
its card's `name`: declared once), installed packages through the `depthbench.models` entry-point group (name =
model name, value = a constructor with the zoo's signature ``(input_shape, num_classes, **overrides) -> nn.Module``,
optionally carrying a `card`).

Two definitions registering one name with the decorator is an error at once (`ModelNameClash`, naming both).

One broken plugin never takes the zoo down: a failing import, a missing attribute or a bad card is recorded
(`broken_models()`, one warning listing them, `depthbench list`) naming the distribution, the entry point and
the cause. Two sources claiming one name is an error for that name only, naming both sources.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from importlib import metadata
from typing import Any

from torch import nn

from zoo.cards import ModelCard, validate_card

__all__ = ["ModelCard", "ModelNameClash", "broken_models", "create_model", "list_models", "model_card",
           "defined_models", "model_distribution", "model_source", "register_model"]

ENTRY_POINT_GROUP = "depthbench.models"
Constructor = Callable[..., nn.Module]


class ModelNameClash(ValueError):
    """Two definitions (built-in and plugin, two plugins, or two `@register_model`) register the same model name."""


@dataclass(frozen=True)
class _Entry:
    constructor: Constructor
    card: ModelCard
    source: str  # for messages: "built-in zoo.models.resnet.resnet" or "plugin ... (dist x 1.0)"
    carded: bool = True  # False: a plugin gave no card and got a placeholder
    distribution: dict[str, str] | None = None  # plugins: {"distribution", "version", "entry_point"}


@dataclass(frozen=True)
class Broken:
    """A model source that could not be registered, and why."""

    source: str
    cause: str
    name: str | None = None  # the model name the source would have registered (None: unknown, e.g. a zoo module)

    def __str__(self) -> str:
        return f"{self.source}: {self.cause}"


_REGISTRY: dict[str, _Entry] = {}
_CLASHES: dict[str, list[str]] = {}  # name -> every source claiming it
_BROKEN: list[Broken] = []
_DEFINED: dict[str, str] = {}  # name -> the module whose @register_model defined it, in registration order
_entry_points_loaded = False


def _builtin_source(constructor: Constructor) -> str:
    return f"built-in {getattr(constructor, '__module__', '?')}.{getattr(constructor, '__qualname__', '?')}"


def _add(name: str, entry: _Entry) -> None:
    if name in _CLASHES:
        _CLASHES[name].append(entry.source)
    elif name in _REGISTRY and _REGISTRY[name].constructor is not entry.constructor:
        _CLASHES[name] = [_REGISTRY.pop(name).source, entry.source]
    else:
        _REGISTRY[name] = entry


def _as_card(card: Any, name: str) -> ModelCard:
    if isinstance(card, Mapping):
        card = ModelCard.from_dict(card, name=name)
    if not isinstance(card, ModelCard):
        raise TypeError(f"card is a {type(card).__name__}, not a zoo.ModelCard or a dict of its fields")
    card = replace(card, name=name)
    problems = validate_card(card)
    if problems:
        raise ValueError("invalid card: " + "; ".join(problems))
    return card


def _card_name(card: Any) -> str | None:
    name = card.get("name") if isinstance(card, Mapping) else getattr(card, "name", None)
    return name if isinstance(name, str) and name else None


def _definition(constructor: Constructor) -> tuple[str, str]:
    return getattr(constructor, "__module__", "?"), getattr(constructor, "__qualname__", "?")


def register_model(card: ModelCard | Mapping[str, Any] | str,
                   legacy_card: ModelCard | Mapping[str, Any] | None = None) -> Callable[[Constructor], Constructor]:
    """Decorator: make `constructor` available as ``zoo.create_model(card.name, ...)`` (the card must be valid).

    ``@register_model(CARD)`` names the model by its card. The old form ``@register_model("name", CARD)`` still
    works, with a DeprecationWarning, where "name" is the card's name (or the card, a dict, has none). A name that
    another definition already registered raises `ModelNameClash` naming both (the same definition registering
    again, a reloaded module, replaces itself).
    """
    if isinstance(card, str):
        name = card
        if legacy_card is None:
            raise TypeError(f"register_model({name!r}) needs the model's card: @register_model(CARD), the name "
                            "being the card's `name`")
        warnings.warn(f"register_model({name!r}, card) is deprecated: write @register_model(card), the model's name "
                      "is the card's `name`", DeprecationWarning, stacklevel=2)
        named = _card_name(legacy_card)
        if named is not None and named != name:
            raise ValueError(f"register_model({name!r}, card): the card is named {named!r}; write "
                             "@register_model(card) and let the card name the model")
        card = legacy_card
    elif legacy_card is not None:
        raise TypeError("register_model(card) takes the card alone: the model's name is the card's `name`")
    else:
        name = _card_name(card)
        if name is None:
            raise ValueError(f"register_model(card): the card has no `name` (got {type(card).__name__}); the card "
                             "names the model")
    model_card = _as_card(card, name)

    def decorate(constructor: Constructor) -> Constructor:
        entry = _Entry(constructor, model_card, _builtin_source(constructor))
        known = _REGISTRY.get(name)
        if name in _CLASHES or (known is not None and _definition(known.constructor) != _definition(constructor)):
            first = " and by ".join(_CLASHES[name]) if name in _CLASHES else known.source
            raise ModelNameClash(f"model name {name!r} is already registered by {first}; {entry.source} registers "
                                 "it again: rename one of them (the name is the card's `name`)")
        _REGISTRY[name] = entry  # new, or the same definition again (a reloaded module)
        _DEFINED[name] = _definition(constructor)[0]
        return constructor

    return decorate


def defined_models() -> dict[str, str]:
    """name -> the module whose ``@register_model`` defined it, in registration order (plugins' entry points are
    not loaded: only what imported modules declared)."""
    return dict(_DEFINED)


def _placeholder_card(name: str, value: str) -> ModelCard:
    """A plugin without a card can be built and tried, but `depthbench check` fails it until it has one."""
    return ModelCard(name=name, family="plugin", title="", authors="", year=0, arxiv="", bibkey="", bibtex="",
                     variant=f"third-party model from {value}")


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    broken_before = len(_BROKEN)
    for point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(point, "dist", None)
        where = f"distribution {dist.name} {dist.version}" if dist is not None else "unknown distribution"
        source = f"plugin entry point '{point.name} = {point.value}' ({where})"
        dist_info = None if dist is None else {"distribution": dist.name, "version": dist.version,
                                               "entry_point": point.value}
        try:
            constructor = point.load()
            if not callable(constructor):
                raise TypeError(f"{point.value} is a {type(constructor).__name__}, not a callable constructor")
            if point.name in _REGISTRY and _REGISTRY[point.name].constructor is constructor:
                # The plugin module registered itself with @register_model on import: same model, named source.
                _REGISTRY[point.name] = replace(_REGISTRY[point.name], source=source, distribution=dist_info)
                continue
            card = getattr(constructor, "card", None)
            entry = _Entry(constructor, _placeholder_card(point.name, point.value), source, carded=False,
                           distribution=dist_info) if card is None else \
                _Entry(constructor, _as_card(card, point.name), source, distribution=dist_info)
        except Exception as error:  # noqa: BLE001 - a broken plugin must not take the zoo down with it
            _BROKEN.append(Broken(source, f"{type(error).__name__}: {error}", point.name))
            continue
        _add(point.name, entry)
    if len(_BROKEN) > broken_before:
        warnings.warn("depthbench: model plugins not registered:\n" + "\n".join(f"  {b}" for b in _BROKEN),
                      stacklevel=3)


def note_broken(source: str, cause: str) -> None:
    """Record a model source that failed (zoo/__init__ uses it for in-tree modules that fail to import)."""
    _BROKEN.append(Broken(source, cause))


def broken_models() -> list[Broken]:
    """Model sources that could not be registered (failing import, missing attribute, bad card)."""
    _load_entry_points()
    return list(_BROKEN)


def name_clashes() -> dict[str, list[str]]:
    """Names claimed by more than one source -> those sources."""
    _load_entry_points()
    return {name: list(sources) for name, sources in _CLASHES.items()}


def list_models() -> list[str]:
    """Sorted names of every registered model (in-tree and installed plugins; clashing names included)."""
    _load_entry_points()
    return sorted({*_REGISTRY, *_CLASHES})


def _entry(name: str) -> _Entry:
    _load_entry_points()
    if name in _CLASHES:
        raise ModelNameClash(f"model name {name!r} is claimed by {' and by '.join(_CLASHES[name])}; uninstall one "
                             "of them or rename the plugin's entry point")
    if name not in _REGISTRY:
        if any(b.name == name for b in _BROKEN):
            raise KeyError(unknown_model_message([name]))
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _REGISTRY[name]


def unknown_model_message(names: Sequence[str]) -> str:
    """Why `names` are not models: a plugin that failed to register says its cause; others are unknown names."""
    _load_entry_points()
    broken = {b.name: b for b in _BROKEN if b.name in names}
    parts = [f"model {name!r} is installed but could not be registered: {broken[name]}; fix the plugin (`depthbench "
             "list` shows every broken one)" for name in names if name in broken]
    unknown = [name for name in names if name not in broken]
    if unknown:
        parts.append(f"unknown model(s) {', '.join(unknown)}; known models: {', '.join(list_models())}")
    return "; ".join(parts)


def model_distribution(name: str) -> dict[str, str] | None:
    """The installed distribution whose `depthbench.models` entry point provides `name`: its name, version and
    entry point; None for a model registered in-tree, and for a name claimed by several sources."""
    _load_entry_points()
    entry = _REGISTRY.get(name)
    return dict(entry.distribution) if entry is not None and entry.distribution else None


def model_card(name: str) -> ModelCard:
    return _entry(name).card


def has_card(name: str) -> bool:
    """False for a plugin that gave no card (it was registered with a placeholder, which `check` fails)."""
    return _entry(name).carded


def model_source(name: str) -> str:
    """Where `name` comes from: the built-in constructor or the plugin entry point and its distribution."""
    return _entry(name).source


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
    if not isinstance(model, nn.Module):
        raise TypeError(f"model {name!r}: its constructor ({entry.source}) returned a {type(model).__name__}, "
                        "not a torch.nn.Module")
    model.card = entry.card
    model.name = name
    return model
