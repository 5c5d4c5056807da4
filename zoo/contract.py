"""The model contract: what depthbench needs from a model, written once.

**Required** — any `torch.nn.Module` whose constructor is registered (``@zoo.register_model(CARD)`` in a file of
`zoo/models/`, or an entry point in the `depthbench.models` group) can be benchmarked:

- the constructor is called as ``constructor(input_shape, num_classes, **size)``; `size` holds the protocol's
  size class (``width``, ``depth``, ``stages``): accept them (or ``**overrides``) even if you ignore them;
- ``model(x) -> Tensor``: inputs are float32, images (N, C, H, W) in [0, 1] or vectors (N, d); the output is one
  float32 tensor (not a tuple or dict) of shape (N, num_classes): logits for classification, the predicted
  target for regression (the task's `num_classes` is the target's size); finite in train and eval mode. Float32
  because the attacks and metrics combine the output with float32 tensors of their own (AutoAttack's FAB fails on
  float64 logits) and every model is measured at one precision; a model computing in float64 returns
  ``out.float()``. Under the harness's bf16 autocast (training on CUDA) the output is whatever autocast makes it;
- a card (`zoo.ModelCard`, see `zoo/cards.py`) as the constructor's ``card`` attribute or given to
  `register_model`: without a valid card `depthbench check` fails and `depthbench run` refuses the model.

**Optional capabilities** — the harness uses each when present; a metric that needs one the model lacks is
recorded as not applicable ("n/a" in tables), never as a failure. `capabilities(model)` names what a model has:

- ``"nfe"``: an attribute/property ``nfe``, the function evaluations of the last forward pass, an int, or the mean
  over the batch's examples where each example takes its own steps (required of adaptive-step models); with the
  adjoint also ``nfe_backward``;
- ``"depth_transfer"``: ``solvers`` (one `zoo.Solver` per stage), ``blocks`` (stages with ``t0``, ``t1``) and
  ``manifest(scheme=None, n_steps=None, *, rtol=None, atol=None, adjoint=None) -> nn.Module``, the same
  parameters re-discretised (see `zoo.DepthModel.manifest`);
- ``"trajectories"``: ``tracks(x, points=8) -> list[zoo.Track]`` (one per stage) and ``blocks`` whose ``func(t,
  x, interval)`` is the rate function, for the line-shape and stiffness diagnostics;
- ``"regulariser"``: ``regulariser() -> Tensor``, a scalar added to the training loss after each forward (e.g.
  a kinetic-energy or Jacobian penalty computed during that forward);
- ``"batch_coupling"``: ``batch_coupled = True`` declares that one sample's output may depend on the rest of
  its batch (adaptive steps chosen for the whole batch, batch statistics in eval mode); undeclared coupling
  fails `depthbench check`. An adaptive model that solves each example on its own declares nothing
  (``batch_coupled`` False or absent; on the zoo's engine: ``Solver(..., backend="per-example")``, or
  ``backend="per-example"`` to an adaptive family's constructor or ``manifest()``, see `zoo/per_example.py`).
  The harness trusts neither answer: every record measures ``batch_coupling`` (an example's output alone vs inside
  the evaluation batch, in float64) and flags the run ``batch-coupled`` above 1e-6 (`benchmarks.specs`), so a
  per-example model earns an unflagged row by measuring ~1e-16 there, and a coupled one is flagged whatever it
  declares;
- ``"stochastic"``: ``stochastic = True`` declares that the eval forward itself is random (noise injected at test
  time, as in a neural SDE), drawing from torch's global RNG. The harness then seeds that RNG at the start of every
  evaluation phase (the same record twice from the same weights), crafts every attack against the expectation over
  `EOT_DRAWS` draws (benchmarks/evaluation/attacks.py; Athalye et al. 2018) while judging each adversarial input
  on one seeded draw, does not measure batch coupling (noise drawn for a batch depends on its shape) and flags the
  record ``stochastic``. `depthbench check` asks eval forwards to be reproducible under a fixed seed instead of
  identical. A model that draws from a private generator is not reproducible this way: seed it per evaluation
  yourself or draw from the global RNG.

`zoo.DepthModel` (the zoo's template) has every capability but the regulariser (and ``batch_coupling`` only while an
adaptive stage takes torchdiffeq's per-batch steps).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

CAPABILITIES: tuple[str, ...] = ("nfe", "depth_transfer", "trajectories", "regulariser", "batch_coupling",
                                 "stochastic")

# Record metrics that exist only with a capability: without it they are "not applicable", not missing.
CAPABILITY_METRICS: dict[str, tuple[str, ...]] = {
    "nfe": ("nfe",),
    "depth_transfer": ("dt_delta_2x", "dt_delta_half", "dt_fewest_nfe", "dt_speedup", "dt_order"),
    "trajectories": ("line_shape", "jacobian_sigma_max", "jacobian_h_sigma_max"),
}
# Record metrics that a stochastic model cannot have: alone-vs-in-batch differences would be fresh noise, not coupling.
STOCHASTIC_NOT_MEASURED: tuple[str, ...] = ("batch_coupling",)


@runtime_checkable
class Model(Protocol):
    """Required of every model: a batch of inputs in, one tensor of per-sample outputs out."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class CountsNFE(Protocol):
    nfe: int


