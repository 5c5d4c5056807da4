"""Compression by re-manifestation (Queiruga et al. 2020): fewer steps of the same scheme, kept apart from a cheaper
scheme, each chosen on the validation split.

The seed (000:484-493) manifests an RK4-trained ContinuousNet with FEWER STEPS after training (32-32-32 -> 11-11-11
and 6-6-6 with RK4-3/8). Here `continuousnet` (RK4, DEPTH elements on [0, DEPTH], DEPTH steps) is trained with the
study recipe; then, on the VALIDATION split only:
1. fewer steps: the fewest RK4 steps (1 .. DEPTH per stage) whose validation accuracy is at most 0.5 pt below the
   trained setting's (the trained setting itself when none is);
2. cheaper scheme: the setting of another scheme (Euler, midpoint, RK4-3/8 at 1 .. 16 steps) with the fewest rate
   evaluations (NFE) within 0.5 pt of the trained setting on validation; settings are tried in increasing NFE and the
   first NFE level that has one qualifying setting ends the search (its most accurate one on validation is taken).
The chosen settings are then measured once on the TEST set: accuracy, NFE, and whole-test-set throughput (the
settings alternated over `THROUGHPUT_ROUNDS` rounds after a warm-up, the median per setting, `common.study_clock`).
A `resnet` of DEPTH blocks (DEPTH evaluations), trained with the same recipe and seed, is the context arm.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.evaluation.metrics import accuracy_of, evaluate, forward_all
from benchmarks.studies.common import WIDTH, Start, begin, build_and_train, run_seeds, save, study_clock
from benchmarks.studies.registry import register_study
from zoo.integrate import Solver

STUDY = "compression"
MODEL = "continuousnet"
DEPTH = 8  # DEPTH + 1 hat functions: DEPTH elements, DEPTH RK4 steps (32 evaluations), like a ResNet of DEPTH blocks
TRAINED_SCHEME = "rk4"
OTHER_SCHEMES = ("euler", "midpoint", "rk4_38")
OTHER_STEPS = tuple(range(1, 17))
TOLERANCE = 0.005  # 0.5 pt of accuracy
EVAL_BATCH = 500
THROUGHPUT_ROUNDS = 5
PAPER = {
    "label": "Queiruga et al. 2020 (seed 000:486-493; CIFAR-10, their numbers)",
    "trained_accuracy": "ContinuousNet(RK4-classic) 3.19 M 32-32-32 93.57% 32.55 s",
    "fewer_steps_drop": "RK4-3/8 11-11-11 93.44% 11.06 s (drop 0.13 pt); RK4-3/8 6-6-6 92.28% 6.25 s (drop 1.29 pt)",
    "fewer_steps_speedup": "32.55 s / 11.06 s = 2.94; 32.55 s / 6.25 s = 5.21",
    "fewer_steps_nfe_ratio": "32/11 = 2.91; 32/6 = 5.33 (RK4 and RK4-3/8 both 4 stages)",
    "cheaper_scheme_drop": "Manifest as (Euler) 32-32-32 93.55% 8.93 s (drop 0.02 pt)",
    "cheaper_scheme_speedup": "32.55 s / 8.93 s = 3.64",
    "resnet_accuracy": "ResNet-200 (v2) (baseline) 3.19 M 33-33-33 93.84% (seed 000:470)",
}


@dataclasses.dataclass(frozen=True)
class Setting:
    scheme: str
    steps: int

    @property
    def nfe(self) -> int:
        """Rate evaluations of one forward (one ODE stage): steps x the scheme's Runge-Kutta stages."""
        return Solver(self.scheme, self.steps).fixed_cost

    def label(self) -> str:
        return f"{self.scheme} x{self.steps}"


def fewest_steps(val: dict[Setting, float], trained: Setting, tolerance: float = TOLERANCE) -> Setting:
    """The trained scheme's setting with the fewest steps whose validation accuracy is within `tolerance` of the
    trained setting's (the trained setting if none with fewer steps is)."""
    good = [s for s in val if s.scheme == trained.scheme and s.steps <= trained.steps
            and val[s] >= val[trained] - tolerance - 1e-12]
    return min(good, key=lambda s: s.steps)


