"""Chen's two cost claims for ODE-Nets (seed 001): the test-time tolerance, and the adjoint's backward NFE.

- "Although we can't control the time cost of the model during training, we can control the time-cost at **test**
  time!!!!" (001:373): the cpu tier's trained `neural-ode` (dopri5, trained at rtol = atol = 1e-3) is re-manifested at
  rtol = atol in `TOLERANCES` (`model.manifest("dopri5", rtol=t, atol=t)`, the same weights) and run on the whole test
  set: accuracy and the mean NFE per forward (over every evaluation batch). Per seed `nfe_tol{t:g}`,
  `accuracy_tol{t:g}` and `test_time_nfe_range` = NFE(1e-5) / NFE(1e-1).
- "Number of evaluations in the backward pass is roughly half of the forward (credit to adjoint sensitivity)"
  (001:413): the same weights manifested with `adjoint=True` at the trained tolerance; the cross-entropy loss of
  test batches of the training batch size is backpropagated, and the zoo counts the rate evaluations of the forward
  solve (`model.nfe`) and of the adjoint solve (`model.nfe_backward`). Per seed `forward_nfe`, `backward_nfe` (means
  over the batches) and `backward_forward_ratio` = mean backward / mean forward NFE. Chen's figure is of training;
  this reads the trained weights on test data.

Weights: the tier's kept best weights with `--checkpoints`, else trained here exactly as the tier does. `models`
may add `anode` (its quantities prefixed "anode/"); the headline model's are unprefixed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from benchmarks.evaluation.metrics import batches, evaluate
from benchmarks.protocols import CPU, Protocol, recipe_for
from benchmarks.studies.common import check_seeds, load, provenance, save, trained_model
from benchmarks.studies.registry import LineFigure, register_study

STUDY = "adjoint-cost"
MODELS = ("neural-ode",)
TOLERANCES = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)
SCHEME = "dopri5"
PAPER = {
    "label": "Chen (seed 001; MNIST, figures without numbers)",
    "test_time_nfe_range": "> 1: \"we can control the time-cost at **test** time!!!!\" (001:373)",
    "backward_forward_ratio": "~0.5: \"Number of evaluations in the backward pass is roughly half of the forward "
                              "(credit to adjoint sensitivity)\" (001:413)",
}


def tolerance_sweep(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, tolerances: Sequence[float],
                    batch_size: int) -> list[dict[str, float]]:
    """Accuracy and mean NFE per forward of `model` manifested with dopri5 at rtol = atol = t, for every t."""
    out = []
    for tol in tolerances:
        accuracy, nfe = evaluate(model.manifest(SCHEME, rtol=tol, atol=tol), x, y, kind="classification",
                                 batch_size=batch_size)
        out.append({"tolerance": tol, "accuracy": accuracy, "nfe": nfe})
    return out


def backward_cost(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> dict[str, float]:
    """Mean forward and adjoint (backward) NFE of the cross-entropy loss over the full batches of `batch_size` in x,
    with `model` manifested with the adjoint at its own tolerance; parameter gradients as in training."""
    adjoint = model.manifest(adjoint=True)
    forward, backward = [], []
    parts = [p for p in batches(len(x), batch_size) if p.stop - p.start == batch_size] or [slice(0, len(x))]
    with torch.enable_grad():
        for part in parts:
            adjoint.zero_grad(set_to_none=True)
            loss = F.cross_entropy(adjoint(x[part]), y[part])
            forward.append(adjoint.nfe)
            loss.backward()
            backward.append(adjoint.nfe_backward)
    adjoint.zero_grad(set_to_none=True)
    mean_forward, mean_backward = statistics.fmean(forward), statistics.fmean(backward)
    return {"forward_nfe": mean_forward, "backward_nfe": mean_backward,
            "backward_forward_ratio": mean_backward / mean_forward, "batches": len(parts)}


@register_study("adjoint-cost", title="ODE-Net cost: test-time tolerance and the adjoint's backward NFE (Chen)",
                summary="the cpu tier's neural-ode at test-time tolerances 1e-1..1e-5 (accuracy, NFE) and its adjoint "
                "backward NFE against the forward's", claims=("chen-test-time-cost", "chen-backward-cost"),
                task="fashion-mnist", seeds=(0, 1, 2), options=("checkpoints",),
                figure=LineFigure(x="tolerance", y="nfe", series="model", where={"kind": "tolerance"},
                                  xlabel="test-time rtol = atol (dopri5)", ylabel="mean NFE per forward",
                                  logx=True, logy=True))
def run(task_name: str, seeds: Sequence[int], results: Path, *, device: torch.device | None = None,
        limit: int | None = None, figure: str | None = None, checkpoints: Path | None = None,
        tier: Protocol = CPU, models: Sequence[str] = MODELS, tolerances: Sequence[float] = TOLERANCES) -> Path:
    """Sweep the test-time tolerance and count the adjoint's backward NFE for every model and seed; write
    `results/adjoint-cost/<task>.json`."""
    clock = time.perf_counter()
    seeds = check_seeds(seeds)
    if min(tolerances) != 1e-5 or max(tolerances) != 1e-1:
        raise ValueError("test_time_nfe_range is NFE(1e-5) / NFE(1e-1): the tolerances must span 1e-1 .. 1e-5")
    device = device or torch.device("cpu")
    started = provenance(device)
    task, data = load(task_name, tier.data_limit if limit is None else limit)  # the tier's data, as its runs
    batch_size, train_batch = tier.evaluation.eval_batch, recipe_for(tier, task.name).batch_size
    x, y = data.test.inputs().to(device), data.test.y.to(device)
    per_seed: dict[str, list[float]] = {}
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        for name in models:
            prefix = "" if name == models[0] else f"{name}/"
            model, source = trained_model(name, tier, task, data, seed, device, checkpoints)
            trained = model.solvers[0]
            tick = time.perf_counter()
            sweep = tolerance_sweep(model, x, y, tolerances, batch_size)
            for entry in sweep:
                rows.append({"kind": "tolerance", "model": name, "seed": seed, **entry,
                             "trained": entry["tolerance"] == trained.rtol == trained.atol, "weights": source})
                per_seed.setdefault(f"{prefix}nfe_tol{entry['tolerance']:g}", []).append(entry["nfe"])
                per_seed.setdefault(f"{prefix}accuracy_tol{entry['tolerance']:g}", []).append(entry["accuracy"])
            nfe = {entry["tolerance"]: entry["nfe"] for entry in sweep}
            per_seed.setdefault(f"{prefix}test_time_nfe_range", []).append(nfe[1e-5] / nfe[1e-1])
            sweep_seconds = time.perf_counter() - tick
            tick = time.perf_counter()
            cost = backward_cost(model, x, y, train_batch)
            rows.append({"kind": "backward", "model": name, "seed": seed, "tolerance": trained.rtol, **cost,
                         "sweep_seconds": round(sweep_seconds, 1),
                         "backward_seconds": round(time.perf_counter() - tick, 1), "weights": source})
            for key in ("forward_nfe", "backward_nfe", "backward_forward_ratio"):
                per_seed.setdefault(f"{prefix}{key}", []).append(cost[key])
    details = {"columns": ["kind", "model", "seed", "tolerance", "accuracy", "nfe", "trained", "forward_nfe",
                           "backward_nfe", "backward_forward_ratio", "batches", "sweep_seconds", "backward_seconds",
                           "weights"],
               "tier": tier.name, "tier_hash": tier.task_hash(task.name), "models": list(models), "scheme": SCHEME,
               "tolerances": list(tolerances), "eval_batch": batch_size, "backward_batch": train_batch,
               "test_images": len(y), "paper": PAPER, "seconds": round(time.perf_counter() - clock, 1),
               "note": f"tolerance rows: accuracy and mean NFE per forward on the whole test set ({len(y)} images, "
                       f"batches of {batch_size}) with {SCHEME} at rtol = atol = tolerance (`trained` marks the "
                       "training tolerance); backward rows: the adjoint at the trained tolerance, mean rate "
                       f"evaluations of the forward and the adjoint solve of the cross-entropy loss over the full "
                       f"test batches of {train_batch} (the training batch size); the seed's task is MNIST"}
    return save(results, study=STUDY, task=task.name, seeds=seeds, per_seed=per_seed, rows=rows,
                provenance=started, details=details, figure=figure, tier=tier.name)
