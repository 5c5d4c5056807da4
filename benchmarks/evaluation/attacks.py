"""Robust accuracy that cannot be fooled easily: a per-example worst case over a fixed attack suite, with sanity checks.

One attack with one random start overstates robustness, and adaptive ODE solvers mask gradients (Huang et al. 2022;
Athalye et al. 2018; Carlini et al. 2019). So an example counts as robust at a radius only if it is classified
correctly clean and survives every attack of the suite, `benchmarks/suite.py`'s `ATTACK_SUITE`, run in its order:
attacks on every example first (FGSM, PGD with the protocol's restarts, the few-steps check), then, as AutoAttack
does (attack budget goes where it can change the worst case), each later attack on the survivors of all before it
(APGD-DLR; at the headline radius AutoAttack's standard components APGD-CE, APGD-T and FAB-T; transfer from a
fixed-step RK4 twin and from the same-size ResNet; Square last). Each attack's seed comes from its position in the
suite; its budget from the protocol's `Evaluation`. This module only executes the declaration: one builder per
attack method (`_build`).

Attacks run on the exact inference configuration; a model whose solver uses the adjoint is attacked through a copy
that backpropagates directly through the solver (same solver, same tolerances), and the cosine between the two
input gradients is recorded. Each attack's accuracy is kept too; `SanityCheck`s mark a result unreliable when the
numbers contradict what a correct attack must satisfy. torchattacks' own `AutoAttack` class builds APGD, APGD-T and
FAB with their 10-step defaults; the original AutoAttack runs 100, so the components are built here with the
protocol's `apgd_steps` (100 at the standard tier).

A stochastic model (`stochastic = True`, zoo/contract.py: noise in its eval forward) is attacked with expectation
over transformation (Athalye et al. 2018), as torchattacks' EOTPGD does for PGD but for every attack of the suite:
each attack sees `ExpectationOverDraws`, the mean logits of `EOT_DRAWS` draws (so its gradients are the mean of the
draws' gradients), and each adversarial input is judged on one draw of the model under the attack's fixed seed,
the way the clean accuracy is measured. One draw's gradient is a noisy estimate that overstates robustness.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torchattacks
from torch import nn
from torch.nn import functional as F

import zoo
from benchmarks.evaluation.metrics import batches, forward_all, frozen, is_adaptive, seeded
from benchmarks.protocols import Evaluation
from benchmarks.specs import MetricKey
from benchmarks.suite import (
    ATTACK_SUITE,
    BY_NAME,
    UNBOUNDED_CHECK_SEED,
    Access,
    AttackSpec,
    Radii,
    Scope,
    Source,
    attack_seed,
)

UNBOUNDED_EPS = 1.0  # a radius that reaches every image of [0, 1]: a working attack must break (nearly) everything
UNBOUNDED_MAX_ACCURACY = 0.10
UNBOUNDED_SUBSET = 500  # examples for the unbounded check: enough to tell 10% from 0% (one PGD run, not per eps)
GRADIENT_SUBSET = 128
VANISHING_FRACTION = 0.10  # more examples than this with a zero / non-finite input gradient: gradients are masked
TWIN_SCHEME = "rk4"  # adaptive models are also attacked through a fixed-step twin of this scheme at about their cost
EOT_DRAWS = 8  # draws averaged per attack step on a stochastic model (recorded as the metric `eot_draws`)


class ExpectationOverDraws(nn.Module):
    """Mean logits of `draws` forwards of a stochastic model: what attacks differentiate (EOT). Shares the model's
    parameters; `nfe` is the total of the draws."""

    def __init__(self, model: nn.Module, draws: int) -> None:
        super().__init__()
        if draws < 1:
            raise ValueError(f"draws must be at least 1, got {draws}")
        self.model, self.draws, self._nfe = model, draws, 0
        self.train(model.training)  # torchattacks restores the mode it finds on the module it is given

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total, self._nfe = None, 0
        for _ in range(self.draws):
            out = self.model(x)
            total = out if total is None else total + out
            self._nfe += getattr(self.model, "nfe", 0)
        return total / self.draws

    @property
    def nfe(self) -> int:
        return self._nfe


def attack_view(model: nn.Module, draws: int = EOT_DRAWS) -> nn.Module:
    """What attacks differentiate: the model itself, or for a stochastic one the expectation over `draws` draws."""
    return ExpectationOverDraws(model, draws) if getattr(model, "stochastic", False) is True else model


def _is_black_box(name: str) -> bool:
    """Transfer and gradient-free attacks: what they break beyond the white-box ones measures gradient masking."""
    return BY_NAME[name].access is not Access.WHITE_BOX


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion (sensible at 0% and 100%, unlike the normal one)."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def subset_for_half_width(half_width: float, z: float = 1.959964) -> int:
    """Examples needed so the interval is at most +- half_width at the worst case p = 0.5."""
    return math.ceil((z / half_width) ** 2 / 4)


def beyond_noise(against: int, towards: int, n: int) -> bool:
    """Paired comparison of two attacks on the same examples: `against` examples contradict the expected order,
    `towards` agree with it. A sign test at about 2 sigma, and never fewer than 3 examples or 1% of n, so a random
    start's luck is not mistaken for masking."""
    excess = against - towards
    return excess > max(2.0 * math.sqrt(against + towards), 0.01 * n, 2.0)


