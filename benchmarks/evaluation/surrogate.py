"""The same-size ResNet whose PGD examples are transferred to every other model (issue #11's transfer attack).

A model that masks its own gradients can still be broken by adversarial examples crafted on a normal network of
the same task (Athalye et al. 2018, sec. 5; Carlini et al. 2019). The surrogate is exactly the leaderboard's
`resnet` row of the same protocol and seed: the zoo's `resnet` at the protocol's size, trained by
`benchmarks.training.train.train` with the protocol's recipe after the runner's seeding. It is trained once per
(task, training hash, seed) and kept as a state_dict under the cache directory (`benchmarks.data.tasks.cache_root`):
a tier version that changes only the evaluation (same `Protocol.training_hash`) keeps its surrogates.

Concurrency: with `depthbench run --workers N` several processes may train the same surrogate at once. Training is
deterministic, so they all produce the same weights; each writes through `atomic_output` (temporary file, then one
`os.replace`), so a reader sees either no file or a whole one, never a partial write. The cost is only the
duplicated training time of the first runs.
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

import zoo
from benchmarks.data.tasks import Task, TaskData, cache_root
from benchmarks.io import atomic_output
from benchmarks.protocols import Protocol, recipe_for
from benchmarks.suite import SURROGATE_MODEL
from benchmarks.training.train import seed_everything, train


def surrogate_path(task: Task, protocol: Protocol, seed: int) -> Path:
    """Where the cached surrogate of (task, training hash, seed) lives."""
    training = protocol.training_hash(task.name)
    return cache_root() / "surrogates" / f"{SURROGATE_MODEL}-{task.name}-training-{training}-seed{seed}.pt"


def _fresh(task: Task, protocol: Protocol) -> nn.Module:
    return zoo.create_model(SURROGATE_MODEL, input_shape=task.input_shape, num_classes=task.num_classes,
                            **protocol.model_overrides)


def train_surrogate(task: Task, data: TaskData, protocol: Protocol, seed: int, device: torch.device) -> nn.Module:
    """Train the resnet row's model exactly as `run_one` does, leaving the caller's random states untouched."""

    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = [torch.cuda.current_device()] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            seed_everything(seed)
            model = _fresh(task, protocol).to(device)
            train(model, data, task, recipe_for(protocol, task.name), device=device, seed=seed)
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
    return model


def resnet_surrogate(task: Task, data: TaskData, protocol: Protocol, seed: int, device: torch.device,
                     model_name: str | None = None) -> nn.Module | None:
    """The cached (else freshly trained and cached) surrogate in eval mode, fp32, on `device`; None for regression
    tasks and when the model under test is the surrogate itself."""
    if task.kind != "classification" or model_name == SURROGATE_MODEL:
        return None
    path = surrogate_path(task, protocol, seed)
    model = None
    if path.is_file():
        try:
            model = _fresh(task, protocol)
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            model = model.to(device)
        except Exception as err:  # noqa: BLE001 - a damaged cache is retrained, never trusted
            warnings.warn(f"retraining the transfer surrogate: unreadable cache {path}: {err}", stacklevel=2)
            model = None
    if model is None:
        model = train_surrogate(task, data, protocol, seed, device)
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        with atomic_output(path) as tmp:
            torch.save(state, tmp)
    return model.eval().float()