def cheapest_other(candidates: Sequence[Setting], score: Callable[[Setting], float], reference: float,
                   tolerance: float = TOLERANCE) -> tuple[Setting | None, dict[Setting, float]]:
    """(the fewest-NFE setting of `candidates` whose validation accuracy `score(s)` is within `tolerance` of
    `reference`, the most accurate of that NFE level; None if none is; every score computed). Settings are scored in
    increasing NFE and the search stops after the first NFE level with a qualifying setting."""
    scores: dict[Setting, float] = {}
    for nfe in sorted({s.nfe for s in candidates}):
        level = [s for s in candidates if s.nfe == nfe]
        for setting in level:
            scores[setting] = score(setting)
        good = [s for s in level if scores[s] >= reference - tolerance - 1e-12]
        if good:
            return max(good, key=lambda s: (scores[s], -OTHER_SCHEMES.index(s.scheme))), scores
    return None, scores


def _manifest(model: nn.Module, setting: Setting) -> nn.Module:
    return model.manifest(setting.scheme, setting.steps)


def throughput(models: dict[Setting, nn.Module], x: torch.Tensor, clock: Callable[[], float],
               rounds: int = THROUGHPUT_ROUNDS) -> tuple[dict[Setting, float], dict[Setting, torch.Tensor]]:
    """Images per second of a whole pass over `x` (batches of EVAL_BATCH) for every setting, the settings alternated
    over `rounds` rounds after a warm-up batch each, the median per setting; and each setting's outputs."""
    with torch.no_grad():
        for model in models.values():
            model(x[:EVAL_BATCH])
    seconds: dict[Setting, list[float]] = {s: [] for s in models}
    outputs: dict[Setting, torch.Tensor] = {}
    for _ in range(rounds):
        for setting, model in models.items():
            began = clock()
            outputs[setting] = forward_all(model, x, EVAL_BATCH)[0]
            seconds[setting].append(clock() - began)
    return {s: len(x) / statistics.median(t) for s, t in seconds.items()}, outputs


NAMES = ("fewer_steps_drop", "fewer_steps_nfe_ratio", "fewer_steps_speedup", "cheaper_scheme_drop",
         "cheaper_scheme_nfe_ratio", "cheaper_scheme_speedup", "trained_accuracy", "resnet_accuracy")


def one_seed(start: Start, seed: int) -> dict[str, Any]:
    """Train both models of one seed, choose on validation, measure on test: per-seed values and rows."""
    task, data, recipe, device = start.task, start.data, start.recipe, start.device
    clock = study_clock(device)
    model, trained_run = build_and_train(MODEL, task, data, recipe, seed, device, width=WIDTH, depth=DEPTH,
                                         n_basis=DEPTH + 1, n_steps=DEPTH, scheme=TRAINED_SCHEME)
    x_val, y_val = data.val.inputs().to(device), data.val.y.to(device)

    nfe: dict[Setting, float] = {}  # as counted by the model (the search orders by `Setting.nfe`, the same count)

    def score(setting: Setting) -> float:
        accuracy, nfe[setting] = evaluate(_manifest(model, setting), x_val, y_val, kind="classification",
                                          batch_size=EVAL_BATCH)
        return accuracy

    trained = Setting(TRAINED_SCHEME, DEPTH)
    val = {Setting(TRAINED_SCHEME, k): score(Setting(TRAINED_SCHEME, k)) for k in range(1, DEPTH + 1)}
    fewer = fewest_steps(val, trained)
    others = [Setting(s, k) for s in OTHER_SCHEMES for k in OTHER_STEPS]
    cheaper, other_val = cheapest_other(others, score, val[trained])
    val.update(other_val)
    chosen = {"trained": trained, "fewer_steps": fewer, "cheaper_scheme": cheaper or trained}
    timed = {s: _manifest(model, s) for s in dict.fromkeys(chosen.values())}
    x_test, y_test = data.test.inputs().to(device), data.test.y.to(device)
    speed, outputs = throughput(timed, x_test, clock)
    test = {s: accuracy_of(out, y_test) for s, out in outputs.items()}
    resnet, _ = build_and_train("resnet", task, data, recipe, seed, device, width=WIDTH, depth=DEPTH)
    resnet_accuracy = evaluate(resnet, x_test, y_test, kind="classification", batch_size=EVAL_BATCH)[0]
    values = {"trained_accuracy": test[trained], "resnet_accuracy": resnet_accuracy}
    for arm in ("fewer_steps", "cheaper_scheme"):
        setting = chosen[arm]
        values[f"{arm}_drop"] = test[trained] - test[setting]
        values[f"{arm}_nfe_ratio"] = nfe[trained] / nfe[setting]
        # The trained setting chosen again is the same computation: its speed-up is 1 by identity, not a measurement.
        values[f"{arm}_speedup"] = 1.0 if setting == trained else speed[setting] / speed[trained]
    roles = {s: [arm for arm, c in chosen.items() if c == s] for s in val}
    rows = [{"seed": seed, "setting": s.label(), "scheme": s.scheme, "steps": s.steps, "nfe": nfe[s],
             "val_accuracy": val[s], "chosen_as": "+".join(roles[s]) or None, "test_accuracy": test.get(s),
             "images_per_second": speed.get(s)} for s in sorted(val, key=lambda s: (s.nfe, s.scheme))]
    rows.append({"seed": seed, "setting": f"resnet x{DEPTH}", "scheme": "resnet", "steps": DEPTH, "nfe": DEPTH,
                 "val_accuracy": None, "chosen_as": "context", "test_accuracy": resnet_accuracy,
                 "images_per_second": None})
    extra = {"cheaper_scheme_found": cheaper is not None, "trained_best_epoch": trained_run.best_epoch}
    return {"values": values, "rows": rows, "extra": extra}


