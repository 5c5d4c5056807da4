"""Neural ODE (Chen et al. 2018): one time-dependent rate function (torchdiffeq's ODEfunc) per
stage, integrated over [0, 1] by an adaptive solver (dopri5, rtol = atol = 1e-3), optionally
with adjoint gradients (O(1) memory in depth). Built by `zoo.template.neural_ode_model`, shared with ANODE.
"""

from __future__ import annotations

from zoo.registry import ModelCard, register_model
from zoo.template import ADAPTIVE_BATCH_NOTE, DepthModel, adaptive_capabilities, neural_ode_model

NEURAL_ODE_CARD = ModelCard(
    name="neural-ode",
    venue="Advances in Neural Information Processing Systems (NeurIPS)",
    licence="MIT",
    capabilities=adaptive_capabilities(),
    family="neural-ode",
    title="Neural Ordinary Differential Equations",
    authors="Ricky T. Q. Chen, Yulia Rubanova, Jesse Bettencourt, David Duvenaud",
    year=2018,
    arxiv="1806.07366",
    bibkey="chen2018neural",
    bibtex="""@inproceedings{chen2018neural,
  title = {Neural Ordinary Differential Equations},
  author = {Chen, Ricky T. Q. and Rubanova, Yulia and Bettencourt, Jesse and Duvenaud, David},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  year = {2018},
  eprint = {1806.07366},
  archivePrefix = {arXiv}
}""",
    variant="torchdiffeq ODE-Net: GN-ReLU-ConcatConv-GN-ReLU-ConcatConv-GN on [0, 1], dopri5 rtol = atol = 1e-3",
    differences="Width chosen so the parameter count matches the ResNet of the same size class (the paper's "
    f"ODE-Net has about a third of the ResNet's parameters); {ADAPTIVE_BATCH_NOTE}.",
)


@register_model(NEURAL_ODE_CARD)
def neural_ode(
    input_shape: tuple[int, ...], num_classes: int, *, width: int = 64, depth: int = 6, stages: int = 1,
    channels: int | None = None, scheme: str = "dopri5", rtol: float = 1e-3, atol: float = 1e-3,
    adjoint: bool = False, backend: str | None = None,
) -> DepthModel:
    return neural_ode_model(input_shape, num_classes, width=width, depth=depth, stages=stages, channels=channels,
                            augment=0, scheme=scheme, rtol=rtol, atol=atol, adjoint=adjoint, backend=backend)
