"""The work of one run, counted on CPU: how many passes of which kind each phase makes, and what one pass costs.

A GPU run of these small models is mostly bound by kernel launches (one eager operator = one launch, and the
torchdiffeq loop decides every step on the host), partly by arithmetic. So a pass is described by what a GPU's
time depends on, counted exactly on CPU under a dispatch mode: operators launched, FLOPs (matmuls and convolutions,
as `torch.utils.flop_counter` counts them) and bytes written, per example. `benchmarks/execution/cost_model.py`
turns that into seconds.

Where the counts come from:
- unit passes (forward, forward + backward to the input, one training step under the recipe's autocast, the
  float64 copy of the batch-coupling check, each depth-transfer setting, the diagnostics phase) are run on the
  real model at the protocol's size on a few examples;
- the attack suite's passes come from running the real `robustness_suite` with the protocol's settings on a
  stand-in model that no attack can break (so every attack runs its whole budget, the worst case in steps),
  labelled per attack and radius;
- the rest is the code's arithmetic: steps per epoch, batches per split, repeats.

Adaptive models' NFE grows in training; they are counted at initialisation and scaled by `ADAPTIVE_NFE_GROWTH`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

import zoo
from benchmarks.data.tasks import get_task
from benchmarks.evaluation import attacks
from benchmarks.evaluation import depth_transfer as dt
from benchmarks.evaluation.diagnostics import trajectory_diagnostics
from benchmarks.evaluation.metrics import is_adaptive
from benchmarks.evaluation.surrogate import SURROGATE_MODEL
from benchmarks.protocols import Evaluation, Protocol, recipe_for
from benchmarks.suite import ATTACK_SUITE, Scope
from benchmarks.training.train import augment
from zoo.contract import capabilities
from zoo.integrate import replace_solver

# Trained adaptive models take more steps than at initialisation: the reference dopri5 epoch grows from 31 to 42 s.
ADAPTIVE_NFE_GROWTH = 1.35
# Split sizes of the image tasks (benchmarks/data/tasks.py: val = 5,000 of the training set); not loaded for this.
SPLITS = {"fashion-mnist": (55_000, 5_000, 10_000), "mnist": (55_000, 5_000, 10_000),
          "cifar10": (45_000, 5_000, 10_000), "cifar10-jpeg": (45_000, 5_000, 10_000), "digits": (1_197, 200, 400),
          "pendulum": (2_000, 500, 1_000)}
VALIDATION_BATCH = 1000  # benchmarks/training/train.py evaluate()'s default batch
UNIT_BATCH = 2  # examples the unit passes are counted on (ops do not depend on it; FLOPs and bytes are per example)
# What runs on the survivors only: PGD's restarts after the first, and every attack the suite declares so.
CASCADE = ("pgd_restart", *(spec.name for spec in ATTACK_SUITE if spec.scope is Scope.SURVIVORS))


@dataclass(frozen=True)
class Pass:
    """One pass: operators launched, and FLOPs and bytes written per example. `kind` is what the launches cost:
    "forward" (no graph), "gradient" (forward + backward), "train" (a training step: also an optimizer step)."""

    ops: float
    flops: float
    bytes: float
    kind: str = "forward"
    precision: str = "fp32"  # "fp32" | "bf16" | "fp64"
    adaptive: bool = False  # host-synchronised every solver step: launches and arithmetic do not overlap

    def scaled(self, factor: float) -> Pass:
        return dataclasses.replace(self, ops=self.ops * factor, flops=self.flops * factor, bytes=self.bytes * factor)


@dataclass(frozen=True)
class Item:
    """`calls` sequential passes of `unit`, each on `batch` examples, labelled for the report."""

    label: str
    unit: Pass
    calls: float
    batch: float


class _Counting(TorchDispatchMode):
    """Counts the operators that launch work (views launch none), the bytes their outputs hold and their FLOPs by
    torch's own FLOP formulas (`FlopCounterMode` itself cannot watch `torch.autograd.grad`, which the diagnostics
    call)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops, self.bytes, self.flops = 0, 0, 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func._overloadpacket in flop_registry:
            self.flops += flop_registry[func._overloadpacket](*args, **kwargs, out_val=out)
        if not func.is_view and func.__name__.split(".")[0] not in ("detach", "_local_scalar_dense", "lift_fresh"):
            self.ops += 1
            for tensor in (out if isinstance(out, (tuple, list)) else (out,)):
                if isinstance(tensor, torch.Tensor):
                    self.bytes += tensor.numel() * tensor.element_size()
        return out


