"""The numbers a benchmark record holds: accuracy, cost, robustness and depth transfer.

Everything here is deterministic for fixed arguments (explicit seeds, explicit generators, fixed batching) so two
runs of the same checkpoint give the same record. Evaluation is batched and runs in the model's own dtype; only the
attacks build autograd graphs. Metric names are documented in `METRIC_DOCS`, which the leaderboard shows.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import torchattacks
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

import zoo
from benchmarks import timing
from benchmarks.diagnostics import DIAGNOSTIC_DOCS
from zoo.contract import validate_output

BATCH_COUPLING_TOLERANCE = 1e-6  # float64 kernels' batch-size noise is ~1e-15; adaptive coupling ~rtol

METRIC_DOCS: dict[str, str] = {
    "accuracy": "test accuracy (fraction correct, 0..1) of the trained model",
    "val_accuracy": "validation accuracy (fraction correct) used for model selection",
    "test_mse": "test mean squared error (regression tasks), averaged over examples and output components",
    "val_mse": "validation mean squared error (regression tasks)",
    "params": "number of trainable parameters (shared parameters counted once)",
    "flops": "floating-point operations of one forward pass of one sample (torch FlopCounterMode; adaptive: as run)",
    "nfe": "rate-function evaluations of one forward pass, summed over stages (adaptive: mean over every "
    "evaluation batch of the test set, weighted by batch size; it depends on eval_batch)",
    "eval_batch": "evaluation batch size: examples per forward pass for every clean, noise, attack and depth-transfer "
    "number (adaptive solvers' outputs and NFE depend on it, see batch_coupling)",
    "batch_coupling": "max |output of an example evaluated alone - inside the evaluation batch| / (1 + max |output|) "
    f"over the first 4 test examples, in float64; above {BATCH_COUPLING_TOLERANCE:g} the run is flagged "
    "batch-coupled (adaptive solvers: step sizes are chosen for the whole batch)",
    "nfe_backward": "rate-function evaluations of the adjoint backward pass per training step (0 without adjoint)",
    "nfe_adversarial": "adaptive models: mean forward NFE on PGD examples at the largest eps (attacks can slow "
    "adaptive solvers down)",
    "train_seconds": "wall-clock training time in seconds, including the per-epoch validation pass",
    "epoch_seconds": "median wall-clock seconds per training epoch, training steps only",
    "peak_train_memory_mb": "peak GPU memory allocated during training, MiB (CUDA runs only)",
    "epochs": "number of training epochs run",
    "latency_ms": "median batch-1 inference latency in milliseconds (synchronised, after warmup)",
    "latency_iqr_ms": "interquartile range of the batch-1 latency in milliseconds",
    "throughput": "inference samples per second at the benchmark batch size",
    "robust@<eps>": "HEADLINE robust accuracy: fraction of the attacked examples (the protocol's attack_subset "
    "first test examples) classified correctly clean AND under every attack of the suite (per-example worst case, "
    "benchmarks/attacks.py): FGSM, PGD-CE with the protocol's steps and random starts, APGD with the DLR margin "
    "loss, at the task's headline eps AutoAttack's standard components (APGD-CE, APGD-T, FAB-T, Square with the "
    "protocol's query budget), and for adaptive solvers PGD transferred from a fixed-step RK4 twin; L-inf radius "
    "eps in [0, 1] pixel space; attacks through the exact inference solver, backpropagating directly (never the "
    "adjoint). Rows flagged `unreliable` failed a sanity check (see the flags)",
    "robust_ci_low@<eps>": "lower end of the 95% Wilson interval of robust@<eps> from attack_n examples",
    "robust_ci_high@<eps>": "upper end of the 95% Wilson interval of robust@<eps> from attack_n examples",
    "attack_n": "number of test examples attacked",
    "fgsm@<eps>": "accuracy under FGSM alone (torchattacks, L-inf eps in [0, 1] pixel space); clean errors count "
    "as failures",
    "pgd@<eps>": "accuracy under cross-entropy PGD alone (torchattacks; steps of 2.5 eps / steps, projected around "
    "the clean image, clamped to [0, 1]); per-example worst case over the protocol's random starts",
    "pgd_fewsteps@<eps>": "headline eps: accuracy under PGD's first random start with a fifth of the steps "
    "(sanity check: more steps must not do worse)",
    "apgd_dlr@<eps>": "robust accuracy after APGD with the DLR margin loss, run on the examples that survived "
    "FGSM and PGD (cumulative: the worst case over it and every earlier attack)",
    "apgd_ce@<eps>": "headline eps: robust accuracy after AutoAttack's APGD-CE (cumulative, as apgd_dlr)",
    "apgd_t@<eps>": "headline eps: robust accuracy after AutoAttack's targeted APGD-DLR (cumulative)",
    "fab_t@<eps>": "headline eps: robust accuracy after AutoAttack's targeted FAB (cumulative)",
    "transfer@<eps>": "adaptive models: robust accuracy after PGD crafted on a fixed-step RK4 twin of the same "
    "weights, run on the survivors of every white-box attack (cumulative)",
    "transfer_resnet@<eps>": "robust accuracy after PGD crafted on the zoo's resnet of the same task, protocol size, "
    "recipe and seed (the resnet row's model; not run on the resnet itself), run on the survivors of every "
    "white-box attack (cumulative)",
    "square@<eps>": "headline eps: robust accuracy after the gradient-free Square attack (the protocol's "
    "square_queries queries per example), run last on the survivors (cumulative; equals robust@<eps>)",
    "unbounded_pgd": "accuracy under PGD at eps = 1 (every image reachable); above 10% marks the row unreliable",
    "vanishing_grad_fraction": "fraction of examples with a zero or non-finite margin-loss input gradient; above "
    "10% marks the row unreliable",
    "adjoint_grad_cosine": "models trained with the adjoint: mean cosine similarity of adjoint and direct "
    "(backpropagated through the solver) input gradients",
    "noise@<sigma>": "accuracy on clamp(x + sigma * N(0, 1), 0, 1) with a fixed noise seed",
    "dt_delta_2x": "depth transfer, trained scheme with 2x the steps: accuracy change in percentage points "
    "(regression: mse(2x) / mse(trained) - 1); absent for adaptive models",
    "dt_delta_half": "as dt_delta_2x with exactly half the steps in every stage (absent when some stage's trained "
    "step count is odd: factors giving no whole number of steps are skipped, never rounded)",
    "dt_fewest_nfe": "smallest NFE of any manifestation within 0.5 accuracy points of the trained one "
    "(regression: mse <= 1.1 x trained)",
    "dt_speedup": "batch-1 latency of the trained model / latency of the dt_fewest_nfe manifestation",
    "dt_order": "least-squares slope of log(error) vs log(dt) for the trained scheme at dt <= trained dt, error "
    "measured against a fine reference solve (about the scheme's order when the model is a smooth ODE)",
    **DIAGNOSTIC_DOCS,
}

Kind = Literal["classification", "regression"]


def eps_key(value: float) -> str:
    """Short, stable name of a radius: 3 significant digits, no trailing zeros (0.1 -> '0.1', 8/255 -> '0.0314')."""
    return f"{float(value):.3g}"


def parameter_count(model: nn.Module) -> int:
    return zoo.count_params(model)


def _batches(n: int, batch_size: int) -> Iterator[slice]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def _forward(model: nn.Module, x: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, float, list[float]]:
    """Outputs on all of x, with the mean NFE per forward and per stage over the batches (weighted by batch size,
    i.e. the NFE an example sees on average; sums of integers divided once, so fixed-step counts stay exact)."""
    outputs, nfe, stages = [], 0, None
    with torch.no_grad():
        for part in _batches(len(x), batch_size):
            # A tuple or a wrong batch size is never a result; non-finite values are judged by the caller.
            outputs.append(validate_output(model(x[part]), part.stop - part.start, None, finite=False))
            size = part.stop - part.start
            nfe += getattr(model, "nfe", 0) * size
            per_stage = [block.nfe * size for block in getattr(model, "blocks", [])]
            stages = per_stage if stages is None else [a + b for a, b in zip(stages, per_stage)]
    return torch.cat(outputs), nfe / len(x), [n / len(x) for n in stages or []]


def _accuracy_of(outputs: torch.Tensor, y: torch.Tensor) -> float:
    return (outputs.argmax(dim=1) == y).sum().item() / len(y)


def _mse_of(outputs: torch.Tensor, y: torch.Tensor) -> float:
    return F.mse_loss(outputs.double(), y.double()).item()


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, kind: Kind, batch_size: int,
             output_shape: Sequence[int] | None = None) -> tuple[float, float | None]:
    """(accuracy or MSE, mean NFE per forward over the batches of `batch_size`) on all of x; NFE None for a model
    that does not count its function evaluations. Adaptive solvers' NFE varies from batch to batch, so it is
    measured on every batch that is scored rather than on one."""
    outputs, nfe, _ = _forward(model, x, batch_size)
    outputs = validate_output(outputs, len(x), output_shape)
    score = _accuracy_of(outputs, y) if kind == "classification" else _mse_of(outputs, y)
    return score, nfe if hasattr(model, "nfe") else None


def batch_coupling(model: nn.Module, x: torch.Tensor, *, batch_size: int, examples: int = 4) -> float:
    """How much the outputs of the first `examples` inputs change when each is evaluated alone instead of inside
    the evaluation batch `x[:batch_size]`: max |difference| / (1 + max |output|).

    Adaptive solvers couple the examples of a batch (torchdiffeq's error norm, hence every step size, is taken
    over the whole batch), so their outputs depend on the batch size and on the batch's other members. Measured on
    a float64 copy of the model so that float32 kernels' batch-size-dependent rounding is not mistaken for
    coupling; per-sample models then differ by ~1e-15. NaN if the copy's solver does not converge."""
    twin = copy.deepcopy(model).double()
    batch = x[:batch_size].double()
    count = min(examples, len(batch))
    try:
        with torch.no_grad():
            inside = twin(batch)[:count]
            alone = torch.cat([twin(batch[i:i + 1]) for i in range(count)])
    except zoo.SolverDidNotConverge:
        return math.nan
    return ((inside - alone).abs().max() / (1.0 + inside.abs().max())).item()


