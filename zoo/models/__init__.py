"""The built-in model families, one module each, built on the engine of `zoo/` (`zoo.template`, `zoo.integrate`, ...).

A family module declares each of its models once: ``@register_model(CARD)`` on its constructor, the model's name
being the card's `name`. `ORDER` lists the modules in the order the families are presented (the tiers' model list,
`benchmarks.protocols.ALL_MODELS`, and so the leaderboards' rows); adding a family is one file here. Every module
of this package is imported, `ORDER` first, then the modules it leaves out, by name: a new family registers its models
after the listed ones until it is given a place in `ORDER` (optional). A module that
fails to import is reported as a broken model source (`zoo.broken_models()`) instead of breaking the zoo.
"""

from __future__ import annotations

import importlib
import pkgutil
import warnings

from zoo.registry import defined_models, note_broken

# The families in presentation order: the papers the benchmark started from, then the other models the seed papers
# compare (issue #14). Within a module, its models come in the order it registers them.
ORDER = (
    "resnet",
    "neural_ode",
    "anode",
    "continuousnet",
    "inresnet",
    "anodev2",
    "pde",
    "tisode",
    "stiffness",
    "noisy",
    "sonode",
)


def family_modules() -> list[str]:
    """The modules of this package: those of `ORDER`, then any other, by name."""
    present = {m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")}
    return [*ORDER, *sorted(present - set(ORDER))]


def builtin_models() -> tuple[str, ...]:
    """Every model the modules of this package registered: family by family in `ORDER` (then unlisted modules),
    each family's in the order it registers them. Installed plugins are not among them."""
    rank = {f"{__name__}.{module}": i for i, module in enumerate(family_modules())}
    defined = [(rank[module], name) for name, module in defined_models().items() if module in rank]
    return tuple(name for _, name in sorted(defined, key=lambda pair: pair[0]))  # stable: registration order kept


def _import_families() -> None:
    for module in family_modules():
        try:
            importlib.import_module(f"{__name__}.{module}")
        except Exception as error:  # noqa: BLE001 - one bad in-tree file must not hide every other model
            note_broken(f"in-tree module zoo/models/{module}.py", f"{type(error).__name__}: {error}")
            warnings.warn(f"depthbench: zoo/models/{module}.py failed to import, its models are missing: {error}",
                          stacklevel=2)


_import_families()

__all__ = ["ORDER", "builtin_models", "family_modules"]
