"""Yang et al.'s sensitivity to the initialisation of In-ResNet's lambda (seed 004:218-234).

In-ResNet's blocks are x_{n+1} = (1 - relu(lambda_n)) x_n + f_n(x_n) (004:113): lambda = 0 is a ResNet, lambda = 1 a
plain network. Yang initialises lambda_n from U[0.00,0.10], U[0.10,0.20], U[0.20,0.25], U[0.25,0.30] and U[0.30,0.40]
and finds "Becoming non-residual: accuracy drops and robustness rises" (004:232). Here the zoo's `inresnet`
(`lambda_init=`) is trained for each range with the study recipe (the cpu tier's on Fashion-MNIST) at the cpu tier's
size, the same seed for every range (same data order; the lambda draws shift the later initial weights), and
measured as the tier measures: clean accuracy on the whole test set; on the first `ATTACK_SUBSET` test images (the
tier's attack subset) the accuracy under PGD alone at eps `PGD_EPS` (the suite's PGD with the tier's budget: 20
steps of 2.5 eps / 20, 2 random starts, per-example worst case; `attacks.attack_accuracy`) and under Gaussian noise
of sigma `NOISE_SIGMA` (noise seed 0, as the tier's records). Per seed: f"{lo:g}-{hi:g}/accuracy", ".../pgd",
".../noise" for every range, `accuracy_drop` = accuracy(U[0,0.1]) - accuracy(U[0.3,0.4]) and `pgd_gain` =
pgd(U[0.3,0.4]) - pgd(U[0,0.1]) (the claim: both > 0).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.evaluation.attacks import attack_accuracy
from benchmarks.evaluation.metrics import accuracy, eps_key, noise_robustness
from benchmarks.protocols import CPU, Evaluation
from benchmarks.studies.common import begin, build_and_train, save
from benchmarks.studies.registry import LineFigure, register_study

STUDY = "inresnet-init"
MODEL = "inresnet"
SIZE = dict(CPU.model_overrides)  # the cpu tier's size class: width 16, depth 3
INITS: tuple[tuple[float, float], ...] = ((0.0, 0.1), (0.1, 0.2), (0.2, 0.25), (0.25, 0.3), (0.3, 0.4))
ATTACK_SUBSET = CPU.evaluation.attack_subset  # 1,100
PGD_EPS = 0.05
NOISE_SIGMA = 0.1
PLOTTED = ("accuracy", "pgd")
PAPER = {
    "label": "Yang et al. (seed 004:218-229; CIFAR-10, In-ResNet-110: Acc. / noise / PGD)",
    **{f"{lo:g}-{hi:g}/{metric}": value for (lo, hi), values in zip(INITS, (
        ("93.51", "55.15", "7.96"), ("93.25", "62.88", "16.46"), ("92.28", "72.67", "31.74"),
        ("91.63", "76.20", "36.28"), ("90.62", "79.35", "40.84")))
       for metric, value in zip(("accuracy", "noise", "pgd"), values)},
    "accuracy_drop": "2.89 (93.51 - 90.62)", "pgd_gain": "32.88 (40.84 - 7.96)",
    "rows": {
        "004:218": "Model\tInitialization\tAcc.\tnoise\tFGSM\tIFGSM\tPGD",
        "004:219": "ResNet\t-\t93.58\t53.70\t41.48\t5.93\t5.60",
        "004:220": "\t$\\mathcal{U}[0.00, 0.10]$\t93.51\t55.15\t46.74\t8.39\t7.96",
        "004:221": "\t$\\mathcal{U}[0.10, 0.20]$\t93.25\t62.88\t49.58\t16.89\t16.46",
        "004:222": "In-ResNet\t$\\mathcal{U}[0.20, 0.25]$\t92.28\t72.67\t55.24\t32.05\t31.74",
        "004:223": "\t$\\mathcal{U}[0.25, 0.30]$\t91.63\t76.20\t55.79\t36.53\t36.28",
        "004:224": "\t$\\mathcal{U}[0.30, 0.40]$\t90.62\t79.35\t55.95\t41.07\t40.84",
        "004:232": "- Becoming non-residual: accuracy drops and robustness rises<sup>4</sup>.",
        "004:234": "<sup>4</sup>1(3) out of 5 fails for ( $\\lambda$ -)In-ResNet with  $\\mathcal{U}[0.30, 0.40]$ .",
    },
}


def init_key(init: tuple[float, float]) -> str:
    return f"{init[0]:g}-{init[1]:g}"


def measure(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, ev: Evaluation, subset: int
            ) -> dict[str, float]:
    """Clean accuracy on all of x; PGD-alone and noise accuracy on its first `subset` examples, as the tier does."""
    xs, ys = x[:subset], y[:subset]
    return {"accuracy": accuracy(model, x, y, batch_size=ev.eval_batch),
            "pgd": attack_accuracy(model, xs, ys, attack="pgd", eps=PGD_EPS, ev=ev, batch_size=ev.eval_batch),
            "noise": noise_robustness(model, xs, ys, sigmas=(NOISE_SIGMA,), batch_size=ev.eval_batch,
                                      seed=0)[f"noise@{eps_key(NOISE_SIGMA)}"]}


def learned_lambdas(model: torch.nn.Module) -> list[float]:
    """Every block's lambda_n after training."""
    return [float(v) for name, p in model.named_parameters() if name.rsplit(".", 1)[-1] == "lam"
            for v in p.detach().flatten()]


