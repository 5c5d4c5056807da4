"""Dynamical-systems diagnostics of a trained model's depth trajectories.

- Line-shape score (after Gai & Zhang 2021, arXiv:2102.09235, who find ResNet data tracks "line-shaped"): for each
  sample and stage, the length of the track x(t_0), x(t_1), ..., x(t_n) divided by the distance between its ends,
  sum_k |x_{k+1} - x_k| / |x_n - x_0| >= 1; 1 is a straight line. A polygon through more points of the same curve
  is longer, so every model's track is sampled at the same `points` + 1 equally spaced depths of each stage:
  adaptive solvers' dense output there; fixed-step models' step-boundary states (a ResNet's layer outputs), read
  between boundaries on the straight segment joining them (`zoo.Track.sample`).
- Zhang's line-shape score LSS (seed 002:383-387; `zhang_line_shape_score`): the steps of the track scaled to unit
  length and chained, n / |x~(n) - x~(0)|; only the steps' directions count. The line-shape study uses it.
- Stiffness proxy: the largest singular value of the rate function's Jacobian df/dx at every track point, by
  power iteration on J^T J (forward- and reverse-mode products, no Jacobian is formed). sigma_max bounds the
  spectral radius from above. Models integrate over different depth intervals (a ResNet over [0, depth], a Neural
  ODE over [0, 1]); rescaling each stage's depth to [0, 1] multiplies the rate by its length T, so T * sigma_max
  is the comparable number. h * sigma_max at the trained step h says how far the discretisation is from an ODE
  solver's regime: explicit Runge-Kutta methods are only accurate (and, for eigenvalues near the negative real
  axis, only stable) when h |lambda| is of order 1 or below.

Every rate function of the zoo acts on each sample separately (GroupNorm, no batch statistics), so the batch
Jacobian is block-diagonal and one power iteration with per-sample normalisation estimates every sample's norm.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn

import zoo
from zoo.integrate import Interval, depth_grid


def _norms(x: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of each sample (all dimensions after the first)."""
    return x.flatten(1).norm(dim=1)


def line_shape_score(track: zoo.Track) -> torch.Tensor:
    """Per-sample track length / end-to-end distance (NaN where the track does not move at all)."""
    states = track.states
    length = sum(_norms(b - a) for a, b in zip(states[:-1], states[1:]))
    chord = _norms(states[-1] - states[0])
    return torch.where(chord > 0, length / chord.clamp_min(torch.finfo(chord.dtype).tiny), float("nan"))


def zhang_line_shape_score(track: zoo.Track) -> torch.Tensor:
    """Per-sample line-shape score as Zhang defines it (seed 002:383-387), not the length / chord above: every step
    x(l) - x(l-1) of the track is scaled to unit length and the unit steps are chained, x~(l) = x~(l-1) +
    (x(l) - x(l-1)) / |x(l) - x(l-1)|, then LSS = n / |x~(n) - x~(0)| >= 1, 1 for a straight track. Only the
    directions of the steps count, not their lengths. NaN where a step has zero length (its direction is
    undefined); inf where the unit steps return to the start. Reads the track's own points (a ResNet's layer
    outputs): n is the number of steps."""
    states = track.states
    if len(states) < 2:
        raise ValueError("a line-shape score needs a track of at least two states")
    chained = None
    undefined = torch.zeros(len(states[0]), dtype=torch.bool, device=states[0].device)
    for a, b in zip(states[:-1], states[1:]):
        step = (b - a).flatten(1).double()
        length = step.norm(dim=1, keepdim=True)
        undefined |= length.squeeze(1) == 0
        unit = step / length.clamp_min(torch.finfo(step.dtype).tiny)
        chained = unit if chained is None else chained + unit
    score = (len(states) - 1) / chained.norm(dim=1)
    return torch.where(undefined, torch.full_like(score, float("nan")), score)


@torch.no_grad()  # torch.func's transforms differentiate anyway; this keeps the parameters' graph out
def jacobian_sigma(func: nn.Module, t: float, x: torch.Tensor, step: Interval, *, iterations: int = 20,
                   seed: int = 0) -> torch.Tensor:
    """Per-sample largest singular value of d func(t, x, step) / dx by `iterations` of power iteration."""
    time: float | torch.Tensor = t if step is not None else torch.tensor(t, dtype=x.dtype, device=x.device)

    def rate(z: torch.Tensor) -> torch.Tensor:
        return func(time, z, step)

    generator = torch.Generator(device=x.device).manual_seed(seed)
    v = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    shape = (-1,) + (1,) * (x.dim() - 1)
    v = v / _norms(v).view(shape)
    _, pull_back = torch.func.vjp(rate, x)
    sigma = torch.zeros(len(x), device=x.device, dtype=x.dtype)
    for _ in range(iterations):
        with warnings.catch_warnings():  # torch's first forward-mode call scripts its decompositions (deprecated API)
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
            _, jv = torch.func.jvp(rate, (x,), (v,))
        (jtjv,) = pull_back(jv)
        size = _norms(jtjv)
        sigma = size.sqrt()  # |J^T J v| -> sigma_max^2 for the unit vector v
        v = jtjv / size.clamp_min(torch.finfo(size.dtype).tiny).view(shape)
    return sigma


def trajectory_diagnostics(model: zoo.DepthModel, x: torch.Tensor, *, points: int = 8,
                           iterations: int = 20) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Summary metrics (`line_shape`, `jacobian_sigma_max`, fixed-step models `jacobian_h_sigma_max`) on the
    inputs `x`, and the profile along depth: one entry per track point with the mean (unscaled) sigma over samples.

    The line shape reads every model at `points` + 1 equally spaced depths per stage; the Jacobians are taken on
    the model's own track (fixed steps: at each step's start, where h * sigma refers to that step)."""
    model.eval()
    with torch.no_grad():
        tracks = model.tracks(x, points)
    shapes, sigma_max, h_sigma_max, profile = [], None, None, []
    fixed = all(not block.solver.adaptive for block in model.blocks)
    for stage, (block, track) in enumerate(zip(model.blocks, tracks)):
        shapes.append(line_shape_score(track.sample(depth_grid(block.t0, block.t1, points))))
        for k, step in enumerate(track.steps):
            sigma = jacobian_sigma(block.func, track.times[k], track.states[k], step, iterations=iterations,
                                   seed=k).detach()
            unit_depth = (block.t1 - block.t0) * sigma
            sigma_max = unit_depth if sigma_max is None else torch.maximum(sigma_max, unit_depth)
            h = None if step is None else step[1] - step[0]
            if fixed:
                h_sigma_max = h * sigma if h_sigma_max is None else torch.maximum(h_sigma_max, h * sigma)
            profile.append({"stage": stage, "t": track.times[k], "t0": block.t0, "t1": block.t1, "h": h,
                            "sigma": float(sigma.mean())})
    out = {"line_shape": float(torch.stack(shapes).nanmean())}
    if sigma_max is not None:
        out["jacobian_sigma_max"] = float(sigma_max.mean())
    if h_sigma_max is not None:
        out["jacobian_h_sigma_max"] = float(h_sigma_max.mean())
    profile = [entry for entry in profile if math.isfinite(entry["sigma"])]
    return {key: value for key, value in out.items() if math.isfinite(value)}, profile
