"""ResNet: a stack of pre-activation residual blocks x + f(x; theta_k).

Built on the continuous-depth engine on purpose: forward Euler with one step per piece of a
piecewise-constant basis on [0, depth] (step size exactly 1.0) *is* the ResNet update, so the
plain ResNet of the leaderboard and its manifestations (another scheme or step count) share one
code path and the benchmark compares like with like.
"""

from __future__ import annotations

from zoo.registry import ModelCard, register_model
from zoo.template import DepthModel, residual_model

RESNET_CARD = ModelCard(
    name="resnet",
    venue="European Conference on Computer Vision (ECCV)",
    licence="MIT",
    capabilities=("nfe", "depth_transfer", "trajectories"),
    family="resnet",
    title="Identity Mappings in Deep Residual Networks",
    authors="Kaiming He, Xiangyu Zhang, Shaoqing Ren, Jian Sun",
    year=2016,
    arxiv="1603.05027",
    bibkey="he2016identity",
    bibtex="""@inproceedings{he2016identity,
  title = {Identity Mappings in Deep Residual Networks},
  author = {He, Kaiming and Zhang, Xiangyu and Ren, Shaoqing and Sun, Jian},
  booktitle = {European Conference on Computer Vision (ECCV)},
  year = {2016},
  eprint = {1603.05027},
  archivePrefix = {arXiv}
}""",
    variant="pre-activation residual stages (GN-ReLU-conv3x3-GN-ReLU-conv3x3), `depth` blocks per stage; "
    "the torchdiffeq MNIST example's ResNet at default size (6 blocks, 64 channels)",
    differences="GroupNorm instead of BatchNorm (per-sample statistics, so outputs do not depend on the batch "
    "and manifestations are comparable); stages joined by a strided convolution instead of a projection block.",
)


@register_model(RESNET_CARD)
def resnet(
    input_shape: tuple[int, ...], num_classes: int, *, width: int = 64, depth: int = 6, stages: int = 1
) -> DepthModel:
    """`depth` residual blocks per stage = Euler with step 1 on a piecewise-constant basis over [0, depth]."""
    return residual_model(input_shape, num_classes, width=width, depth=depth, stages=stages)
