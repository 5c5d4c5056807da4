"""Training checkpoints: everything the loop needs to continue after an interruption as if there had been none.

`train(..., checkpoint=TrainingCheckpoint(path, identity))` saves after every epoch the model, optimiser and LR
schedule, the best-validation weights so far, the history, and every random generator the loop or a model may draw
from (Python's, numpy's, torch's global CPU and CUDA ones, and the loop's own data-order and augmentation
generators). A run that is killed (Slurm preemption or time limit, a crashed node, Ctrl-C) and started again with the
same checkpoint continues from its last complete epoch, and its weights and record are those of an uninterrupted run,
bit for bit on the same machine, except for timings.

Files are written atomically (a reader sees the previous checkpoint or the new one) and read with
`torch.load(weights_only=True)`: only tensors and plain containers, so a checkpoint cannot run code. Generator
states are therefore stored as tensors and lists, never as numpy arrays or pickled objects.

Adoption: an identity with a "training" key (the tier's training hash, `Protocol.training_hash`) and a "protocol" key
(its whole hash) lets a run adopt a *finished* checkpoint of the same training kept under another protocol hash
(`depthbench run --keep-checkpoints` under an earlier tier version that differed only in what it measures): the copy
takes the new identity and remembers where it came from, and training then finds nothing left to do.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.io import atomic_output

FORMAT = 1


@dataclass
class Resumed:
    """The loop's own state at the end of the checkpointed epoch (what `train` needs besides the restored
    model, optimiser, schedule and generators)."""

    epoch: int
    best_metric: float | None
    best_state: dict[str, torch.Tensor] | None
    best_epoch: int
    history: list[dict[str, float]]
    epoch_times: list[float]
    train_seconds: float  # time spent training before the interruption


@dataclass
class TrainingCheckpoint:
    """Where one run's checkpoint lives and whose it is: `identity` (model, task, protocol hash, seed, ...) is
    stored in the file, and a file of another identity is ignored rather than resumed from."""

    path: Path
    identity: dict[str, Any] = field(default_factory=dict)

    def save(self, epoch: int, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
             generators: dict[str, torch.Generator], best_metric: float | None,
             best_state: dict[str, torch.Tensor] | None, best_epoch: int, history: list[dict[str, float]],
             epoch_times: list[float], train_seconds: float) -> None:
        state = {
            "format": FORMAT, "identity": self.identity, "epoch": epoch,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "best_metric": best_metric, "best_state": best_state, "best_epoch": best_epoch,
            "history": history, "epoch_times": epoch_times, "train_seconds": train_seconds,
            "rng": _rng_state(generators),
        }
        with atomic_output(self.path) as tmp:
            torch.save(state, tmp)

    def restore(self, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                generators: dict[str, torch.Generator], device: torch.device) -> Resumed | None:
        """Load the checkpoint into the given objects and return the loop's state; None when there is no usable
        checkpoint (none, unreadable, or another run's), in which case nothing was changed."""
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location=device, weights_only=True)
        except Exception as error:  # noqa: BLE001 - a damaged checkpoint costs the epochs it held, not the run
            print(f"depthbench: ignoring unreadable checkpoint {self.path} ({type(error).__name__}: {error}); "
                  "training from the start", file=sys.stderr, flush=True)
            return None
        if state.get("format") != FORMAT or state.get("identity") != self.identity:
            print(f"depthbench: ignoring checkpoint {self.path}: it belongs to {state.get('identity')}, not to "
                  f"{self.identity}; training from the start", file=sys.stderr, flush=True)
            return None
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"], generators)
        print(f"depthbench: resuming training from {self.path} after epoch {state['epoch']}", file=sys.stderr,
              flush=True)
        return Resumed(epoch=state["epoch"], best_metric=state["best_metric"], best_state=state["best_state"],
                       best_epoch=state["best_epoch"], history=state["history"], epoch_times=state["epoch_times"],
                       train_seconds=state["train_seconds"])

    def finished_twin(self, candidates: Iterable[Path], device: torch.device | str = "cpu"
                      ) -> tuple[Path, dict[str, Any]] | None:
        """The first of `candidates` that is a finished checkpoint of the same training as this one (identity equal
        but for "protocol", "training" present, every epoch done, best weights kept): its path and its state.
        Unreadable or foreign candidates are passed over."""
        if "training" not in self.identity or "epochs" not in self.identity:
            return None
        same = {k: v for k, v in self.identity.items() if k != "protocol"}
        for candidate in candidates:
            if not Path(candidate).is_file():
                continue
            try:
                state = torch.load(candidate, map_location=device, weights_only=True)
            except Exception:  # noqa: BLE001 - a damaged file is simply not a twin
                continue
            theirs = {k: v for k, v in (state.get("identity") or {}).items() if k != "protocol"}
            if state.get("format") == FORMAT and theirs == same and state.get("epoch") == self.identity["epochs"] \
                    and state.get("best_state"):
                return Path(candidate), state
        return None

    def adopt(self, candidates: Iterable[Path]) -> dict[str, Any] | None:
        """Without a checkpoint of its own, copy the first finished twin among `candidates` (`finished_twin`) here
        under this identity, so that training resumes after its last epoch with its weights. Returns where the
        weights came from ({"checkpoint": path, "protocol": its hash}), or None when nothing was adopted."""
        if self.path.exists():
            return None
        found = self.finished_twin(candidates)
        if found is None:
            return None
        source, state = found
        origin = {"checkpoint": str(source), "protocol": state["identity"].get("protocol")}
        state = {**state, "identity": self.identity, "adopted_from": origin}
        with atomic_output(self.path) as tmp:
            torch.save(state, tmp)
        print(f"depthbench: adopting the finished training of {source} (same training hash)", file=sys.stderr,
              flush=True)
        return origin

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """Every generator as tensors and plain lists (loadable with weights_only=True)."""
    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(words), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generators": {name: generator.get_state() for name, generator in generators.items()},
    }


def _set_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    version, words, gauss = state["python"]
    random.setstate((version, tuple(words), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    for name, generator in generators.items():
        generator.set_state(state["generators"][name].cpu())
