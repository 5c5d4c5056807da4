"""Refinement training with the optimiser state kept (Queiruga et al. 2020: "ContinuousNet can also iteratively
deepen its graph during training").

`DepthModel.refine()` replaces every depth-varying coefficient stack c (one slice per basis function) by R @ c, where
R is the basis' refinement matrix (`DepthBasis.refined()`: for hat functions, old knots keep their values and each new
midpoint knot takes the mean of its two neighbours), so theta(t) is unchanged. The optimiser state of each refined
parameter is carried over with the same map:

- Adam's first moment (and SGD's momentum buffer) is a running mean of the gradient per coefficient, i.e. of the
  gradient's density along depth sampled at the knots; R applied to it gives the same estimate at the new knots, as
  R applied to the coefficients gives the same theta(t). A linear map of a linear running mean is exact for the
  kept knots and the natural estimate at the new ones.
- Adam's second moment is mapped with the same interpolation weights, clamped at 0: it is a running mean of squared
  gradients, which a map with negative weights (an L2 projection, say) could take below 0, where sqrt would fail.
  Adam's step is lr * m / sqrt(v): invariant to a common scale of the gradients, so what must carry over is the
  ratio m / sqrt(v) per coefficient, which interpolating both keeps for the kept knots and keeps smooth in depth
  for the new ones. A fresh Adam instead restarts from zero moments, whose first bias-corrected steps are lr-sized
  sign steps on every coefficient: a jolt mid-schedule that the full-depth arm never gets.
- The step count (Adam's bias correction) is kept, and the optimiser object itself is kept, so its learning-rate
  scheduler continues exactly where it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from zoo.basis import DepthVarying

LINEAR_STATE = ("exp_avg", "momentum_buffer")  # running means of the gradient: mapped like the parameter
SQUARED_STATE = ("exp_avg_sq", "max_exp_avg_sq")  # running means of its square: mapped, clamped at 0
KEPT_STATE = ("step",)  # per-parameter counters


def map_state(state: Mapping[str, Any], matrix: torch.Tensor) -> dict[str, Any]:
    """One parameter's optimiser state mapped by `matrix` (new = matrix @ old along the first axis): the first moment
    linearly, the second moment linearly then clamped at 0, the step count kept. Unknown entries raise ValueError
    (mapping them blindly could silently corrupt the optimiser)."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        if key in KEPT_STATE or value is None:
            out[key] = value
        elif key in LINEAR_STATE:
            out[key] = torch.tensordot(matrix.to(value.dtype), value, dims=1)
        elif key in SQUARED_STATE:
            out[key] = torch.tensordot(matrix.to(value.dtype), value, dims=1).clamp_(min=0.0)
        else:
            raise ValueError(f"cannot carry optimiser state {key!r} across a refinement (known: "
                             f"{', '.join(LINEAR_STATE + SQUARED_STATE + KEPT_STATE)}); use Adam or SGD")
    return out


def refine_keeping_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[tuple[nn.Parameter,
                                                                                             nn.Parameter]]:
    """`model.refine()`, then the optimiser tracks the new parameters with their mapped state (see the module's
    docstring); returns the (old, new) parameter pairs. Parameters that are not refined keep their state as is."""
    refinable = [block.func for block in getattr(model, "blocks", ()) if isinstance(block.func, DepthVarying)]
    before = [(func, dict(func.coefficients.items()), func.basis.refined()[1]) for func in refinable]
    model.refine()
    pairs: list[tuple[nn.Parameter, nn.Parameter]] = []
    replaced: dict[int, nn.Parameter] = {}
    for func, old_coefficients, matrix in before:
        for key, old in old_coefficients.items():
            new = func.coefficients[key]
            replaced[id(old)] = new
            pairs.append((old, new))
            if old in optimizer.state:
                mixing = torch.as_tensor(np.asarray(matrix), dtype=old.dtype, device=old.device)
                optimizer.state[new] = map_state(optimizer.state.pop(old), mixing)
    for group in optimizer.param_groups:
        group["params"] = [replaced.get(id(p), p) for p in group["params"]]
    return pairs


def match_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give every state tensor of a parameter's shape the parameter's memory layout (after `channels_last` re-laid
    the parameters out; the fused and foreach optimisers want matching strides)."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            for key, value in list(state.items()):
                if isinstance(value, torch.Tensor) and value.shape == param.shape and value.stride() != param.stride():
                    state[key] = torch.empty_like(param).copy_(value)
