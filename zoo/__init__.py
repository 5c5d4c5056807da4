"""depthbench's model zoo: ResNet, Neural ODE, ANODE, ContinuousNet and In-ResNet on one
continuous-depth engine.

    model = zoo.create_model("continuousnet", input_shape=(1, 28, 28), num_classes=10)
    cheaper = model.manifest(scheme="euler", n_steps=3)   # same parameters, another graph

`zoo/` holds the engine (registry, cards, contract, RK tableaux and integrator, depth bases, layers, the model
template, per-example solving, the stiffness penalty); the model families built on it are the modules of
`zoo/models/`, each declaring its models once with ``@register_model(CARD)`` and presented in the order of
`zoo.models.ORDER`. What a model must provide is in `zoo/contract.py`. The families' old paths (`zoo.resnet`, ...)
still import, with a DeprecationWarning (`zoo/_moved.py`).
"""

from typing import Any

from zoo import _moved
from zoo.basis import DepthVarying, PiecewiseConstant, PiecewiseLinear, make_basis, projection_matrix
from zoo.cards import ModelCard, validate_card
from zoo.contract import CAPABILITIES, ModelOutputError, capabilities, validate_output
from zoo.integrate import ODEBlock, Solver, SolverDidNotConverge, Track, integrate_fixed
from zoo.registry import broken_models, create_model, list_models, model_card, register_model
from zoo.tableaus import TABLEAUS, ButcherTableau, get_tableau, schemes
from zoo.template import DepthModel, count_params

_moved.install()
from zoo import models  # noqa: E402 - the families register themselves on import, on the engine imported above


def __getattr__(name: str) -> Any:
    """`zoo.resnet` and the other families' old attributes: the moved module, with a DeprecationWarning."""
    if name in _moved.MOVED:
        return _moved.old_attribute(name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")


__all__ = [
    "ButcherTableau", "CAPABILITIES", "DepthModel", "DepthVarying", "ModelCard", "ModelOutputError", "ODEBlock",
    "PiecewiseConstant", "PiecewiseLinear", "Solver", "SolverDidNotConverge", "TABLEAUS", "Track", "broken_models",
    "capabilities", "count_params", "create_model", "get_tableau", "integrate_fixed", "list_models", "make_basis",
    "model_card", "models", "projection_matrix", "register_model", "schemes", "validate_card", "validate_output",
]
