"""Zhang's line-shape score (seed 002:383-387, 432-448): does training accuracy rise as LSS falls, and are a ResNet's
data tracks closer to a straight line than a plain network's?

Zhang's claims: "Training accuracy increases with LSS decreasing!" (002:436) and "Both OTS and LSS of ResNets are
closer to 1." (002:442, against a plain, non-residual network). The score is the seed's own
(`diagnostics.zhang_line_shape_score`: unit-normalised steps chained, LSS = n / |x~(n) - x~(0)| >= 1), not the
harness's length / chord `line_shape`. Two arms, trained with the study recipe (the cpu tier's on Fashion-MNIST),
the same seed (data order; initialisation differs by the plain arm's lambda draws):

- `resnet`: the zoo's ResNet;
- `plain`: the same architecture without the identity path: the zoo's `inresnet` with lambda_n = 1 exactly and
  frozen (`lambda_init=(1, 1)`, `requires_grad` off), so every block is x_{n+1} = (1 - relu(1)) x_n + f_n(x_n) =
  f_n(x_n): the non-residual limit of Yang's damped ODE, with the ResNet's rate functions f_n.

After every epoch (eval mode; no batch statistics, GroupNorm) both are read on a fixed batch of the first
`TRACK_IMAGES` training images: the LSS of their representation tracks (the block boundaries of each stage, as
`model.tracks()` gives them: a ResNet's layer outputs), mean over images and stages, and the training accuracy on
those images. Per seed: `lss_accuracy_spearman` (the ResNet's Spearman rank correlation of LSS and training accuracy
across epochs; the claim says negative), `lss_first`, `lss_last` (the ResNet after the first and the last epoch),
`lss_resnet`, `lss_plain` (of the weights train() keeps, the best validation epoch) and `lss_plain_minus_resnet`
(the claim: > 0). The seed's ResNet carries an L2 regulariser (002:402, "ResNet with L_2 regularizer"); the study
recipe has no weight decay, said in the file's note.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import zoo
from benchmarks.evaluation.diagnostics import zhang_line_shape_score
from benchmarks.evaluation.metrics import accuracy
from benchmarks.protocols import CPU
from benchmarks.studies.common import begin, save
from benchmarks.studies.registry import LineFigure, register_study
from benchmarks.training.train import seed_everything, train

STUDY = "line-shape"
TRACK_IMAGES = 1000
SIZE = dict(CPU.model_overrides)  # the cpu tier's size class: width 16, depth 3
ARMS = {"resnet": ("resnet", {}), "plain": ("inresnet", {"lambda_init": (1.0, 1.0)})}
PAPER = {
    "label": "Zhang (seed 002; MNIST, figures without numbers)",
    "lss_accuracy_spearman": "negative: \"Training accuracy increases with LSS decreasing!\" (002:436)",
    "lss_plain_minus_resnet": "> 0: \"Both OTS and LSS of ResNets are closer to 1.\" (002:442)",
    "definition": "002:385 x~(0) = x(0), x~(l) = x~(l-1) + (x(l) - x(l-1)) / ||x(l) - x(l-1)||_2; "
                  "002:387 LSS = n / ||x~(n) - x~(0)||_2",
}


def freeze_lambda(model: nn.Module) -> nn.Module:
    """Keep every In-ResNet lambda_n at its initial value (the plain arm: exactly 1) by taking it out of training."""
    frozen = 0
    for name, parameter in model.named_parameters():
        if name.rsplit(".", 1)[-1] == "lam":
            parameter.requires_grad_(False)
            frozen += 1
    if not frozen:
        raise ValueError("freeze_lambda: the model has no In-ResNet lambda parameters")
    return model


def build(arm: str, task: Any, seed: int, device: torch.device, size: dict[str, int]) -> nn.Module:
    """Arm `arm` at the study's size, seeded as the tier runner seeds."""
    name, extra = ARMS[arm]
    seed_everything(seed)
    model = zoo.create_model(name, input_shape=task.input_shape, num_classes=task.num_classes, **size, **extra)
    return (freeze_lambda(model) if arm == "plain" else model).to(device)