def _checked(model: nn.Module, x: torch.Tensor, batch_size: int, output_shape: Sequence[int] | None) -> torch.Tensor:
    """Outputs of the trained model, which must be finite and (given `output_shape`) of the task's shape: an
    argmax over NaN or over one logit too many is a number, but not an accuracy."""
    return validate_output(_forward(model, x, batch_size)[0], len(x), output_shape)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int,
             output_shape: Sequence[int] | None = None) -> float:
    return _accuracy_of(_checked(model, x, batch_size, output_shape), y)


def mse(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int,
        output_shape: Sequence[int] | None = None) -> float:
    return _mse_of(_checked(model, x, batch_size, output_shape), y)


def count_flops(model: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one forward of the first sample of `example` (matmuls and convolutions, as torch counts them)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(example[:1])
    return int(counter.get_total_flops())


def _is_adaptive(model: nn.Module) -> bool:
    return any(solver.adaptive for solver in getattr(model, "solvers", ()))


@contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """Attacks need d loss / d input only: skipping parameter gradients saves about a third of each backward."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed the global RNG (torchattacks draws PGD's random start from it) without disturbing the caller's stream."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _attack_grid(
    source: nn.Module, target: nn.Module, x: torch.Tensor, y: torch.Tensor, clean: torch.Tensor, *,
    eps_grid: Sequence[float], pgd_steps: int, pgd_alpha_factor: float, batch_size: int, seed: int,
) -> tuple[dict[str, torch.Tensor], float]:
    """Per-example robust correctness of `target` under attacks crafted on `source`, and the target's mean NFE on
    PGD examples at the largest eps. An example counts as robust only if it was also classified correctly clean."""
    correct: dict[str, torch.Tensor] = {}
    nfe_at_largest = 0.0
    with _frozen(source), torch.enable_grad():
        for eps in eps_grid:
            key = eps_key(eps)
            attacks = {
                "fgsm": torchattacks.FGSM(source, eps=eps),
                "pgd": torchattacks.PGD(source, eps=eps, alpha=pgd_alpha_factor * eps / pgd_steps, steps=pgd_steps,
                                        random_start=True),
            }
            for name, attack in attacks.items():
                hits, nfe = [], 0.0
                with _seeded(seed):
                    for part in _batches(len(x), batch_size):
                        adversarial = attack(x[part], y[part])
                        with torch.no_grad():
                            hits.append(target(adversarial).argmax(dim=1) == y[part])
                        nfe += getattr(target, "nfe", 0) * (part.stop - part.start) / len(x)
                correct[f"{name}@{key}"] = torch.cat(hits) & clean
                if name == "pgd" and eps == max(eps_grid):
                    nfe_at_largest = nfe
    return correct, nfe_at_largest


def _fraction(mask: torch.Tensor) -> float:
    return mask.sum().item() / len(mask)


def robustness(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps_grid: Sequence[float], pgd_steps: int = 10,
    pgd_alpha_factor: float = 2.5, batch_size: int, seed: int,
) -> dict[str, float]:
    """FGSM and PGD accuracy at every eps (inputs in [0, 1]; the model normalises internally)."""
    clean = _forward(model, x, batch_size)[0].argmax(dim=1) == y
    correct, _ = _attack_grid(model, model, x, y, clean, eps_grid=eps_grid, pgd_steps=pgd_steps,
                              pgd_alpha_factor=pgd_alpha_factor, batch_size=batch_size, seed=seed)
    return {key: _fraction(mask) for key, mask in correct.items()}


def noise_robustness(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, sigmas: Sequence[float], batch_size: int, seed: int,
) -> dict[str, float]:
    """Accuracy under Gaussian pixel noise; the same noise draw is scaled for every sigma (common random numbers)."""
    results = {}
    for sigma in sigmas:
        generator = torch.Generator(device=x.device).manual_seed(seed)
        correct = 0
        with torch.no_grad():
            for part in _batches(len(x), batch_size):
                noise = torch.randn(x[part].shape, generator=generator, device=x.device, dtype=x.dtype)
                noisy = (x[part] + sigma * noise).clamp(0.0, 1.0)
                correct += (model(noisy).argmax(dim=1) == y[part]).sum().item()
        results[f"noise@{eps_key(sigma)}"] = correct / len(x)
    return results


class _Config(NamedTuple):
    """One manifestation: a fixed-step scheme with steps per stage, or an adaptive scheme with tolerances."""

    scheme: str
    steps: tuple[int, ...] | None = None
    rtol: float | None = None
    atol: float | None = None

    def build(self, model: nn.Module) -> nn.Module:
        if self.steps is None:
            return model.manifest(self.scheme, rtol=self.rtol, atol=self.atol)
        return model.manifest(self.scheme, list(self.steps))


def _trained_config(model: nn.Module) -> _Config:
    first = model.solvers[0]  # zoo families use one scheme (and tolerance) for every stage
    if first.adaptive:
        return _Config(first.scheme, None, first.rtol, first.atol)
    return _Config(first.scheme, tuple(s.n_steps for s in model.solvers))


def _scaled(config: _Config, factor: float, scheme: str | None = None) -> _Config | None:
    """`config` with `factor` times its steps in every stage, or None where that is no whole number of steps.

    Rounding would evaluate another factor than the one a result is labelled with (half of 3 steps is not 2)."""
    steps = [n * factor for n in config.steps]
    if any(k < 1 - 1e-9 or abs(k - round(k)) > 1e-9 for k in steps):
        return None
    return _Config(scheme or config.scheme, tuple(round(k) for k in steps))


def _grid(trained: _Config, factors: Sequence[float], schemes: Sequence[str],
          tolerances: Sequence[float], n_stages: int) -> list[_Config]:
    configs = {trained: None}  # an ordered set: the trained configuration first, every configuration once
    if trained.steps is None:
        configs.update({_Config("dopri5", None, tol, tol): None for tol in tolerances})
        configs.update({_Config(s, (n,) * n_stages): None for s in schemes for n in (1, 2, 4, 8)})
    else:
        for scheme in dict.fromkeys([*schemes, trained.scheme]):  # dt_delta_* and dt_order need the trained scheme
            configs.update({c: None for f in factors if (c := _scaled(trained, f, scheme)) is not None})
    return list(configs)


def depth_transfer(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, kind: Kind,
    factors: Sequence[float] = (0.25, 0.5, 1, 2, 4), schemes: Sequence[str] = ("euler", "midpoint", "rk4", "rk4_38"),
    tolerances: Sequence[float] = (1e-1, 1e-2, 1e-3, 1e-4), batch_size: int,
    latency_example: torch.Tensor | None = None, device: torch.device | None = None, latency_repeats: int = 5,
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Evaluate the trained parameters under other schemes, step counts and tolerances ("manifestations").

    A model that learned an ODE keeps its accuracy when re-discretised and its error falls at the scheme's order;
    one that learned a particular discrete map does not. Fixed-step models are evaluated at each of `factors` times
    their trained steps where that is a whole number of steps in every stage (other factors are skipped, not
    rounded); each entry's `factor` is its steps / the trained steps (None against an adaptive trained model).
    Returns the grid entries and the dt_* summary metrics.
    """
    if kind not in ("classification", "regression"):
        raise ValueError(f"kind must be 'classification' or 'regression', got {kind!r}")
    device = torch.device(device) if device is not None else x.device
    trained = _trained_config(model)
    configs = _grid(trained, factors, schemes, tolerances, len(model.blocks))
    if trained.steps is None:
        reference_config = _Config("dopri5", None, 1e-6, 1e-6)
    else:
        finest = [max(c.steps[i] for c in configs) for i in range(len(model.blocks))]
        reference_config = _Config("rk4", tuple(2 * n for n in finest))
    try:
        reference = _forward(reference_config.build(model), x, batch_size)[0]
    except zoo.SolverDidNotConverge:
        reference = None  # errors stay unknown; the entries themselves are still worth having
    metric = "accuracy" if kind == "classification" else "mse"
    one = latency_example[:1].to(device) if latency_example is not None else None
    block = model.blocks[0]
    entries = []
    for config in configs:
        manifest = model if config == trained else config.build(model)
        entry: dict[str, Any] = {
            "scheme": config.scheme, "n_steps": config.steps[0] if config.steps else None,
            "dt": (block.t1 - block.t0) / config.steps[0] if config.steps else None, "rtol": config.rtol,
            "factor": config.steps[0] / trained.steps[0] if config.steps and trained.steps else None,
            "nfe": None, metric: None, "error": None, "latency_ms": None, "trained": config == trained,
        }
        entries.append(entry)
        try:
            outputs, nfe, _ = _forward(manifest, x, batch_size)
        except zoo.SolverDidNotConverge as error:
            entry["failed"] = f"solver did not converge: {error}"
            continue
        entry["nfe"] = round(nfe) if config.steps else nfe
        if not torch.isfinite(outputs).all():
            entry["failed"] = "non-finite outputs"
            continue
        entry[metric] = _accuracy_of(outputs, y) if metric == "accuracy" else _mse_of(outputs, y)
        if reference is not None:
            entry["error"] = (outputs - reference).abs().flatten(1).amax(dim=1).double().mean().item()
        if latency_example is not None:
            with torch.no_grad():
                stats = timing.measure(lambda m=manifest: m(one), device=device, warmup=1, repeats=latency_repeats)
            entry["latency_ms"] = stats["median_ms"]
    return entries, _summary(entries, configs, trained, metric)


def _summary(entries: list[dict[str, Any]], configs: list[_Config], trained: _Config, metric: str) -> dict[str, float]:
    by_config = dict(zip(configs, entries))
    base = by_config[trained]
    summary: dict[str, float] = {}
    if "failed" in base:
        return summary
    ok = [e for e in entries if "failed" not in e]
    if trained.steps is not None:
        for name, factor in (("dt_delta_2x", 2.0), ("dt_delta_half", 0.5)):
            other = by_config.get(_scaled(trained, factor))
            if other is None or other is base or "failed" in other:
                continue
            if metric == "accuracy":
                summary[name] = 100.0 * (other[metric] - base[metric])
            elif base[metric] > 0:
                summary[name] = other[metric] / base[metric] - 1.0
    if metric == "accuracy":
        good = [e for e in ok if e[metric] >= base[metric] - 0.005 - 1e-12]
    else:
        good = [e for e in ok if e[metric] <= 1.1 * base[metric]]
    cheapest = min(good, key=lambda e: (e["nfe"], not e["trained"]))  # ties: no speedup to claim
    summary["dt_fewest_nfe"] = cheapest["nfe"]
    if base["latency_ms"] and cheapest["latency_ms"]:
        summary["dt_speedup"] = base["latency_ms"] / cheapest["latency_ms"]
    if trained.steps is not None:
        points = {e["dt"]: e["error"] for e in ok if e["scheme"] == trained.scheme
                  and e["dt"] <= base["dt"] * (1 + 1e-9) and e["error"] and math.isfinite(e["error"])}
        if len(points) >= 2:
            slope = np.polyfit(np.log(list(points)), np.log(list(points.values())), 1)[0]
            summary["dt_order"] = float(slope)
    return summary
