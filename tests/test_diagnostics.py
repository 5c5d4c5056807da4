"""Trajectory diagnostics against closed forms: straight and circular tracks, Jacobians of known spectrum."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import zoo
from benchmarks.evaluation.diagnostics import jacobian_sigma, line_shape_score, trajectory_diagnostics
from zoo.integrate import ODEBlock, Solver

F32 = torch.finfo(torch.float32).eps  # the zoo models' dtype: their diagnostics are float32 numbers

pytestmark = pytest.mark.numerics  # float comparisons: run again under each lower CPU capability (cpu_capabilities.py)


class Linear(nn.Module):
    """dx/dt = A x (+ c): the rate functions with known flows and Jacobians."""

    def __init__(self, matrix: torch.Tensor, shift: torch.Tensor | None = None) -> None:
        super().__init__()
        self.matrix = nn.Parameter(matrix)
        self.shift = shift

    def forward(self, t, x, interval=None):
        out = x @ self.matrix.T
        return out if self.shift is None else out + self.shift


class Tanh(nn.Module):
    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, t, x, interval=None):
        return torch.tanh(x @ self.weight.T)


def test_constant_velocity_tracks_are_straight() -> None:
    block = ODEBlock(Linear(torch.zeros(3, 3), shift=torch.tensor([1.0, -2.0, 0.5])), Solver("rk4", 7), t1=2.0)
    track = block.trajectory(torch.randn(5, 3))
    assert len(track.states) == 8 and track.times[0] == 0.0 and track.times[-1] == 2.0
    assert track.steps[0] == (0.0, 2.0 / 7)
    torch.testing.assert_close(line_shape_score(track), torch.ones(5))


@pytest.mark.parametrize("solver", [Solver("rk4", 16), Solver("dopri5", rtol=1e-8, atol=1e-8)])
def test_rotation_tracks_have_the_chord_polygon_length(solver: Solver) -> None:
    """A half turn sampled at n equal angles: polygon length n * 2 sin(pi / 2n) over the diameter 2."""
    rotation = torch.tensor([[0.0, -math.pi], [math.pi, 0.0]], dtype=torch.float64)
    block = ODEBlock(Linear(rotation), solver, t1=1.0)
    track = block.trajectory(torch.randn(4, 2, dtype=torch.float64), points=6)
    n = len(track.states) - 1
    assert n == (16 if solver.n_steps else 6)
    expected = n * math.sin(math.pi / (2 * n))
    torch.testing.assert_close(line_shape_score(track), torch.full((4,), expected, dtype=torch.float64),
                               rtol=1e-4, atol=0)  # RK4 shrinks the circle by ~1e-5; n +- 1 is off by ~1e-3
    end = track.states[0] @ torch.tensor([[-1.0, 0.0], [0.0, -1.0]], dtype=torch.float64)
    torch.testing.assert_close(track.states[-1], end, rtol=0, atol=3e-4)  # a half turn maps x to -x


@pytest.mark.parametrize("solver", [Solver("rk4", 3), Solver("rk4", 60), Solver("rk4", 64),
                                    Solver("dopri5", rtol=1e-8, atol=1e-8)], ids=Solver.describe)
def test_line_shape_reads_every_model_at_the_same_depths(solver: Solver) -> None:
    """The same half turn, however it is discretised, scores the 6-chord polygon with points=6 (it used to score
    the model's own n_steps-gon for fixed steps: 64 sin(pi/128) = 1.5707 against 6 sin(pi/12) = 1.5529)."""
    rotation = torch.tensor([[0.0, -math.pi], [math.pi, 0.0]], dtype=torch.float64)
    model = zoo.DepthModel(nn.Identity(), [ODEBlock(Linear(rotation), solver, t1=1.0)], [], nn.Identity())
    x = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out, _ = trajectory_diagnostics(model, x, points=6, iterations=2)
    if solver.n_steps == 3:  # 6 points on the 3-step track: its vertices and the midpoints of its chords
        track = model.tracks(x)[0]
        assert line_shape_score(track.sample(track.times)).mean().item() == pytest.approx(out["line_shape"])
    else:  # a fine discretisation of the circle: the chord polygon through 6 equal angles
        assert out["line_shape"] == pytest.approx(6 * math.sin(math.pi / 12), rel=1e-3)


def test_track_sample_joins_step_boundaries_by_straight_segments() -> None:
    track = zoo.Track([0.0, 1.0, 3.0], [torch.tensor([0.0]), torch.tensor([2.0]), torch.tensor([6.0])],
                      [(0.0, 1.0), (1.0, 3.0)])
    sampled = track.sample([0.0, 0.5, 1.0, 2.5, 3.0])
    assert [s.item() for s in sampled.states] == [0.0, 1.0, 2.0, 5.0, 6.0]
    assert sampled.states[2] is track.states[1] and sampled.steps == [None] * 4
    with pytest.raises(ValueError, match="outside the track's span"):
        track.sample([3.5])


def test_jacobian_sigma_is_the_largest_singular_value_per_sample() -> None:
    torch.manual_seed(0)
    weight = torch.randn(6, 6, dtype=torch.float64)
    func = Tanh(weight)
    x = torch.randn(5, 6, dtype=torch.float64)
    sigma = jacobian_sigma(func, 0.0, x, (0.0, 1.0), iterations=200)
    for i in range(len(x)):
        jac = torch.func.jacrev(lambda z: func(0.0, z[None])[0])(x[i])
        torch.testing.assert_close(sigma[i], torch.linalg.matrix_norm(jac, ord=2), rtol=1e-6, atol=0)
    assert sigma.std() > 0, "samples have different Jacobians"
    assert not any(p.grad is not None for p in func.parameters())


def test_diagnostics_of_zoo_models() -> None:
    torch.manual_seed(0)
    x = torch.rand(6, 1, 8, 8)
    resnet = zoo.create_model("resnet", input_shape=(1, 8, 8), num_classes=10, width=8, depth=3)
    out, profile = trajectory_diagnostics(resnet, x, iterations=10)
    assert set(out) == {"line_shape", "jacobian_sigma_max", "jacobian_h_sigma_max"}
    assert [(p["stage"], p["t"], p["h"]) for p in profile] == [(0, 0.0, 1.0), (0, 1.0, 1.0), (0, 2.0, 1.0)]
    # max of means <= mean of max, up to the rounding of float32 means over 6 samples
    assert 3 * max(p["sigma"] for p in profile) <= out["jacobian_sigma_max"] * (1 + 16 * F32)
    assert out["line_shape"] >= 1.0 and out["jacobian_sigma_max"] > 0
    # h * sigma with h = 1 against T * sigma with T = depth = 3: the same maximum, scaled by h / T
    assert out["jacobian_h_sigma_max"] == pytest.approx(out["jacobian_sigma_max"] / 3, rel=8 * F32)
    tracks = resnet.tracks(x)
    with torch.no_grad():
        torch.testing.assert_close(resnet.head(tracks[-1].states[-1]), resnet(x))
    cn = zoo.create_model("continuousnet", input_shape=(1, 8, 8), num_classes=10, width=8, depth=4)
    cn_out, _ = trajectory_diagnostics(cn, x, iterations=10)
    step = cn.blocks[0].trajectory(cn.stem(x)).steps[0]
    assert step[1] - step[0] == pytest.approx(4 / 3)  # four hat functions: three elements, one RK4 step each
    assert cn_out["jacobian_h_sigma_max"] == pytest.approx(cn_out["jacobian_sigma_max"] / 3, rel=8 * F32)  # h/T=1/3
    node = zoo.create_model("neural-ode", input_shape=(1, 8, 8), num_classes=10, width=8, depth=3)
    node_out, node_profile = trajectory_diagnostics(node, x, points=4, iterations=10)
    assert set(node_out) == {"line_shape", "jacobian_sigma_max"}  # no fixed step to scale by
    assert [p["t"] for p in node_profile] == [0.0, 0.25, 0.5, 0.75] and node_profile[0]["h"] is None
