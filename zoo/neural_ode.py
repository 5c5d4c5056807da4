"""Neural ODE (Chen et al. 2018): one time-dependent rate function (torchdiffeq's ODEfunc) per
stage, integrated over [0, 1] by an adaptive solver (dopri5, rtol = atol = 1e-3), optionally
with adjoint gradients (O(1) memory in depth). Shares `neural_ode_model` with ANODE.
"""

from __future__ import annotations

from torch import nn

from zoo.integrate import ODEBlock, Solver
from zoo.registry import ModelCard, register_model
from zoo.resnet import resnet
from zoo.template import (
    ConvRate,
    DepthModel,
    MLPRate,
    build_model,
    check_common,
    count_params,
    is_image,
    matched_size,
)

NEURAL_ODE_CARD = ModelCard(
    name="neural-ode",
    venue="Advances in Neural Information Processing Systems (NeurIPS)",
    licence="MIT",
    capabilities=("nfe", "depth_transfer", "trajectories", "batch_coupling"),
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
    "ODE-Net has about a third of the ResNet's parameters); adaptive steps depend on the whole batch (torchdiffeq's "
    "error norm), so logits of one sample can change with the rest of the batch.",
)


def neural_ode_model(
    input_shape: tuple[int, ...], num_classes: int, *, width: int, depth: int, stages: int, channels: int | None,
    augment: int, scheme: str, rtol: float, atol: float, adjoint: bool,
) -> DepthModel:
    """ODE-Net stages with `channels` (+ `augment` zero channels); channels=None matches the ResNet's params."""
    check_common(input_shape, num_classes, width, depth, stages)
    if not isinstance(augment, int) or augment < 0:
        raise ValueError(f"augment must be a non-negative int, got {augment!r}")
    solver = Solver(scheme, rtol=rtol, atol=atol, adjoint=adjoint)
    if not solver.adaptive:
        raise ValueError(f"Neural ODEs train with an adaptive scheme; {scheme!r} is fixed-step "
                         "(manifest() a trained model with it instead)")
    image = is_image(input_shape)

    def build(size: int) -> DepthModel:
        def block_for(state: int) -> ODEBlock:
            func: nn.Module = ConvRate(state, time=True, out_norm=True) if image else MLPRate(state, size, time=True)
            return ODEBlock(func, solver, t1=1.0)

        # Images: `size` is the stem width; vectors: the MLP's hidden width (the state is the input itself).
        return build_model(input_shape, num_classes, width=size if image else width, stages=stages,
                           block_for=block_for, augment=augment)

    if channels is None:
        with_same_budget = resnet(input_shape, num_classes, width=width, depth=depth, stages=stages)
        channels = matched_size(build, count_params(with_same_budget), multiples=(8, 2) if image else (1,))
    return build(channels)


@register_model("neural-ode", NEURAL_ODE_CARD)
def neural_ode(
    input_shape: tuple[int, ...], num_classes: int, *, width: int = 64, depth: int = 6, stages: int = 1,
    channels: int | None = None, scheme: str = "dopri5", rtol: float = 1e-3, atol: float = 1e-3,
    adjoint: bool = False,
) -> DepthModel:
    return neural_ode_model(input_shape, num_classes, width=width, depth=depth, stages=stages, channels=channels,
                            augment=0, scheme=scheme, rtol=rtol, atol=atol, adjoint=adjoint)
