"""Refinement with the optimiser state kept (benchmarks/training/refine.py): Adam's moments are mapped exactly like
the parameters, the second moment stays >= 0, and `train(refine_at_epochs=...)` goes through it."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

import zoo
from benchmarks.data.tasks import get_task
from benchmarks.protocols import Recipe
from benchmarks.training import train as train_module
from benchmarks.training.refine import map_state, refine_keeping_state
from benchmarks.training.train import train


def _coarse(elements: int = 2) -> zoo.DepthModel:
    torch.manual_seed(0)
    return zoo.create_model("continuousnet", input_shape=(1, 8, 8), num_classes=10, width=8, depth=4,
                            n_basis=elements + 1, n_steps=elements)


def _adam_steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: int = 3) -> None:
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = torch.rand(16, 1, 8, 8, generator=generator)
        y = torch.randint(0, 10, (16,), generator=generator)
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


def _midpoints(old: torch.Tensor) -> torch.Tensor:
    """The hat basis' refinement written out: old knots kept, a new knot between each pair at their mean."""
    rows = []
    for i in range(len(old)):
        rows.append(old[i])
        if i + 1 < len(old):
            rows.append(0.5 * old[i] + 0.5 * old[i + 1])
    return torch.stack(rows)


def test_adam_moments_are_mapped_exactly_like_the_parameters() -> None:
    model = _coarse()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    _adam_steps(model, optimizer)
    func = model.blocks[0].func
    before = {key: (p.detach().clone(), {k: v.clone() for k, v in optimizer.state[p].items()})
              for key, p in func.coefficients.items()}
    stem = next(model.stem.parameters())
    stem_state = optimizer.state[stem]
    pairs = refine_keeping_state(model, optimizer)

    assert len(pairs) == len(before) and model.solvers[0].n_steps == 4 and func.basis.n_elements == 4
    for key, (old_param, old_state) in before.items():
        new = func.coefficients[key]
        state = optimizer.state[new]
        torch.testing.assert_close(new.detach(), _midpoints(old_param), rtol=0, atol=0)  # the parameter's map ...
        torch.testing.assert_close(state["exp_avg"], _midpoints(old_state["exp_avg"]), rtol=0, atol=0)  # ... is
        torch.testing.assert_close(state["exp_avg_sq"], _midpoints(old_state["exp_avg_sq"]), rtol=0, atol=0)  # the
        assert torch.equal(state["step"], old_state["step"])  # moments' map; bias correction continues
    assert optimizer.state[stem] is stem_state  # what is not refined keeps its state as it was
    tracked = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert sorted(tracked) == sorted(id(p) for p in model.parameters())  # the optimiser tracks the new parameters
    assert not any(id(old) in tracked for old, _ in pairs)

    old_values = {key: p.detach().clone() for key, p in func.coefficients.items()}
    _adam_steps(model, optimizer, steps=1)  # and trains them
    assert all(not torch.equal(func.coefficients[key].detach(), v) for key, v in old_values.items())


def test_map_state_clamps_the_second_moment_and_refuses_what_it_cannot_map() -> None:
    # An L2 projection can have negative weights: the mapped second moment must not go below 0 (sqrt would fail).
    matrix = torch.tensor([[1.5, -0.5], [-0.5, 1.5]])
    state = {"step": torch.tensor(7.0), "exp_avg": torch.tensor([[1.0], [-1.0]]),
             "exp_avg_sq": torch.tensor([[0.0], [4.0]])}
    mapped = map_state(state, matrix)
    assert mapped["step"] is state["step"]
    torch.testing.assert_close(mapped["exp_avg"], torch.tensor([[2.0], [-2.0]]))
    torch.testing.assert_close(mapped["exp_avg_sq"], torch.tensor([[0.0], [6.0]]))  # -2 clamped to 0
    assert map_state({"momentum_buffer": None}, matrix) == {"momentum_buffer": None}  # SGD before its first step
    with pytest.raises(ValueError, match="cannot carry optimiser state 'sum'"):
        map_state({"sum": torch.zeros(2, 1)}, matrix)  # Adagrad's accumulator: not known to be safe to map


def test_train_refines_through_the_state_keeping_map(monkeypatch: pytest.MonkeyPatch) -> None:
    task = get_task("digits")
    data = task.load(limit=100)
    seen = []

    def spy(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list:
        had_state = len(optimizer.state)
        pairs = refine_keeping_state(model, optimizer)
        seen.append((had_state, all(new in optimizer.state for _, new in pairs)))
        return pairs

    monkeypatch.setattr(train_module, "refine_keeping_state", spy)
    model = _coarse(1)
    train(model, data, task, Recipe(epochs=3, batch_size=32, lr=5e-3), device=torch.device("cpu"), seed=0,
          refine_at_epochs=(2, 3))
    assert seen == [(len(list(_coarse(1).parameters())), True)] * 2  # every parameter had state, the new ones too
    assert model.solvers[0].n_steps == 4
