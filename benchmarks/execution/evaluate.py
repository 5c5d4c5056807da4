"""`depthbench evaluate`: the protocol's evaluation (no training) of submitted weights.

The checkpoint is read with `torch.load(..., weights_only=True)`: tensors and plain containers only, never
arbitrary pickled code. Its record is kept apart from trained records of the same model: the record's model key is
`<model>@<sha256[:12]>` (so a leaderboard row of its own, never averaged with runs trained here), it carries the
`evaluated-not-trained-here` flag, and its provenance names the file and its full sha256.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

import zoo
from benchmarks.data.tasks import Task, TaskData
from benchmarks.evaluation import metrics as M
from benchmarks.evaluation.check import require_passing
from benchmarks.execution import runs
from benchmarks.protocols import Protocol
from benchmarks.store.records import Record
from benchmarks.training.train import TrainResult

EVALUATED_FLAG = "evaluated-not-trained-here"


class CheckpointError(ValueError):
    """A checkpoint that cannot be evaluated: not a weights-only file, or not the weights of this model."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def evaluated_key(model_name: str, sha256: str) -> str:
    """The model key of an evaluated checkpoint's records: its own leaderboard row, its own record files."""
    return f"{model_name}@{sha256[:12]}"


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in `path` (or under its "state_dict" / "model" key), loaded weights-only."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any file: torch's unpickler fails in many ways (a text file: KeyError)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if isinstance(error, KeyError | IndexError):  # the unpickler met an opcode it does not know: not a pickle
            first = f"not a file torch.save wrote ({type(error).__name__} {first} from the unpickler)"
        raise CheckpointError(
            f"{path} is not a weights-only checkpoint that torch.load(..., weights_only=True) accepts ({first}); "
            "depthbench never unpickles code: save the weights with torch.save(model.state_dict(), path)") from None
    if isinstance(loaded, dict) and not any(isinstance(v, torch.Tensor) for v in loaded.values()):
        loaded = loaded.get("state_dict", loaded.get("model", loaded))
    if not isinstance(loaded, dict) or not loaded or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()):
        raise CheckpointError(f"{path} holds no state dict (a mapping of parameter names to tensors); "
                              "save the weights with torch.save(model.state_dict(), path)")
    return loaded


def _fit(model: torch.nn.Module, state: dict[str, torch.Tensor], model_name: str, protocol: Protocol) -> None:
    """Load `state` strictly; a checkpoint of another architecture or size gets a message naming what differs."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in set(own) & set(state)
                    if state[k].shape != own[k].shape)
    if missing or unexpected or shapes:
        def few(items: list[str]) -> str:
            return ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")

        parts = [f"missing keys: {few(missing)}" if missing else "",
                 f"unexpected keys: {few(unexpected)}" if unexpected else "",
                 f"shape mismatches (checkpoint vs model): {few(shapes)}" if shapes else ""]
        raise CheckpointError(
            f"the checkpoint does not fit {model_name!r} at tier {protocol.name!r}'s size "
            f"({', '.join(f'{k}={v}' for k, v in protocol.model_overrides.items()) or 'default size'}): "
            + "; ".join(p for p in parts if p)
            + ". Evaluate weights trained for this model at this tier's size (or pick the tier they were made for).")
    model.load_state_dict(state, strict=True)


def evaluate_checkpoint(protocol: Protocol, task: Task, data: TaskData, model_name: str, checkpoint: Path,
                        device: torch.device, seed: int = 0) -> Record:
    """The protocol's evaluation of the weights in `checkpoint` (no training) as a record.

    Bad checkpoints raise `CheckpointError` and a model failing the contract `ModelCheckFailed` (nothing is
    recorded); a model that fails while being measured gives a failed record, as in `depthbench run`."""
    sha = file_sha256(checkpoint)
    state = load_state_dict(checkpoint)
    torch.manual_seed(seed)
    try:
        model = zoo.create_model(model_name, input_shape=task.input_shape, num_classes=task.num_classes,
                                 **protocol.model_overrides)
    except TypeError as error:  # a constructor without the size keywords the tier passes
        raise ValueError(f"cannot build {model_name!r} at tier {protocol.name!r}'s size "
                         f"({protocol.model_overrides}): {error}") from None
    _fit(model, state, model_name, protocol)
    # The contract, as `depthbench run` checks it, before any measurement (e.g. float64 logits, which the attacks
    # cannot take): a model that fails raises ModelCheckFailed with the report, and nothing is recorded.
    require_passing([model_name], [task], protocol.model_overrides)
    model.to(device)

    def validate_only(model: Any) -> TrainResult:
        """Stands in for training: the record's validation metric of the submitted weights, nothing trained."""
        x_val, y_val = data.val.inputs().to(device), data.val.y.to(device)
        model.eval().float()
        batch = protocol.evaluation.eval_batch
        with torch.no_grad():
            val = (M.accuracy(model, x_val, y_val, batch_size=batch) if task.kind == "classification"
                   else M.mse(model, x_val, y_val, batch_size=batch))
        return TrainResult(epochs=0, train_seconds=0.0, epoch_seconds=0.0, best_epoch=0, val_metric=val,
                           peak_memory_mb=None)

    record = runs.run_one(protocol, task, data, model_name, seed, device, train_fn=validate_only, model=model)
    record.model = evaluated_key(model_name, sha)
    record.flags = sorted({*record.flags, EVALUATED_FLAG})
    record.provenance["checkpoint"] = {"file": Path(checkpoint).name, "sha256": sha}
    return record
