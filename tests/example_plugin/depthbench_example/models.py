"""Two models as a researcher's package would provide them.

`heun_net` is built on depthbench's continuous-depth engine (`zoo`): it gets depth transfer, NFE counts and
trajectory diagnostics for free. `mlp` is a plain `torch.nn.Module`, for models that are not written on the engine.
Each constructor takes `input_shape`, `num_classes` and the tier's size class (`width`, `depth`, `stages`) and
carries a `card`: what the leaderboards print and cite.
"""

from __future__ import annotations

import math

from torch import nn

from zoo import ModelCard
from zoo.models.continuousnet import continuousnet_model


def heun_net(input_shape: tuple[int, ...], num_classes: int, *, width: int = 64, depth: int = 6,
             stages: int = 1) -> nn.Module:
    """ContinuousNet's piecewise-linear depth basis, integrated with Heun's method (one step per element)."""
    return continuousnet_model(input_shape, num_classes, width=width, depth=depth, stages=stages, scheme="heun",
                               n_steps=None, basis="piecewise_linear", n_basis=None)


heun_net.card = ModelCard(
    name="example-heun-net", family="continuousnet", title="Continuous-in-Depth Neural Networks",
    authors="Alejandro F. Queiruga, N. Benjamin Erichson, Dane Taylor, Michael W. Mahoney", year=2020,
    arxiv="2008.02389", bibkey="queiruga2020continuous",
    bibtex="""@article{queiruga2020continuous,
  title = {Continuous-in-Depth Neural Networks},
  author = {Queiruga, Alejandro F. and Erichson, N. Benjamin and Taylor, Dane and Mahoney, Michael W.},
  journal = {arXiv preprint arXiv:2008.02389},
  year = {2020}
}""",
    variant="example plugin: ContinuousNet's hat basis integrated with Heun's method (2nd order) instead of RK4",
    differences="Heun's method instead of the paper's RK4; GroupNorm instead of BatchNorm (depthbench's engine).",
    venue="arXiv preprint arXiv:2008.02389", licence="MIT", capabilities=("nfe", "depth_transfer", "trajectories"),
)


def mlp(input_shape: tuple[int, ...], num_classes: int, *, width: int = 64, depth: int = 6,
        stages: int = 1) -> nn.Module:
    """A plain MLP: `depth` hidden layers of `width` units (stages do not apply to it)."""
    layers: list[nn.Module] = [nn.Flatten()]
    features = math.prod(input_shape)
    for _ in range(depth):
        layers += [nn.Linear(features, width), nn.ReLU()]
        features = width
    return nn.Sequential(*layers, nn.Linear(features, num_classes))


# A textbook model cites its classic reference; papers without an arXiv id are found by DOI (or a URL).
mlp.card = ModelCard(
    name="example-mlp", family="mlp", title="Learning representations by back-propagating errors",
    authors="David E. Rumelhart, Geoffrey E. Hinton, Ronald J. Williams", year=1986, arxiv="",
    doi="10.1038/323533a0", venue="Nature", bibkey="rumelhart1986learning",
    bibtex="""@article{rumelhart1986learning,
  title = {Learning representations by back-propagating errors},
  author = {Rumelhart, David E. and Hinton, Geoffrey E. and Williams, Ronald J.},
  journal = {Nature},
  volume = {323},
  pages = {533--536},
  year = {1986},
  doi = {10.1038/323533a0}
}""",
    variant="example plugin: a plain torch.nn.Module MLP (ReLU, `depth` hidden layers), no continuous-depth engine",
    differences="ReLU units and Adam instead of the paper's sigmoid units and plain gradient descent.",
    licence="MIT",
)
