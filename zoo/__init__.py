"""depthbench's model zoo: ResNet, Neural ODE, ANODE, ContinuousNet and In-ResNet on one
continuous-depth engine.

    model = zoo.create_model("continuousnet", input_shape=(1, 28, 28), num_classes=10)
    cheaper = model.manifest(scheme="euler", n_steps=3)   # same parameters, another graph
"""

from zoo import anode, continuousnet, inresnet, neural_ode, resnet  # noqa: F401  (registers the families)
from zoo.basis import DepthVarying, PiecewiseConstant, PiecewiseLinear, make_basis, projection_matrix
from zoo.integrate import ODEBlock, Solver, SolverDidNotConverge, Track, integrate_fixed
from zoo.registry import ModelCard, create_model, list_models, model_card, register_model
from zoo.tableaus import TABLEAUS, ButcherTableau, get_tableau, schemes
from zoo.template import DepthModel, count_params

__all__ = [
    "ButcherTableau", "DepthModel", "DepthVarying", "ModelCard", "ODEBlock", "PiecewiseConstant", "PiecewiseLinear",
    "Solver", "SolverDidNotConverge", "TABLEAUS", "Track", "count_params", "create_model", "get_tableau",
    "integrate_fixed", "list_models", "make_basis", "model_card", "projection_matrix", "register_model", "schemes",
]