@register_study("inresnet-init", title="In-ResNet's sensitivity to the initialisation of lambda (Yang et al.)",
                summary="In-ResNet trained from five lambda initialisation ranges, U[0,0.1] .. U[0.3,0.4]: clean, "
                "PGD and noise accuracy", claims=("yang-init",), task="fashion-mnist", seeds=(0, 1, 2),
                figure=LineFigure(x="lambda_init_mid", y="value", series="metric", where={"plotted": True},
                                  xlabel="midpoint of lambda's initialisation range",
                                  ylabel="accuracy (clean; PGD eps 0.05)"))
def run(task_name: str, seeds: Sequence[int], results: Path, *, device: torch.device | None = None,
        limit: int | None = None, figure: str | None = None, inits: Sequence[tuple[float, float]] = INITS,
        ev: Evaluation = CPU.evaluation, size: dict[str, int] | None = None) -> Path:
    """Train In-ResNet from every initialisation range for every seed and measure it; write
    `results/inresnet-init/<task>.json`."""
    if (INITS[0] not in inits) or (INITS[-1] not in inits):
        raise ValueError(f"the end-to-end effects need the ranges {INITS[0]} and {INITS[-1]}")
    seeds, device, started, task, data, recipe, clock = begin(task_name, seeds, device, limit)
    size = dict(size or SIZE)
    x_test, y_test = data.test.inputs().to(device), data.test.y.to(device)
    subset = min(ATTACK_SUBSET, len(x_test))
    per_seed: dict[str, list[float]] = {f"{init_key(i)}/{m}": [] for i in inits for m in ("accuracy", "pgd", "noise")}
    per_seed.update(accuracy_drop=[], pgd_gain=[])
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        for init in inits:
            model, trained = build_and_train(MODEL, task, data, recipe, seed, device, lambda_init=tuple(init), **size)
            tick = time.perf_counter()
            scores = measure(model, x_test, y_test, ev, subset)
            lambdas = learned_lambdas(model)
            for metric, value in scores.items():
                per_seed[f"{init_key(init)}/{metric}"].append(value)
                rows.append({"seed": seed, "lambda_init": init_key(init), "lambda_init_mid": sum(init) / 2,
                             "metric": metric, "value": value, "plotted": metric in PLOTTED})
            rows.append({"seed": seed, "lambda_init": init_key(init), "lambda_init_mid": sum(init) / 2,
                         "metric": "lambda_learned_mean", "value": statistics.fmean(lambdas), "plotted": False,
                         "val_accuracy": trained.val_metric, "best_epoch": trained.best_epoch,
                         "train_seconds": round(trained.train_seconds, 1),
                         "measure_seconds": round(time.perf_counter() - tick, 1)})
        low, high = init_key(INITS[0]), init_key(INITS[-1])
        per_seed["accuracy_drop"].append(per_seed[f"{low}/accuracy"][-1] - per_seed[f"{high}/accuracy"][-1])
        per_seed["pgd_gain"].append(per_seed[f"{high}/pgd"][-1] - per_seed[f"{low}/pgd"][-1])
    details = {"columns": ["seed", "lambda_init", "lambda_init_mid", "metric", "value", "plotted", "val_accuracy",
                           "best_epoch", "train_seconds", "measure_seconds"],
               "model": MODEL, "size": size, "inits": [list(i) for i in inits], "recipe": dataclasses.asdict(recipe),
               "pgd": {"eps": PGD_EPS, "steps": ev.pgd_steps, "restarts": ev.pgd_restarts,
                       "step_size": f"{ev.pgd_alpha_factor:g} eps / steps"},
               "noise_sigma": NOISE_SIGMA, "attack_subset": subset, "paper": PAPER,
               "seconds": round(time.perf_counter() - clock, 1),
               "note": f"accuracy: whole test set; pgd: accuracy under the suite's PGD alone at eps {PGD_EPS:g} "
                       f"({ev.pgd_steps} steps, {ev.pgd_restarts} random starts, worst case per example) and noise: "
                       f"accuracy under Gaussian noise sigma {NOISE_SIGMA:g} (seed 0), both on the first {subset} "
                       "test images as the tier's records; lambda_learned_mean: the mean lambda_n after training "
                       "(val_accuracy, best_epoch and the times are on that row); the paper's numbers are "
                       "CIFAR-10 In-ResNet-110 (its noise and PGD settings differ), ours Fashion-MNIST"}
    return save(results, study=STUDY, task=task.name, seeds=seeds, per_seed=per_seed, rows=rows, provenance=started,
                details=details, figure=figure)