@dataclass
class EpsResult:
    """Per-example outcome at one radius. `robust` = clean-correct and survived every attack; `attacks[name]` =
    (indices the attack ran on, survived there) in suite order."""

    eps: float
    robust: torch.Tensor
    attacks: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    own: dict[str, float] = field(default_factory=dict)  # accuracy of each attack on its own / after it (cascade)
    pgd_first: torch.Tensor | None = None  # PGD's first random start alone (for the more-steps check)

    def survived(self, name: str, n: int) -> torch.Tensor:
        """Full-length mask: False where `name` broke the example, True where it failed or did not run."""
        mask = torch.ones(n, dtype=torch.bool, device=self.robust.device)
        index, ok = self.attacks[name]
        mask[index] = ok
        return mask


@dataclass
class SuiteResult:
    n: int
    clean: torch.Tensor
    by_eps: dict[float, EpsResult]
    metrics: dict[str, float]
    flags: list[str]
    seconds: dict[str, float]  # wall time per attack


class _Attacker:
    """Runs attacks in fixed batches on given example indices; inputs are in [0, 1] and the model normalises."""

    def __init__(self, target: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int) -> None:
        self.target, self.x, self.y, self.batch_size, self.seed = target, x, y, batch_size, seed
        self.seconds: dict[str, float] = {}  # wall time per attack, summed over radii (where the budget goes)

    def run(self, name: str, make: Callable[[], torchattacks.Attack], index: torch.Tensor, eps: float,
            seed: int, source: nn.Module | None = None) -> tuple[torch.Tensor, float]:
        """Survival mask on `index` (True = still correct) and the target's mean NFE on the adversarial inputs."""
        survived, nfe = [], 0.0
        if len(index) == 0:
            return torch.zeros(0, dtype=torch.bool, device=self.x.device), 0.0
        started = time.perf_counter()
        attack = make()
        with frozen(source or self.target), torch.enable_grad(), seeded(self.seed + seed):
            for part in batches(len(index), self.batch_size):
                rows = index[part]
                clean = self.x[rows]
                adversarial = attack(clean, self.y[rows]).detach()
                # Only perturbations inside the ball count, whatever an attack returns (FAB minimises the norm).
                adversarial = torch.min(torch.max(adversarial, clean - eps), clean + eps).clamp(0.0, 1.0)
                with torch.no_grad():
                    survived.append(self.target(adversarial).argmax(dim=1) == self.y[rows])
                nfe += getattr(self.target, "nfe", 0) * len(rows) / len(index)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started
        return torch.cat(survived), nfe


def _pgd(model: nn.Module, eps: float, steps: int, ev: Evaluation) -> Callable[[], torchattacks.Attack]:
    return lambda: torchattacks.PGD(model, eps=eps, alpha=ev.pgd_alpha_factor * eps / steps, steps=steps,
                                    random_start=True)


def _targets(attack: torchattacks.Attack, ev: Evaluation) -> torchattacks.Attack:
    """Target classes of APGD-T / FAB-T: AutoAttack's n_classes - 1 at most (torchattacks has no argument for it)."""
    attack.n_target_classes = min(attack.n_target_classes, ev.autoattack_targets)
    return attack


def direct_gradient_model(model: nn.Module) -> nn.Module:
    """The exact inference configuration with gradients by backpropagation through the solver, not the adjoint."""
    if any(getattr(s, "adjoint", False) for s in getattr(model, "solvers", ())):
        return model.manifest(adjoint=False)
    return model


