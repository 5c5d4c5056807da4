"""Augmented Neural ODE (Dupont et al. 2019): a Neural ODE whose state gets `augment` extra zero
channels, so trajectories can go round each other instead of crossing.
"""

from __future__ import annotations

from zoo.registry import ModelCard, register_model
from zoo.template import DepthModel, adaptive_capabilities, neural_ode_model

ANODE_CARD = ModelCard(
    name="anode",
    venue="Advances in Neural Information Processing Systems (NeurIPS)",
    licence="MIT",
    capabilities=adaptive_capabilities(),
    family="anode",
    title="Augmented Neural ODEs",
    authors="Emilien Dupont, Arnaud Doucet, Yee Whye Teh",
    year=2019,
    arxiv="1904.01681",
    bibkey="dupont2019augmented",
    bibtex="""@inproceedings{dupont2019augmented,
  title = {Augmented Neural ODEs},
  author = {Dupont, Emilien and Doucet, Arnaud and Teh, Yee Whye},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  year = {2019},
  eprint = {1904.01681},
  archivePrefix = {arXiv}
}""",
    variant="the neural-ode model with 8 zero channels (2 features for vector inputs) appended to the stem's "
    "feature map, dopri5 rtol = atol = 1e-3",
    differences="Zero channels are added to the shared stem's feature map, not to raw pixels, so NODE and ANODE "
    "differ only in augmentation; the rate function is torchdiffeq's GroupNorm ODEfunc rather than Dupont's "
    "norm-free conv1x1-conv3x3-conv1x1; width matched to the ResNet's parameter count.",
)


@register_model(ANODE_CARD)
def anode(
    input_shape: tuple[int, ...], num_classes: int, *, width: int = 64, depth: int = 6, stages: int = 1,
    channels: int | None = None, augment: int | None = None, scheme: str = "dopri5", rtol: float = 1e-3,
    atol: float = 1e-3, adjoint: bool = False, backend: str | None = None,
) -> DepthModel:
    if augment is None:
        augment = 8 if len(input_shape) == 3 else 2
    return neural_ode_model(input_shape, num_classes, width=width, depth=depth, stages=stages, channels=channels,
                            augment=augment, scheme=scheme, rtol=rtol, atol=atol, adjoint=adjoint, backend=backend)
