"""ContinuousNet (Queiruga et al. 2020): parameters as a basis expansion in depth, theta(t) =
sum phi_beta(t) theta_beta, integrated with fixed-step Runge-Kutta schemes; refinable in training
(`model.refine()`) and manifestable with other schemes and step counts after it.
"""

from __future__ import annotations

from zoo.basis import make_basis
from zoo.integrate import Solver
from zoo.layers import rate_factory
from zoo.registry import ModelCard, register_model
from zoo.template import DepthModel, build_model, check_common, continuous_stage, is_image

_BIBTEX = """@article{queiruga2020continuous,
  title = {Continuous-in-Depth Neural Networks},
  author = {Queiruga, Alejandro F. and Erichson, N. Benjamin and Taylor, Dane and Mahoney, Michael W.},
  journal = {arXiv preprint arXiv:2008.02389},
  year = {2020}
}"""

_DIFFERENCES = (
    "GroupNorm in the rate function instead of per-slice BatchNorm (BatchNorm statistics tie the output to the "
    "batch and to the discretisation); stage times on a step boundary read the step's own basis element "
    "(half-open intervals done exactly; the PyTorch reference reads the next slice there); rate functions are "
    "not scaled by a learned skip-init scalar."
)


def _card(name: str, variant: str) -> ModelCard:
    return ModelCard(name=name, family="continuousnet", title="Continuous-in-Depth Neural Networks",
                     authors="Alejandro F. Queiruga, N. Benjamin Erichson, Dane Taylor, Michael W. Mahoney",
                     year=2020, arxiv="2008.02389", bibkey="queiruga2020continuous", bibtex=_BIBTEX,
                     variant=variant, differences=_DIFFERENCES, venue="arXiv preprint arXiv:2008.02389",
                     licence="MIT", capabilities=("nfe", "depth_transfer", "trajectories"))


def continuousnet_model(
    input_shape: tuple[int, ...], num_classes: int, *, width: int, depth: int, stages: int,
    scheme: str, n_steps: int | None, basis: str, n_basis: int | None,
) -> DepthModel:
    """A ContinuousNet stage per resolution: `n_basis` functions on [0, depth], `n_steps` steps of `scheme`.

    Defaults keep the parameter count of a `depth`-block ResNet (n_basis = depth) and align steps with
    basis elements (n_steps = elements), where a Runge-Kutta scheme keeps its order.
    """
    check_common(input_shape, num_classes, width, depth, stages)
    size = depth if n_basis is None else n_basis
    probe = make_basis(basis, size, 0.0, float(depth))  # validates basis name and size
    solver = Solver(scheme, probe.n_elements if n_steps is None else n_steps)
    if solver.adaptive:
        raise ValueError(f"ContinuousNet trains with fixed-step schemes; {scheme!r} is adaptive "
                         "(manifest() a trained model with it instead)")
    image = is_image(input_shape)

    def block_for(state: int):
        return continuous_stage(rate_factory(state, width, image), make_basis(basis, size, 0.0, float(depth)), solver)

    return build_model(input_shape, num_classes, width=width, stages=stages, block_for=block_for)


@register_model(_card(
    "continuousnet", "classic RK4 on a continuous piecewise-linear (hat, 'fem_linear') basis, one step per element"))
def continuousnet(
    input_shape: tuple[int, ...], num_classes: int, *, width: int = 64, depth: int = 6, stages: int = 1,
    scheme: str = "rk4", n_steps: int | None = None, basis: str = "piecewise_linear", n_basis: int | None = None,
) -> DepthModel:
    return continuousnet_model(input_shape, num_classes, width=width, depth=depth, stages=stages, scheme=scheme,
                               n_steps=n_steps, basis=basis, n_basis=n_basis)


@register_model(_card(
    "continuousnet-euler", "forward Euler on the same piecewise-linear basis with two steps per element"))
def continuousnet_euler(
    input_shape: tuple[int, ...], num_classes: int, *, width: int = 64, depth: int = 6, stages: int = 1,
    n_steps: int | None = None, basis: str = "piecewise_linear", n_basis: int | None = None,
) -> DepthModel:
    elements = make_basis(basis, depth if n_basis is None else n_basis, 0.0, float(depth)).n_elements
    return continuousnet_model(input_shape, num_classes, width=width, depth=depth, stages=stages, scheme="euler",
                               n_steps=2 * elements if n_steps is None else n_steps, basis=basis, n_basis=n_basis)