@runtime_checkable
class DepthTransferable(Protocol):
    solvers: Sequence[Any]
    blocks: Sequence[nn.Module]

    def manifest(self, scheme: str | None = None, n_steps: int | Sequence[int] | None = None, *,
                 rtol: float | None = None, atol: float | None = None, adjoint: bool | None = None) -> nn.Module: ...


@runtime_checkable
class HasTrajectories(Protocol):
    blocks: Sequence[nn.Module]

    def tracks(self, x: torch.Tensor, points: int = 8) -> list[Any]: ...


@runtime_checkable
class HasRegulariser(Protocol):
    def regulariser(self) -> torch.Tensor: ...


def _has(model: object, name: str) -> bool:
    try:
        return hasattr(model, name)
    except Exception:  # noqa: BLE001 - a property that raises (e.g. nfe before any forward) is not a capability
        return False


def capabilities(model: object) -> frozenset[str]:
    """The optional capabilities `model` offers (names from `CAPABILITIES`)."""
    found = set()
    if _has(model, "nfe"):
        found.add("nfe")
    if all(_has(model, a) for a in ("solvers", "blocks")) and callable(getattr(model, "manifest", None)):
        found.add("depth_transfer")
    if _has(model, "blocks") and callable(getattr(model, "tracks", None)):
        found.add("trajectories")
    if callable(getattr(model, "regulariser", None)):
        found.add("regulariser")
    if getattr(model, "batch_coupled", False) is True:
        found.add("batch_coupling")
    if getattr(model, "stochastic", False) is True:
        found.add("stochastic")
    return frozenset(found)


def has(model: object, capability: str) -> bool:
    """Whether `model` offers `capability` (one of `CAPABILITIES`)."""
    if capability not in CAPABILITIES:
        raise ValueError(f"unknown capability {capability!r}; known: {', '.join(CAPABILITIES)}")
    return capability in capabilities(model)


def is_adaptive(model: object) -> bool:
    """Whether any stage of `model` picks its own steps (then it must count NFE)."""
    return any(getattr(solver, "adaptive", False) for solver in getattr(model, "solvers", ()) or ())


def not_applicable(model: object) -> list[str]:
    """Metric names the harness cannot measure on `model`: for lack of a capability, or as it is stochastic."""
    have = capabilities(model)
    missing = {m for cap, metrics in CAPABILITY_METRICS.items() if cap not in have for m in metrics}
    return sorted(missing | (set(STOCHASTIC_NOT_MEASURED) if "stochastic" in have else set()))


class ModelOutputError(ValueError):
    """A model's output breaks the contract (not a tensor, wrong shape or dtype, non-finite values)."""


def validate_output(out: object, batch: int, shape: Sequence[int] | None, *, finite: bool = True,
                    where: str = "evaluation", dtype: torch.dtype | None = None) -> torch.Tensor:
    """`out` if it is a floating tensor of shape (batch, *shape) (finite where asked; of `dtype` where given), else
    ModelOutputError."""
    fix = "the model must return one tensor of shape (batch, num_classes) (see zoo/contract.py)"
    if not isinstance(out, torch.Tensor):
        raise ModelOutputError(f"during {where} the model returned a {type(out).__name__}, not a tensor; {fix}")
    expected = (batch, *shape) if shape is not None else None
    if expected is not None and tuple(out.shape) != expected:
        raise ModelOutputError(f"during {where} the model returned shape {tuple(out.shape)}, expected {expected}; "
                               f"{fix}")
    if not out.is_floating_point():
        raise ModelOutputError(f"during {where} the model returned dtype {out.dtype}, expected a floating dtype")
    if dtype is not None and out.dtype != dtype:
        raise ModelOutputError(f"during {where} the model returned dtype {out.dtype}, expected {dtype}: the attacks "
                               "and metrics work in float32 (zoo/contract.py); return `out.float()`")
    if finite and not bool(torch.isfinite(out).all()):
        bad = int((~torch.isfinite(out)).flatten(1).any(dim=1).sum()) if out.dim() > 1 else int(out.numel())
        raise ModelOutputError(f"during {where} the model returned non-finite values (NaN or inf) for {bad} of "
                               f"{batch} samples")
    return out
