"""Training: one loop for every model, fast on a GPU for these small data sets.

The whole split lives on the device as uint8 (no DataLoader, no per-batch host work); batches are
gathered by a seeded permutation, scaled to [0, 1] and augmented on the device; images are
channels_last under CUDA; bf16 autocast and torch.compile when the recipe asks for them. The loss
is checked once per epoch (one host sync), so a diverging model stops with `TrainingDiverged`
instead of training on NaNs. The checkpoint kept is the best on the *validation* split: the test
set is never looked at.
"""

from __future__ import annotations

import copy
import math
import random
import statistics
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks.data.tasks import Split, Task, TaskData
from benchmarks.protocols import Recipe
from benchmarks.training.checkpoint import TrainingCheckpoint
from benchmarks.training.refine import match_layout, refine_keeping_state
from zoo.contract import capabilities, validate_output

MAX_SEED = 2**32 - 1  # numpy's global generator takes seeds 0 .. 2**32 - 1 (torch's and Python's take more)


def seed_everything(seed: int) -> None:
    """Python's, numpy's and torch's global generators, as the runner seeds every run (and its surrogate); a seed
    outside 0 .. MAX_SEED raises ValueError (numpy's limit)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class TrainingDiverged(RuntimeError):
    """The training loss or validation metric became NaN or infinite."""


@dataclass
class TrainResult:
    epochs: int
    train_seconds: float
    epoch_seconds: float  # median over epochs, training steps only
    best_epoch: int
    val_metric: float  # accuracy (classification) or MSE (regression) of the kept checkpoint
    peak_memory_mb: float | None  # CUDA only
    history: list[dict[str, float]] = field(default_factory=list)


def batch_inputs(x: torch.Tensor, image: bool) -> torch.Tensor:
    """uint8 images -> float [0, 1]; vectors pass through."""
    return x.float().div_(255.0) if image else x


def augment(x: torch.Tensor, kind: str, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop (zero padding `pad`) and optional horizontal flip, per sample, on x's device."""
    if kind == "none":
        return x
    batch, channels, height, width = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dev = x.device
    top = torch.randint(0, 2 * pad + 1, (batch,), device=dev, generator=generator)
    left = torch.randint(0, 2 * pad + 1, (batch,), device=dev, generator=generator)
    rows = (top[:, None] + torch.arange(height, device=dev))[:, None, :, None]
    cols = (left[:, None] + torch.arange(width, device=dev))[:, None, None, :]
    out = padded[torch.arange(batch, device=dev)[:, None, None, None],
                 torch.arange(channels, device=dev)[None, :, None, None], rows, cols]
    if kind == "crop-flip":
        flip = torch.rand(batch, device=dev, generator=generator) < 0.5
        out = torch.where(flip[:, None, None, None], out.flip(3), out)
    return out


def channels_last(model: nn.Module) -> nn.Module:
    """Convolution weights in NHWC layout, which tensor cores want.

    `Module.to(memory_format=channels_last)` fails on the 5-D coefficient stacks of depth-varying convolutions
    (basis, out, in, kh, kw); they are laid out here so that every slice theta_beta is itself channels-last.
    """
    for param in model.parameters():
        if param.dim() == 4:
            param.data = param.data.contiguous(memory_format=torch.channels_last)
        elif param.dim() == 5:
            param.data = param.data.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    return model


COMPILE_BACKEND = "inductor"  # the tests trace with "aot_eager", which needs no C++/CUDA compiler