def count(fn: Callable[[], Any], examples: int, kind: str = "forward", precision: str = "fp32",
          adaptive: bool = False) -> Pass:
    """Run `fn` once and count its operators, FLOPs and bytes written (the latter two per example of `examples`)."""
    counting = _Counting()
    with counting:
        fn()
    return Pass(counting.ops, counting.flops / examples, counting.bytes / examples, kind, precision, adaptive)


def _model(name: str, task: str, protocol: Protocol) -> nn.Module:
    shape = get_task(task).input_shape
    torch.manual_seed(0)
    return zoo.create_model(name, input_shape=shape, num_classes=get_task(task).num_classes,
                            **protocol.model_overrides).eval()


def _inputs(task: str, n: int = UNIT_BATCH) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` inputs of the task's shape (images in [0, 1]) and targets: class labels, or regression targets."""
    spec, generator = get_task(task), torch.Generator().manual_seed(0)
    x = torch.rand(n, *spec.input_shape, generator=generator)
    if spec.kind == "classification":
        return x, torch.arange(n) % spec.num_classes
    return x, torch.rand(n, spec.num_classes, generator=generator)


def _loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out, y) if y.dtype == torch.int64 else F.mse_loss(out, y)


def forward_pass(model: nn.Module, x: torch.Tensor, precision: str = "fp32") -> Pass:
    with torch.no_grad():
        return count(lambda: model(x), len(x), "forward", precision, is_adaptive(model))


def gradient_pass(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Pass:
    """Forward and backward to the input with the parameters frozen: one step of a gradient attack."""
    def step() -> None:
        inputs = x.clone().requires_grad_(True)
        torch.autograd.grad(_loss(model(inputs), y), inputs)

    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        return count(step, len(x), "gradient", "fp32", is_adaptive(model))
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def train_pass(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bf16: bool, augmentation: str) -> Pass:
    """One training step as benchmarks/training/train.py takes it (without the optimizer, whose launches the cost
    model's per-step constant covers): gather, scale, augment, forward + loss (+ regulariser) under autocast,
    backward."""
    regularised = "regulariser" in capabilities(model)
    generator = torch.Generator().manual_seed(0)
    image = x.dim() == 4
    stored = (x * 255).to(torch.uint8) if image else x

    def step() -> None:
        batch = stored[torch.arange(len(x))]
        if image:
            batch = augment(batch.float().div_(255.0), augmentation, generator)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = _loss(model(batch).float(), y)
            if regularised:
                loss = loss + model.regulariser()
        loss.backward()

    model.train()
    model.zero_grad(set_to_none=True)  # the loop's zero_grad(set_to_none=True): no gradient accumulation
    try:
        return count(step, len(x), "train", "bf16" if bf16 else "fp32", is_adaptive(model))
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


class _Unbreakable(nn.Module):
    """Predicts class 0 by a margin no perturbation can close, with a non-zero input gradient: every attack of the
    suite runs its whole budget on every example (the most steps it can take). Logs each call's attack label."""

    def __init__(self, stochastic: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.label: tuple[str, float] | None = None
        self.calls: Counter = Counter()
        if stochastic:
            self.stochastic = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls[(*(self.label or ("clean", 0.0)), torch.is_grad_enabled())] += 1
        logits = torch.zeros(len(x), 10, device=x.device)
        logits[:, 0] = 10.0
        return logits + 1e-3 * torch.tanh(x.flatten(1).mean(1, keepdim=True)) * (1 + self.weight)


@contextmanager
def _labelled(*models: _Unbreakable) -> Iterator[None]:
    """Tell the stand-ins which attack (and radius) is running, through the suite's one entry point per attack."""
    original, vanishing = attacks._Attacker.run, attacks.vanishing_gradient_fraction

    def run(self: Any, name: str, make: Any, index: Any, eps: float, *args: Any, **kwargs: Any) -> Any:
        for model in models:
            model.label = (name, eps)
        return original(self, name, make, index, eps, *args, **kwargs)

    def gradient_check(*args: Any, **kwargs: Any) -> Any:
        for model in models:
            model.label = ("clean", 0.0)  # the input-gradient checks after the attacks
        return vanishing(*args, **kwargs)

    attacks._Attacker.run, attacks.vanishing_gradient_fraction = run, gradient_check
    try:
        yield
    finally:
        attacks._Attacker.run, attacks.vanishing_gradient_fraction = original, vanishing


@functools.lru_cache(maxsize=16)
def attack_calls(ev: Evaluation, eps_grid: tuple[float, ...], headline: float | None,
                 stochastic: bool) -> dict[tuple[str, float, bool], int]:
    """Sequential model calls per batch of the attack suite, by (attack, radius, with gradient), when no attack
    breaks anything; the transfer source's calls are under "transfer_resnet". PGD's restarts after the first (which
    run only on the survivors of the first) are "pgd_restart"."""
    target, source = _Unbreakable(stochastic), _Unbreakable(False)
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with _labelled(target, source), torch.random.fork_rng():
        attacks.robustness_suite(target, x, torch.zeros(2, dtype=torch.long), eps_grid=eps_grid,
                                 headline_eps=headline, ev=ev, batch_size=ev.eval_batch, seed=0,
                                 surrogate=source)
    calls: dict[tuple[str, float, bool], int] = {}
    for (name, eps, grad), n in (target.calls + source.calls).items():
        if name == "pgd" and ev.pgd_restarts > 1:  # each start: `pgd_steps` gradient calls and one judging forward
            first = n // ev.pgd_restarts
            calls[("pgd", eps, grad)] = first
            calls[("pgd_restart", eps, grad)] = n - first
        else:
            calls[(name, eps, grad)] = n
    return calls


# Fraction of the attacked examples still robust after PGD's first start, by the radius' rank in the task's grid
# (smallest first): what the cascaded attacks run on. Normally trained networks keep little at these radii; these
# shares size the arithmetic, while launches are counted as if at least one example survives at every radius.
SURVIVING = (0.20, 0.05, 0.01)


def _batches(n: float, batch: int) -> int:
    return max(1, math.ceil(n / batch))


def attack_items(model: nn.Module, twin: nn.Module | None, resnet: nn.Module, task: str, protocol: Protocol,
                 units: dict[str, Pass]) -> list[Item]:
    ev, spec = protocol.evaluation, get_task(task)
    n = min(ev.attack_subset, SPLITS[task][2])
    stochastic = getattr(model, "stochastic", False) is True
    calls = attack_calls(ev, tuple(spec.attack_eps), spec.headline_eps, stochastic)
    rank = {eps: i for i, eps in enumerate(sorted(spec.attack_eps))}
    x, y = _inputs(task)
    resnet_grad = gradient_pass(resnet, x, y)
    twin_grad = gradient_pass(twin, x, y) if twin is not None else None
    items = []
    for (name, eps, grad), per_batch in sorted(calls.items(), key=str):
        if name == "transfer_resnet":
            unit = resnet_grad if grad else units["forward"]
        elif name == "transfer" and twin_grad is not None:
            unit = twin_grad if grad else units["forward"]
        else:
            unit = units["gradient"] if grad else units["forward"]
        if name == "unbounded":
            examples = min(n, attacks.UNBOUNDED_SUBSET)
        elif name == "clean" and grad:  # the vanishing-gradient and adjoint checks
            examples = min(n, attacks.GRADIENT_SUBSET)
        elif name in CASCADE:
            examples = n * SURVIVING[min(rank.get(eps, 0), len(SURVIVING) - 1)]
        else:
            examples = n
        batches = _batches(examples, ev.eval_batch)
        items.append(Item(f"{name}@{eps:.3g}", unit, per_batch * batches, examples / batches))
    if twin is not None:  # the twin transfer: PGD on the twin, on the survivors, at every radius
        for eps in spec.attack_eps:
            examples = n * SURVIVING[min(rank[eps], len(SURVIVING) - 1)]
            batches = _batches(examples, ev.eval_batch)
            items.append(Item(f"transfer@{eps:.3g}", twin_grad, ev.pgd_steps * batches, examples / batches))
    return items


def _twin(model: nn.Module, x: torch.Tensor) -> nn.Module | None:
    """The fixed-step RK4 twin the suite attacks an adaptive model through (attacks._twin), at its NFE."""
    if not is_adaptive(model):
        return None
    with torch.no_grad():
        model(x)
    cost = zoo.Solver(attacks.TWIN_SCHEME, 1).fixed_cost
    return model.manifest(attacks.TWIN_SCHEME, [max(1, round(b.nfe * ADAPTIVE_NFE_GROWTH / cost))
                                                for b in model.blocks])


def transfer_items(model: nn.Module, task: str, protocol: Protocol) -> list[Item]:
    """The depth-transfer grid (the real `_grid` of the model's solvers) and its reference solve."""
    ev = protocol.evaluation
    x, _ = _inputs(task, 1)
    trained = tuple(model.solvers)
    configs = dt._grid(trained, ev.transfer_factors, ev.transfer_schemes, ev.transfer_tolerances)
    if trained[0].adaptive:
        reference = dt._setting(trained, scheme=dt.ADAPTIVE_SCHEME, rtol=dt.REFERENCE_TOLERANCE,
                                atol=dt.REFERENCE_TOLERANCE)
    else:
        finest = [max(c[i].n_steps for c in configs) for i in range(len(trained))]
        reference = tuple(replace_solver(s, scheme=dt.REFERENCE_SCHEME, n_steps=2 * k) for s, k in zip(trained, finest))
    n = min(ev.transfer_subset, SPLITS[task][2])
    batches = _batches(n, ev.eval_batch)
    repeats = 1 + max(3, ev.latency_repeats // 4)  # warm-up + timed bs-1 forwards per setting
    items = []
    for config in [reference, *configs]:
        unit = forward_pass(dt._build(model, config), x)
        if config[0].adaptive:
            unit = unit.scaled(ADAPTIVE_NFE_GROWTH)
        name = config[0].scheme + ("" if config[0].adaptive else f"x{config[0].n_steps}")
        items.append(Item(f"{'reference ' if config is reference else ''}{name}", unit, batches, n / batches))
        if config is not reference:
            items.append(Item(f"latency {name}", unit, repeats, 1))
    return items


def run_items(name: str, task: str, protocol: Protocol) -> dict[str, list[Item]]:
    """Every pass of one run of `name` on `task` under `protocol`, by phase (the record's phase names, plus
    "surrogate": the transfer ResNet's training, paid once per task and seed by the first model that needs it)."""
    recipe, ev = recipe_for(protocol, task), protocol.evaluation
    if task not in SPLITS:
        raise ValueError(f"the cost model knows no split sizes of task {task!r}: add them to work.SPLITS")
    n_train, n_val, n_test = SPLITS[task]
    model, resnet = _model(name, task, protocol), _model(SURROGATE_MODEL, task, protocol)
    x, y = _inputs(task)
    have = capabilities(model)
    adaptive = is_adaptive(model)
    growth = ADAPTIVE_NFE_GROWTH if adaptive else 1.0
    units = {"forward": forward_pass(model, x).scaled(growth), "gradient": gradient_pass(model, x, y).scaled(growth),
             "train": train_pass(model, x, y, recipe.amp_bf16, recipe.augment).scaled(growth)}
    one = forward_pass(model, x[:1]).scaled(growth)
    twin = _twin(model, x)
    steps = recipe.epochs * max(1, n_train // recipe.batch_size)
    val_batches = _batches(n_val, VALIDATION_BATCH)
    phases: dict[str, list[Item]] = {
        "train": [Item("training step", units["train"], steps, recipe.batch_size),
                  Item("validation", units["forward"], recipe.epochs * val_batches, n_val / val_batches)]}
    test_batches = _batches(n_test, ev.eval_batch)
    clean = [Item("test split", units["forward"], test_batches, n_test / test_batches), Item("FLOP count", one, 1, 1)]
    if "stochastic" not in have:
        double = dataclasses.replace(units["forward"], precision="fp64")
        clean += [Item("batch coupling (float64)", double, 1, min(ev.eval_batch, n_test)),
                  Item("batch coupling alone (float64)", double, 4, 1)]
    phases["clean"] = clean
    phases["latency"] = [Item("batch 1", one, 3 + ev.latency_repeats, 1),
                         Item(f"batch {ev.throughput_batch}", units["forward"], 3 + ev.latency_repeats,
                              ev.throughput_batch)]
    if name != SURROGATE_MODEL and get_task(task).kind == "classification":
        phases["surrogate"] = [Item("resnet training step", train_pass(resnet, x, y, recipe.amp_bf16, recipe.augment),
                                    steps, recipe.batch_size),
                               Item("resnet validation", forward_pass(resnet, x), recipe.epochs * val_batches,
                                    n_val / val_batches)]
    if get_task(task).kind == "classification" and get_task(task).attack_eps:  # phases._attacked
        phases["attacks"] = attack_items(model, twin, resnet, task, protocol, units)
        n_attack = min(ev.attack_subset, n_test)
        noise_batches = _batches(n_attack, ev.eval_batch)
        phases["noise"] = [Item("noisy test", units["forward"], len(get_task(task).noise_sigmas) * noise_batches,
                                n_attack / noise_batches)]
    if "trajectories" in have:
        probe = x[:UNIT_BATCH]
        unit = count(lambda: trajectory_diagnostics(model, probe, points=ev.track_points,
                                                    iterations=ev.jacobian_iterations), len(probe))
        phases["diagnostics"] = [Item("tracks and Jacobian power iterations", unit.scaled(growth), 1,
                                      min(ev.diagnostic_subset, n_test))]
    if "depth_transfer" in have:
        phases["depth_transfer"] = transfer_items(model, task, protocol)
    return phases