def _input_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    with frozen(model), torch.enable_grad():
        inputs = x.detach().clone().requires_grad_(True)
        logits = model(inputs)
        if loss == "margin":  # the CW margin does not saturate like cross-entropy on confident examples
            other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), -torch.inf).amax(dim=1)
            value = (other - logits.gather(1, y[:, None]).squeeze(1)).sum()
        else:
            value = F.cross_entropy(logits, y, reduction="sum")
        if not value.requires_grad:  # the model cut the input out of the graph
            return torch.zeros_like(inputs)
        (grad,) = torch.autograd.grad(value, inputs, allow_unused=True)
    return torch.zeros_like(inputs) if grad is None else grad


def vanishing_gradient_fraction(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of examples whose margin-loss input gradient is zero or non-finite (gradient attacks are blind)."""
    grad = _input_gradients(model, x, y, "margin").flatten(1)
    dead = ~torch.isfinite(grad).all(dim=1) | (grad.abs().sum(dim=1) == 0)
    return dead.float().mean().item()


def adjoint_gradient_cosine(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float | None:
    """Mean cosine between adjoint and direct input gradients of the CE loss; None if the model uses no adjoint."""
    direct = direct_gradient_model(model)
    if direct is model:
        return None
    a = _input_gradients(model, x, y, "ce").flatten(1)
    b = _input_gradients(direct, x, y, "ce").flatten(1)
    return F.cosine_similarity(a.double(), b.double(), dim=1).mean().item()


def _twin(model: nn.Module, x: torch.Tensor, batch_size: int) -> nn.Module | None:
    """Fixed-step RK4 twin of an adaptive model at about its cost; its gradients are clean and transfer."""
    if not is_adaptive(model):
        return None
    stage_nfe = forward_all(model, x, batch_size)[2]
    cost = zoo.Solver(TWIN_SCHEME, 1).fixed_cost  # function evaluations of one step
    return model.manifest(TWIN_SCHEME, [max(1, round(n / cost)) for n in stage_nfe])


def _build(spec: AttackSpec, model: nn.Module, eps: float, ev: Evaluation, n_classes: int,
           ) -> Callable[[], torchattacks.Attack]:
    """The torchattacks attack of `spec` at `eps` with the protocol's budgets (built lazily: on no survivors, never).
    APGD, APGD-T, FAB and Square reseed torch themselves: they get the attack's own seed from the suite."""
    seed = attack_seed(spec.name)
    if spec.method == "fgsm":
        return lambda: torchattacks.FGSM(model, eps=eps)
    if spec.method == "pgd":
        return _pgd(model, eps, max(1, ev.pgd_steps // spec.steps_divisor), ev)
    if spec.method == "apgd":
        return lambda: torchattacks.APGD(model, eps=eps, steps=ev.apgd_steps, loss=spec.loss, seed=seed,
                                         n_restarts=ev.apgd_restarts if spec.restarts else 1)
    if spec.method == "apgd_t":
        return lambda: _targets(torchattacks.APGDT(model, eps=eps, steps=ev.apgd_steps, n_classes=n_classes,
                                                   seed=seed), ev)
    if spec.method == "fab_t":
        return lambda: _targets(torchattacks.FAB(model, eps=eps, steps=ev.apgd_steps, multi_targeted=True,
                                                 n_classes=n_classes, seed=seed), ev)
    if spec.method == "square":
        return lambda: torchattacks.Square(model, eps=eps, n_queries=ev.square_queries, seed=seed)
    raise ValueError(f"attack {spec.name!r}: no builder for method {spec.method!r}")


def _attack_eps(attacker: _Attacker, model: nn.Module, sources: Mapping[Source, nn.Module | None],
                clean: torch.Tensor, eps: float, headline: bool, ev: Evaluation, n_classes: int,
                ) -> tuple[EpsResult, float]:
    """Every attack of `ATTACK_SUITE` that applies at this radius, in the suite's order. `sources`: the models whose
    gradients the transfer attacks use (None: that attack does not apply). Returns the model's mean NFE on PGD's
    first start (adaptive models: how attacks slow the solver)."""
    n = len(clean)
    everyone = clean.nonzero().squeeze(1)
    result, nfe = EpsResult(eps, clean.clone()), 0.0
    for spec in ATTACK_SUITE:
        source = model if spec.source is Source.MODEL else sources.get(spec.source)
        if source is None or (spec.radii is Radii.HEADLINE and not headline):
            continue
        make = _build(spec, source, eps, ev, n_classes)
        cascade = spec.scope is Scope.SURVIVORS
        index = result.robust.nonzero().squeeze(1) if cascade else everyone
        if spec.method == "pgd" and spec.restarts:
            # Each start runs on the examples no earlier start broke (per-example worst case over starts).
            alive = torch.ones(len(index), dtype=torch.bool, device=clean.device)
            for start in range(ev.pgd_restarts):
                ok, start_nfe = attacker.run(spec.name, make, index[alive], eps, attack_seed(spec.name, start),
                                             source=source)
                if start == 0:
                    result.pgd_first, nfe = ok.clone(), start_nfe
                alive[alive.clone()] = ok
            ok = alive
        else:
            ok, _ = attacker.run(spec.name, make, index, eps, attack_seed(spec.name), source=source)
        result.attacks[spec.name] = (index, ok)
        result.robust[index[~ok]] = False
        # Attacks on everyone: their own accuracy. Cascaded ones: the robust accuracy after them (worst case so far).
        result.own[spec.name] = (result.robust if cascade else result.survived(spec.name, n) & clean).sum().item() / n
    return result, nfe


def attack_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, attack: str, eps: float, ev: Evaluation,
                    batch_size: int, seed: int = 0, eot_draws: int = EOT_DRAWS) -> float:
    """Accuracy under one white-box attack of the suite alone at `eps`, exactly as `robustness_suite` runs it and
    reports it as `<attack>@<eps>`: on the model's exact inference configuration (an adjoint model through its
    direct-gradient copy, a stochastic one through `EOT` draws), its seed from its position in the suite, PGD's
    random starts as the protocol's restarts (per-example worst case); clean errors count as failures."""
    spec = BY_NAME.get(attack)
    if spec is None or spec.access is not Access.WHITE_BOX or spec.source is not Source.MODEL:
        allowed = ", ".join(a.name for a in ATTACK_SUITE if a.access is Access.WHITE_BOX and a.source is Source.MODEL)
        raise ValueError(f"attack_accuracy runs one white-box attack of the suite ({allowed}), got {attack!r}")
    attacked = direct_gradient_model(model)
    outputs = forward_all(model, x, batch_size)[0]
    index = (outputs.argmax(dim=1) == y).nonzero().squeeze(1)
    view = attack_view(attacked, eot_draws)
    attacker = _Attacker(attacked, x, y, batch_size, seed)
    make = _build(spec, view, eps, ev, outputs.shape[1])
    alive = torch.ones(len(index), dtype=torch.bool, device=x.device)
    for start in range(ev.pgd_restarts if spec.method == "pgd" and spec.restarts else 1):
        ok, _ = attacker.run(spec.name, make, index[alive], eps, attack_seed(spec.name, start), source=view)
        alive[alive.clone()] = ok
    return int(alive.sum()) / len(y)


def _sanity_flags(by_eps: dict[float, EpsResult], clean: torch.Tensor, unbounded: float | None,
                  vanishing: float) -> list[str]:
    """Reasons the numbers may overstate robustness (Athalye et al. 2018, sec. 3; Carlini et al. 2019, sec. 5)."""
    n, reasons = len(clean), []

    def broken(mask: torch.Tensor) -> torch.Tensor:
        return clean & ~mask

    ordered = sorted(by_eps.values(), key=lambda r: r.eps)
    for result in ordered:
        fgsm, pgd = broken(result.survived("fgsm", n)), broken(result.survived("pgd", n))
        if beyond_noise(int((fgsm & ~pgd).sum()), int((pgd & ~fgsm).sum()), n):
            reasons.append(str(MetricKey("iterative-weaker-than-single-step", result.eps)))
        if "pgd_fewsteps" in result.attacks:
            long = torch.ones(n, dtype=torch.bool, device=clean.device)
            long[result.attacks["pgd"][0]] = result.pgd_first
            long, short = broken(long), broken(result.survived("pgd_fewsteps", n))
            if beyond_noise(int((short & ~long).sum()), int((long & ~short).sum()), n):
                reasons.append(str(MetricKey("more-steps-weaker", result.eps)))
        black = sum(int((~ok).sum()) for name, (_, ok) in result.attacks.items() if _is_black_box(name))
        if beyond_noise(black, 0, n):
            reasons.append(str(MetricKey("black-box-beats-white-box", result.eps)))
    for smaller, larger in zip(ordered, ordered[1:]):
        if beyond_noise(int((larger.robust & ~smaller.robust).sum()), int((smaller.robust & ~larger.robust).sum()), n):
            reasons.append(str(MetricKey("accuracy-rises-with-eps", larger.eps)))
    if unbounded is not None and unbounded > UNBOUNDED_MAX_ACCURACY:
        reasons.append("unbounded-attack-fails")
    if vanishing > VANISHING_FRACTION:
        reasons.append("vanishing-input-gradients")
    return ["unreliable", *(f"unreliable:{r}" for r in reasons)] if reasons else []


def robustness_suite(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps_grid: Sequence[float],
                     headline_eps: float | None, ev: Evaluation, batch_size: int, seed: int,
                     surrogate: nn.Module | None = None, eot_draws: int = EOT_DRAWS) -> SuiteResult:
    """The whole suite on (x, y): metrics `robust@<eps>` (+ `_ci_low`/`_ci_high`), each attack's `<name>@<eps>`,
    `attack_n`, `nfe_adversarial` (adaptive), `adjoint_grad_cosine` (adjoint models), `eot_draws` (stochastic
    models, attacked through the mean of that many draws; 1 attacks one draw), and the sanity flags.
    `surrogate` (the suite's SURROGATE_MODEL trained on the same task) adds its transfer attack."""
    if headline_eps is not None and not any(math.isclose(headline_eps, e) for e in eps_grid):
        raise ValueError(f"headline eps {headline_eps} is not in the eps grid {tuple(eps_grid)}")
    n = len(y)
    attacked = direct_gradient_model(model)
    outputs = forward_all(model, x, batch_size)[0]
    n_classes = outputs.shape[1]
    clean = outputs.argmax(dim=1) == y
    twin = _twin(model, x, batch_size)
    attacker = _Attacker(attacked, x, y, batch_size, seed)
    view = attack_view(attacked, eot_draws)  # what gradients are taken of (EOT for a stochastic model)
    by_eps, metrics = {}, {"attack_n": float(n)}
    if view is not attacked:
        metrics["eot_draws"] = float(eot_draws)
    for eps in sorted(eps_grid):
        headline = headline_eps is not None and math.isclose(eps, headline_eps)
        result, nfe = _attack_eps(attacker, view, {Source.TWIN: twin, Source.SURROGATE: surrogate}, clean, eps,
                                  headline, ev, n_classes)
        by_eps[eps] = result
        robust = int(result.robust.sum())
        low, high = wilson_interval(robust, n)
        metrics.update({str(MetricKey("robust", eps)): robust / n, str(MetricKey("robust_ci_low", eps)): low,
                        str(MetricKey("robust_ci_high", eps)): high})
        metrics.update({str(MetricKey(name, eps)): value for name, value in result.own.items()})
        if twin is not None and eps == max(eps_grid):
            metrics["nfe_adversarial"] = nfe
    unbounded = None
    try:
        part = torch.arange(min(n, UNBOUNDED_SUBSET), device=x.device)
        unbounded_pgd = _pgd(view, UNBOUNDED_EPS, max(1, ev.pgd_steps // 2), ev)  # eps = 1 needs few steps
        ok, _ = attacker.run("unbounded", unbounded_pgd, part, UNBOUNDED_EPS, UNBOUNDED_CHECK_SEED)
        unbounded = (ok & clean[part]).sum().item() / len(part)
        metrics["unbounded_pgd"] = unbounded
    except zoo.SolverDidNotConverge:
        pass  # far outside the data an adaptive solver may give up: no verdict either way
    m = min(n, GRADIENT_SUBSET)
    vanishing = vanishing_gradient_fraction(view, x[:m], y[:m])
    metrics["vanishing_grad_fraction"] = vanishing
    cosine = adjoint_gradient_cosine(model, x[:m], y[:m])
    if cosine is not None:
        metrics["adjoint_grad_cosine"] = cosine
    return SuiteResult(n, clean, by_eps, metrics, _sanity_flags(by_eps, clean, unbounded, vanishing),
                       attacker.seconds)