def training_forward(model: nn.Module, recipe: Recipe) -> nn.Module:
    """What the training steps call: `model` itself, or a `torch.compile`d view of it sharing its parameters.

    Only fixed-step models are compiled: their forward is a fixed sequence of stages that traces into one graph,
    so kernel fusion removes most of the launch overhead of these small convolutions. torchdiffeq's adaptive loop
    decides every step on the host (accept/reject), which breaks any graph; those models stay eager. Evaluation,
    attacks and manifestations call the eager module: they change solvers and batch sizes, which would recompile.
    """
    if not recipe.compile or any(s.adaptive for s in getattr(model, "solvers", ())):
        return model
    return torch.compile(model, backend=COMPILE_BACKEND)


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, task: Task, device: torch.device, batch_size: int = 1000) -> float:
    """Accuracy (classification) or mean squared error (regression) in fp32, eval mode.

    Outputs must be finite tensors of the task's shape (ModelOutputError otherwise): a NaN argmax is an
    accuracy of about 1/classes, not a result, and must stop the run at its first validation."""
    model.eval()
    image = len(task.input_shape) == 3
    total, count = 0.0, 0
    for start in range(0, len(split), batch_size):
        x = batch_inputs(split.x[start:start + batch_size].to(device), image)
        y = split.y[start:start + batch_size].to(device)
        out = validate_output(model(x), len(y), (task.num_classes,) if task.kind == "classification"
                              else tuple(y.shape[1:]), where="evaluation (validation split)")
        if task.kind == "classification":
            total += (out.argmax(1) == y).sum().item()
        else:
            total += F.mse_loss(out, y, reduction="sum").item() / y[0].numel()
        count += len(y)
    return total / count


def _optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                               weight_decay=recipe.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)


def _schedule(optimizer: torch.optim.Optimizer, recipe: Recipe, total_steps: int):
    if recipe.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=total_steps)
    if recipe.schedule == "multistep":
        milestones = [int(f * total_steps) for f in recipe.milestones]
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def _refined(model: nn.Module, optimizer: torch.optim.Optimizer, recipe: Recipe,
             channels_last_layout: bool) -> nn.Module:
    """Refine `model` in place; the same optimizer (so the same schedule) tracks the new parameters with their state
    mapped like the parameters (`refine.refine_keeping_state`); returns the new training forward."""
    refine_keeping_state(model, optimizer)
    if channels_last_layout:
        channels_last(model)
        match_layout(optimizer)
    return training_forward(model, recipe)


