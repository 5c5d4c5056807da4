"""Stiffness-regularised ResNet (after Hudson, Sargsyan, D'Elia & Najm, "Examining stiffness in ResNets through
interpretation as discretized Neural ODEs", a Sandia LDRD talk of September 2022): the zoo's ResNet trained with a
penalty on the stiffness of its underlying ODE.

The penalty (the contract's `regulariser()`) is `weight` x the mean over layers and samples of sigma_max(df/dx),
the largest singular value of the rate function's Jacobian at each layer's input state, an upper bound on the
spectral radius the talk's stiffness proxies are built on. sigma_max comes from a few power iterations on J^T J
(forward- and reverse-mode products, no Jacobian is formed) with the singular vectors held fixed; the last step,
|J^T u| for the left singular vector u, is taken with a graph, so the penalty is differentiable in the layer's
parameters (the state itself is detached: each layer is penalised for its own Jacobian). The penalty is the
engine's (`zoo/penalty.py`), which any fixed-step model can train with.
"""

from __future__ import annotations

from zoo.penalty import StiffnessModel, StiffnessPenalisedBlock, check_penalty, penalise_stiffness, sigma_max
from zoo.registry import ModelCard, register_model
from zoo.template import DepthModel, check_common, residual_model

__all__ = ["STIFFNESS_CARD", "StiffnessModel", "StiffnessPenalisedBlock", "resnet_stiffness", "sigma_max"]

_BIBTEX = """@misc{hudson2022stiffness,
  title = {Examining stiffness in {ResNets} through interpretation as discretized Neural {ODEs}},
  author = {Hudson, Joshua and Sargsyan, Khachik and D'Elia, Marta and Najm, Habib},
  year = {2022},
  howpublished = {Talk, Sandia National Laboratories LDRD project 21-0528, September 19, 2022},
  note = {\\url{https://www.ksargsyan.net/publication/hudson-2023-a/}}
}"""

STIFFNESS_CARD = ModelCard(
    name="resnet-stiffness", family="resnet",
    title="Examining stiffness in ResNets through interpretation as discretized Neural ODEs",
    authors="Joshua Hudson, Khachik Sargsyan, Marta D'Elia, Habib Najm", year=2022, arxiv="",
    url="https://www.ksargsyan.net/publication/hudson-2023-a/", bibkey="hudson2022stiffness", bibtex=_BIBTEX,
    venue="Sandia National Laboratories LDRD project #21-0528 (talk, September 19, 2022)",
    licence="MIT", capabilities=("nfe", "depth_transfer", "trajectories", "regulariser"),
    variant="the zoo's ResNet (GN pre-activation blocks, Euler h = 1) trained with 0.01 x mean sigma_max(df/dx) "
    "over layers, estimated by 3 power iterations on 8 samples of each batch",
    differences="The talk penalises the spectral radius (Gelfand's formula) of each layer's Jacobian with weight "
    "1e-3 on a regression task and measures the eigenvalue stiffness ratio |lambda_1| / |lambda_n|; this variant "
    "penalises the largest singular value (an upper bound on the spectral radius) of a convolutional rate's "
    "Jacobian with a fixed weight that was not tuned, the state detached; the talk has no URL of its own: the link "
    "is the authors' later publication page.",
)


@register_model(STIFFNESS_CARD)
def resnet_stiffness(input_shape: tuple[int, ...], num_classes: int, *, width: int = 64, depth: int = 6,
                     stages: int = 1, stiffness_weight: float = 0.01, samples: int = 8,
                     iterations: int = 3) -> DepthModel:
    """The ResNet (same parameters, same count) with the stiffness penalty as its regulariser."""
    check_common(input_shape, num_classes, width, depth, stages)
    check_penalty(stiffness_weight, samples, iterations)
    model = residual_model(input_shape, num_classes, width=width, depth=depth, stages=stages)
    return penalise_stiffness(model, float(stiffness_weight), samples=samples, iterations=iterations)
