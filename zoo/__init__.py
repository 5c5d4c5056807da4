"""depthbench's model zoo: ResNet, Neural ODE, ANODE, ContinuousNet and In-ResNet on one
continuous-depth engine.

    model = zoo.create_model("continuousnet", input_shape=(1, 28, 28), num_classes=10)
    cheaper = model.manifest(scheme="euler", n_steps=3)   # same parameters, another graph

Every module of this package is imported here (pkgutil), so a new file in `zoo/` that registers a model with
`@register_model` is found without editing this one. What a model must provide is in `zoo/contract.py`.
"""

import importlib
import pkgutil
import warnings

from zoo.basis import DepthVarying, PiecewiseConstant, PiecewiseLinear, make_basis, projection_matrix
from zoo.cards import ModelCard, validate_card
from zoo.contract import CAPABILITIES, ModelOutputError, capabilities, validate_output
from zoo.integrate import ODEBlock, Solver, SolverDidNotConverge, Track, integrate_fixed
from zoo.registry import broken_models, create_model, list_models, model_card, register_model
from zoo.tableaus import TABLEAUS, ButcherTableau, get_tableau, schemes
from zoo.template import DepthModel, count_params


def _import_model_modules() -> None:
    """Import every module of the package (sorted: a stable registration order); one that fails is reported
    as a broken model source instead of breaking the zoo."""
    from zoo.registry import note_broken

    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        try:
            importlib.import_module(f"{__name__}.{module.name}")
        except Exception as error:  # noqa: BLE001 - one bad in-tree file must not hide every other model
            note_broken(f"in-tree module zoo/{module.name}.py", f"{type(error).__name__}: {error}")
            warnings.warn(f"depthbench: zoo/{module.name}.py failed to import, its models are missing: {error}",
                          stacklevel=2)


_import_model_modules()

__all__ = [
    "ButcherTableau", "CAPABILITIES", "DepthModel", "DepthVarying", "ModelCard", "ModelOutputError", "ODEBlock",
    "PiecewiseConstant", "PiecewiseLinear", "Solver", "SolverDidNotConverge", "TABLEAUS", "Track", "broken_models",
    "capabilities", "count_params", "create_model", "get_tableau", "integrate_fixed", "list_models", "make_basis",
    "model_card", "projection_matrix", "register_model", "schemes", "validate_card", "validate_output",
]