@register_study("compression", title="Compression by re-manifestation: fewer steps vs a cheaper scheme, chosen on "
                "validation (Queiruga et al. 2020)", summary="an RK4-trained ContinuousNet re-run with fewer RK4 steps "
                "and, apart, with the cheapest other scheme within 0.5 pt on validation: test accuracy drop, NFE "
                "ratio and throughput speed-up", claims=("queiruga-compression",), task="fashion-mnist",
                seeds=(0, 1, 2, 3, 4), options=("workers",))
def run(task_name: str, seeds: Sequence[int], results: Path, *, device: torch.device | None = None,
        limit: int | None = None, figure: str | None = None, workers: int = 1) -> Path:
    """Every seed; write `results/compression/<task>.json`."""
    start = begin(task_name, seeds, device, limit)
    outcomes = run_seeds(one_seed, start, limit=limit, workers=workers)
    per_seed = {name: [o["values"][name] for o in outcomes] for name in NAMES}
    details = {"columns": ["seed", "setting", "scheme", "steps", "nfe", "val_accuracy", "chosen_as", "test_accuracy",
                           "images_per_second"],
               "model": MODEL, "width": WIDTH, "depth": DEPTH, "n_basis": DEPTH + 1, "trained": f"{TRAINED_SCHEME} "
               f"x{DEPTH}", "recipe": dataclasses.asdict(start.recipe), "tolerance": TOLERANCE,
               "fewer_steps_grid": f"{TRAINED_SCHEME} x1..x{DEPTH}", "other_schemes": list(OTHER_SCHEMES),
               "other_steps": [OTHER_STEPS[0], OTHER_STEPS[-1]], "throughput_rounds": THROUGHPUT_ROUNDS,
               "eval_batch": EVAL_BATCH, "workers": workers,
               "clock": "process CPU time (one torch thread)" if start.device.type == "cpu" else
               "wall time, device synchronised",
               "per_seed": {str(seed): o["extra"] for seed, o in zip(start.seeds, outcomes)},
               "paper": PAPER, "seconds": round(time.perf_counter() - start.clock, 1),
               "note": f"Chosen on the validation split (within {TOLERANCE * 100:g} pt of the trained setting), "
                       "measured on the test set: *_drop = trained - chosen test accuracy, *_nfe_ratio = trained / "
                       "chosen NFE (1 when nothing cheaper qualified), *_speedup = chosen / trained whole-test-set "
                       f"throughput (median of {THROUGHPUT_ROUNDS} interleaved rounds; 1 when the trained setting is "
                       "chosen). Rows: every setting scored on validation (other schemes in increasing NFE until one "
                       "qualified), test columns for the chosen ones only. The paper's column is CIFAR-10"}
    rows = [row for o in outcomes for row in o["rows"]]
    return save(results, study=STUDY, task=start.task.name, seeds=start.seeds, per_seed=per_seed, rows=rows,
                provenance=start.provenance, details=details, figure=figure)
