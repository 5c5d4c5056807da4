"""The model families' old import paths: `zoo.resnet` and the like moved to `zoo.models.resnet` (issue #21).

Importing an old path (``import zoo.resnet``, ``from zoo.resnet import RESNET_CARD``, ``zoo.resnet``) still works and
gives the module itself, `zoo.models.<family>`, with a DeprecationWarning; plugins written against the old layout
keep working until they move. `MOVED` is the list of modules at the move, frozen: a family added later has only
its `zoo.models` path.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from importlib.machinery import ModuleSpec
from types import ModuleType

MOVED = frozenset({"anode", "anodev2", "continuousnet", "inresnet", "neural_ode", "noisy", "pde", "resnet", "sonode",
                   "stiffness", "tisode"})


def warn_moved(name: str, stacklevel: int) -> None:
    warnings.warn(f"zoo.{name} moved to zoo.models.{name}: import it from there (the old path will be removed)",
                  DeprecationWarning, stacklevel=stacklevel + 1)


class MovedFamilies(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `zoo.<family>` for a moved family and loads it as the module `zoo.models.<family>` (same object)."""

    def __init__(self) -> None:
        self._specs: dict[str, ModuleSpec | None] = {}

    def find_spec(self, fullname: str, path: object = None, target: ModuleType | None = None) -> ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != "zoo" or name not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        name = spec.name.rpartition(".")[2]
        warn_moved(name, stacklevel=2)  # importlib's own frames are skipped: this points at the import statement
        module = importlib.import_module(f"zoo.models.{name}")
        self._specs[spec.name] = module.__spec__  # importlib sets the alias's spec on it: put its own back below
        return module

    def exec_module(self, module: ModuleType) -> None:
        own = self._specs.pop(module.__spec__.name, None) if module.__spec__ is not None else None
        if own is not None:
            module.__spec__ = own


def old_attribute(name: str) -> ModuleType:
    """`zoo.<family>` as an attribute of `zoo` (``zoo.resnet``, ``from zoo import resnet``): the moved module."""
    warn_moved(name, stacklevel=3)  # the caller of zoo's __getattr__
    module = importlib.import_module(f"zoo.models.{name}")
    sys.modules.setdefault(f"zoo.{name}", module)
    setattr(sys.modules["zoo"], name, module)  # found from now on (`from zoo import x` looks twice: one warning)
    return module


def install() -> None:
    if not any(isinstance(finder, MovedFamilies) for finder in sys.meta_path):
        sys.meta_path.append(MovedFamilies())