def train(
    model: nn.Module,
    data: TaskData,
    task: Task,
    recipe: Recipe,
    *,
    device: torch.device,
    seed: int,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    refine_at_epochs: Collection[int] = (),
    checkpoint: TrainingCheckpoint | None = None,
) -> TrainResult:
    """Train `model` (already on `device`) with `recipe`; leaves it holding the best-validation weights.

    `refine_at_epochs` (refinement training, Queiruga et al. 2020): before each of these epochs `model.refine()`
    doubles its depth basis and steps, representing the same theta(t). The optimizer carries over: each refined
    parameter's state (Adam's moments, SGD's momentum) is mapped like the parameter (benchmarks/training/refine.py)
    and the learning-rate schedule continues, so the recipe's schedule spans all epochs as for a model trained at
    full depth. The checkpoint kept is the best of the
    epochs after the last refinement (earlier ones have another parameter shape).

    With `checkpoint`, the state after every epoch is saved there, and a run that finds one continues from it
    (benchmarks/training/checkpoint.py): the result is that of an uninterrupted run, timings aside.
    """
    if any(not 2 <= e <= recipe.epochs for e in refine_at_epochs):
        raise ValueError(f"refine_at_epochs must lie in 2..{recipe.epochs} (the recipe's epochs), got "
                         f"{sorted(refine_at_epochs)}")
    if refine_at_epochs and checkpoint is not None:
        # A checkpoint holds one parameter shape; resuming mid-schedule would need the refinements replayed first.
        raise ValueError("refinement training does not take a checkpoint (resume would restore the wrong depth)")
    image = len(task.input_shape) == 3
    cuda = device.type == "cuda"
    if image and cuda:
        channels_last(model)
    train_x, train_y = data.train.x, data.train.y
    if recipe.max_train is not None:
        train_x, train_y = train_x[:recipe.max_train], train_y[:recipe.max_train]
    train_x, train_y = train_x.to(device), train_y.to(device)
    n = len(train_y)
    steps_per_epoch = max(1, n // recipe.batch_size)  # drop the ragged last batch: fixed shapes, fair timing
    forward = training_forward(model, recipe)
    optimizer = _optimizer(model, recipe)
    scheduler = _schedule(optimizer, recipe, recipe.epochs * steps_per_epoch)
    shuffle = torch.Generator().manual_seed(seed)
    aug_generator = torch.Generator(device=device).manual_seed(seed)
    loss_fn = F.cross_entropy if task.kind == "classification" else F.mse_loss
    out_shape = (task.num_classes,) if task.kind == "classification" else tuple(train_y.shape[1:])
    regularised = "regulariser" in capabilities(model)  # the contract's optional training-loss term
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)

    best_metric, best_state, best_epoch = None, None, 0
    history, epoch_times, first_epoch, spent = [], [], 1, 0.0
    generators = {"shuffle": shuffle, "augment": aug_generator}
    resumed = checkpoint and checkpoint.restore(model=model, optimizer=optimizer, scheduler=scheduler,
                                                generators=generators, device=device)
    if resumed:
        best_metric, best_state, best_epoch = resumed.best_metric, resumed.best_state, resumed.best_epoch
        history, epoch_times, first_epoch, spent = (resumed.history, resumed.epoch_times, resumed.epoch + 1,
                                                    resumed.train_seconds)
    started = time.perf_counter() - spent
    for epoch in range(first_epoch, recipe.epochs + 1):
        if epoch in refine_at_epochs:
            forward = _refined(model, optimizer, recipe, image and cuda)
            best_metric, best_state, best_epoch = None, None, 0
        model.train()
        epoch_start = time.perf_counter()
        order = torch.randperm(n, generator=shuffle).to(device)
        loss_sum = torch.zeros((), device=device)
        for step in range(steps_per_epoch):
            index = order[step * recipe.batch_size:(step + 1) * recipe.batch_size]
            x = augment(batch_inputs(train_x[index], image), recipe.augment, aug_generator) if image \
                else train_x[index]
            if image and cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=recipe.amp_bf16):
                out = validate_output(forward(x), len(index), out_shape, finite=False, where="training")
                loss = loss_fn(out.float(), train_y[index])
                if regularised:
                    loss = loss + model.regulariser()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach()
        mean_loss = loss_sum.item() / steps_per_epoch  # the epoch's one host sync
        epoch_times.append(time.perf_counter() - epoch_start)
        if not math.isfinite(mean_loss):  # before evaluating: NaN outputs after a NaN loss are divergence
            raise TrainingDiverged(f"training diverged at epoch {epoch}: loss {mean_loss}")
        val = evaluate(model, data.val, task, device)  # a finite loss but NaN eval outputs: ModelOutputError
        if not math.isfinite(val):
            raise TrainingDiverged(f"training diverged at epoch {epoch}: loss {mean_loss}, validation {val}")
        entry = {"epoch": epoch, "loss": mean_loss, "val": val, "seconds": epoch_times[-1]}
        history.append(entry)
        if on_epoch is not None:
            on_epoch(entry)
        better = best_metric is None or (val > best_metric if task.kind == "classification" else val < best_metric)
        if better:
            best_metric, best_epoch = val, epoch
            best_state = copy.deepcopy(model.state_dict())
        if checkpoint is not None:
            checkpoint.save(epoch, model=model, optimizer=optimizer, scheduler=scheduler, generators=generators,
                            best_metric=best_metric, best_state=best_state, best_epoch=best_epoch, history=history,
                            epoch_times=epoch_times, train_seconds=time.perf_counter() - started)
    train_seconds = time.perf_counter() - started
    model.load_state_dict(best_state)
    model.eval()
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None
    return TrainResult(epochs=recipe.epochs, train_seconds=train_seconds, epoch_seconds=statistics.median(epoch_times),
                       best_epoch=best_epoch, val_metric=best_metric, peak_memory_mb=peak, history=history)
