"""The depth-transfer rendering of tier records (benchmarks/reporting/depth_transfer.py): per-seed verdicts from a
record's depth-transfer grid, and leaderboards/depth-transfer/<task>.* written from the records alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks.reporting import depth_transfer as dtv
from benchmarks.store.records import Record, save_record

STANDARD = {"name": "standard", "version": 3, "hash": "5555aaaa5555"}
SMOKE = {"name": "smoke", "version": 2, "hash": "e84f18562809"}


def record(root: Path, model: str, task: str, seed: int, metrics: dict[str, float], protocol: dict[str, Any],
           transfer: list[dict[str, Any]] | None = None) -> None:
    save_record(root, Record(model=model, task=task, seed=seed, protocol=protocol, metrics=metrics,
                             depth_transfer=transfer or []))


# -------------------------------------------------------------------------------------- depth-transfer verdict

def grid(trained: tuple[str, int], acc: dict[tuple[str, int], float], t1: float = 3.0) -> list[dict[str, Any]]:
    return [{"scheme": s, "n_steps": n, "dt": t1 / n, "accuracy": a, "factor": n / trained[1], "nfe": n,
             "error": 0.1, "latency_ms": 1.0, "rtol": None, "trained": (s, n) == trained} for (s, n), a in acc.items()]


LEARNED_ODE = grid(("rk4", 4), {("rk4", 4): 0.90, ("rk4", 8): 0.905, ("rk4", 2): 0.7, ("euler", 4): 0.5,
                                ("euler", 8): 0.895, ("midpoint", 8): 0.90})
DISCRETE_MAP = grid(("euler", 4), {("euler", 4): 0.90, ("euler", 8): 0.80, ("euler", 16): 0.7, ("rk4", 4): 0.6})
NEITHER = grid(("rk4", 4), {("rk4", 4): 0.90, ("rk4", 8): 0.90, ("euler", 8): 0.6})


def test_seed_verdicts() -> None:
    ode = dtv.seed_verdict(LEARNED_ODE)
    assert ode["transfers"] and not ode["dip"] and ode["refine_drop"] == pytest.approx(-0.5)
    assert ode["scheme_drop"] == pytest.approx(0.5)  # euler at Δt/2, not at the trained Δt where it loses 40 pt
    disc = dtv.seed_verdict(DISCRETE_MAP)
    assert disc["dip"] and not disc["transfers"] and disc["refine_drop"] == pytest.approx(20)
    assert dtv.model_verdict([ode, ode, disc]) == "transfers"
    assert dtv.model_verdict([disc, disc, ode]) == "dips"
    assert dtv.model_verdict([dtv.seed_verdict(NEITHER)]) == "does not transfer"
    adaptive = [{"scheme": "dopri5", "n_steps": None, "dt": None, "accuracy": 0.46, "trained": True},
                {"scheme": "euler", "n_steps": 8, "dt": 0.125, "accuracy": 0.45, "trained": False}]
    verdict = dtv.seed_verdict(adaptive)
    assert verdict["transfers"] and verdict["dip"] is None  # 0.46 - 0.45 is 1 point: within, despite float error
    with pytest.raises(ValueError, match="trained setting"):
        dtv.seed_verdict(LEARNED_ODE[1:])


def test_depth_transfer_tables_come_from_the_records_alone(tmp_path: Path) -> None:
    results, out = tmp_path / "results", tmp_path / "boards"
    for seed in range(3):
        record(results, "continuousnet", "fashion-mnist", seed, {"accuracy": 0.9}, STANDARD, LEARNED_ODE)
        record(results, "resnet", "fashion-mnist", seed, {"accuracy": 0.9}, STANDARD, DISCRETE_MAP)
    record(results, "resnet", "fashion-mnist", 0, {"accuracy": 0.5}, SMOKE, LEARNED_ODE)  # the standard tier wins
    record(results, "resnet", "digits", 0, {"accuracy": 0.5}, SMOKE, DISCRETE_MAP)
    written = dtv.write(results, out, {"command": "fixture", "git_commit": "abc"})
    assert not (results / "depth-transfer").exists()  # a rendering of records writes no study file
    md = (out / "fashion-mnist.md").read_text()
    assert out / "fashion-mnist.md" in written
    assert "| continuousnet | 3 |" in md and "| transfers (n=3, standard) |" in md and "| dips (n=3, standard) |" in md
    assert "not for citing" not in md
    assert "smoke v2 (e84f18562809)" in md  # the other protocol is named, not mixed in
    digits = (out / "digits.md").read_text()
    assert "Pipeline check, not for citing" in digits and "| resnet | 1 |" in digits
    assert "| dips (n=1, smoke: pipeline check) |" in digits and "+20.0 |" in digits  # one seed: no ± spread
    assert (out / "digits.png").stat().st_size > 0