@torch.no_grad()
def line_shape(model: nn.Module, x: torch.Tensor) -> tuple[float, int]:
    """Mean Zhang LSS over the images and stages of `x`'s tracks, and how many (image, stage) scores were not finite
    (left out of the mean: a zero-length step or a track whose unit steps return to its start)."""
    model.eval()
    scores = torch.cat([zhang_line_shape_score(track) for track in model.tracks(x)])
    finite = torch.isfinite(scores)
    if not finite.any():
        raise ValueError("no finite line-shape score: every track has a zero-length step")
    return float(scores[finite].mean()), int((~finite).sum())


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when either sequence is constant."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"spearman needs two sequences of the same length >= 2, got {len(a)} and {len(b)}")

    def ranks(values: Sequence[float]) -> np.ndarray:
        values = np.asarray(values, dtype=float)
        order = np.argsort(values, kind="stable")
        out = np.empty(len(values))
        out[order] = np.arange(len(values), dtype=float)
        for value in np.unique(values):  # ties share their mean rank
            tied = values == value
            out[tied] = out[tied].mean()
        return out

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


@register_study("line-shape", title="Zhang's line-shape score: ResNet against a plain network, and across training",
                summary="LSS (seed 002's definition) of a ResNet's data tracks after every epoch against its training "
                "accuracy, and of the same network without the identity path", claims=("zhang-line-shape",),
                task="fashion-mnist", seeds=(0, 1, 2),
                figure=LineFigure(x="epoch", y="lss", series="arm", xlabel="epoch",
                                  ylabel="line-shape score LSS (1 = straight)"))
def run(task_name: str, seeds: Sequence[int], results: Path, *, device: torch.device | None = None,
        limit: int | None = None, figure: str | None = None, size: dict[str, int] | None = None) -> Path:
    """Train both arms for every seed, reading LSS and training accuracy after every epoch; write
    `results/line-shape/<task>.json`."""
    seeds, device, started, task, data, recipe, clock = begin(task_name, seeds, device, limit)
    size = dict(size or SIZE)
    x = data.train.inputs()[:TRACK_IMAGES].to(device)
    y = data.train.y[:TRACK_IMAGES].to(device)
    per_seed: dict[str, list[float]] = {k: [] for k in ("lss_accuracy_spearman", "lss_first", "lss_last",
                                                         "lss_resnet", "lss_plain", "lss_plain_minus_resnet")}
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        final = {}
        for arm in ARMS:
            model = build(arm, task, seed, device, size)
            epochs: list[dict[str, Any]] = []

            def read(entry: dict[str, float], model: nn.Module = model, arm: str = arm, seed: int = seed,
                     epochs: list[dict[str, Any]] = epochs) -> None:
                lss, undefined = line_shape(model, x)
                epochs.append({"arm": arm, "seed": seed, "epoch": int(entry["epoch"]), "lss": lss,
                               "train_accuracy": accuracy(model, x, y, batch_size=500), "val_accuracy": entry["val"],
                               "loss": entry["loss"], "undefined_scores": undefined})

            trained = train(model, data, task, recipe, device=device, seed=seed, on_epoch=read)
            final[arm], _ = line_shape(model, x)
            rows += [{**e, "kept": e["epoch"] == trained.best_epoch} for e in epochs]
            if arm == "resnet":
                per_seed["lss_accuracy_spearman"].append(spearman([e["lss"] for e in epochs],
                                                                  [e["train_accuracy"] for e in epochs]))
                per_seed["lss_first"].append(epochs[0]["lss"])
                per_seed["lss_last"].append(epochs[-1]["lss"])
        per_seed["lss_resnet"].append(final["resnet"])
        per_seed["lss_plain"].append(final["plain"])
        per_seed["lss_plain_minus_resnet"].append(final["plain"] - final["resnet"])
    details = {"columns": ["arm", "seed", "epoch", "lss", "train_accuracy", "val_accuracy", "loss", "kept",
                           "undefined_scores"],
               "arms": {arm: {"model": name, **extra} for arm, (name, extra) in ARMS.items()}, "size": size,
               "recipe": dataclasses.asdict(recipe), "track_images": len(x), "paper": PAPER,
               "seconds": round(time.perf_counter() - clock, 1),
               "note": f"LSS (seed 002:385-387) of the block-boundary tracks on the first {len(x)} training images, "
                       "mean over images and stages, after every epoch (rows; `kept` marks the best-validation epoch "
                       "whose weights lss_resnet / lss_plain are of); lss_accuracy_spearman is the ResNet's, across "
                       "epochs; plain = inresnet with lambda_n frozen at exactly 1 (x_{n+1} = f_n(x_n)); the seed's "
                       "ResNet is L2-regularised (002:402), this recipe has no weight decay; the seed's task is MNIST"}
    return save(results, study=STUDY, task=task.name, seeds=seeds, per_seed=per_seed, rows=rows, provenance=started,
                details=details, figure=figure)

