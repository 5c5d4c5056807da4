"""What the command-line tests share: instant fake records, and a snapshot of a folder's files (to show that a
command left them alone). The fixtures built on them (`fake_runs`, `repo`) are in conftest.py."""

from __future__ import annotations

from pathlib import Path

import zoo
from benchmarks.store.records import Record


def fake_record(protocol, task: str, model: str, seed: int, accuracy: float = 0.6, failed: bool = False) -> Record:
    record = Record(model=model, task=task, seed=seed, protocol=protocol.header(task),
                    metrics={} if failed else {"accuracy": accuracy, "val_accuracy": accuracy},
                    card=zoo.model_card(model).to_dict(), provenance={"phase_seconds": {"train": 0.01}})
    if failed:
        record.status, record.error, record.flags = "failed", "TrainingDiverged: loss is nan at epoch 1", ["diverged"]
    return record


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}
