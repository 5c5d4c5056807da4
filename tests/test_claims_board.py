"""leaderboards/claims.md and the depth-transfer verdict: every rule's verdicts from fixture study files and records."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest

from benchmarks.cli import main
from benchmarks.reporting import claims_board as cb
from benchmarks.reporting import depth_transfer as dtv
from benchmarks.reporting.paper_claims import CLAIMS
from benchmarks.store.records import Record, save_record
from benchmarks.store.studies import read_study, write_study

STANDARD = {"name": "standard", "version": 3, "hash": "5555aaaa5555"}
SMOKE = {"name": "smoke", "version": 2, "hash": "e84f18562809"}


def study(root: Path, name: str, values: dict[str, float], *, tier: str = "cpu-study", seeds: int = 3,
          task: str = "digits") -> None:
    """A study file whose every quantity has the same value in each seed (plus a tiny spread)."""
    per_seed = {k: [v * (1 + 1e-3 * i) for i in range(seeds)] for k, v in values.items()}
    write_study(root, study=name, task=task, tier=tier, seeds=list(range(seeds)), per_seed=per_seed, rows=[],
                provenance={"command": "fixture"}, figure=f"leaderboards/{name}/{task}.png")


def outcome(root: Path, key: str) -> cb.Outcome:
    return dict((c.key, o) for c, o in cb.evaluate(root))[key]


def test_every_claim_awaits_data_in_an_empty_store(tmp_path: Path) -> None:
    results = cb.evaluate(tmp_path)
    assert [c.key for c, _ in results] == list("abcdefg") == [c.key for c in CLAIMS]
    assert all(o.verdict == cb.AWAITING for _, o in results)
    assert "depthbench study refinement" in outcome(tmp_path, "c").note


@pytest.mark.parametrize(("values", "verdict"), [
    ({"trained_accuracy": 0.96, "compressed_accuracy": 0.955, "latency_speedup": 1.7, "nfe_ratio": 1.7}, "reproduced"),
    ({"trained_accuracy": 0.96, "compressed_accuracy": 0.90, "latency_speedup": 1.7, "nfe_ratio": 1.7}, "partly"),
    ({"trained_accuracy": 0.96, "compressed_accuracy": 0.96, "latency_speedup": 1.0, "nfe_ratio": 1.0},
     "not reproduced"),
])
def test_compression_rule(tmp_path: Path, values: dict[str, float], verdict: str) -> None:
    study(tmp_path, "compression", values)
    o = outcome(tmp_path, "b")
    assert o.verdict == verdict and o.n == 3 and o.tier == "cpu-study" and "n=3" in o.ours


@pytest.mark.parametrize(("values", "verdict"), [
    ({"refined_accuracy": 0.96, "full_accuracy": 0.964, "refined_train_seconds": 12, "full_train_seconds": 25},
     "reproduced"),
    ({"refined_accuracy": 0.78, "full_accuracy": 0.964, "refined_train_seconds": 12, "full_train_seconds": 25},
     "partly"),
    ({"refined_accuracy": 0.96, "full_accuracy": 0.96, "refined_train_seconds": 25, "full_train_seconds": 25},
     "not reproduced"),
])
def test_refinement_rule(tmp_path: Path, values: dict[str, float], verdict: str) -> None:
    study(tmp_path, "refinement", values)
    assert outcome(tmp_path, "c").verdict == verdict


MEMORY = {"direct_peak_bytes_slope": 1e5, "adjoint_peak_bytes_slope": 1e3, "odenet_params": 2.2e5,
          "resnet_params": 6e5, "odenet_accuracy": 0.99, "resnet_accuracy": 0.995}


@pytest.mark.parametrize(("changes", "verdict"), [
    ({}, "reproduced"),
    ({"adjoint_peak_bytes_slope": 1e5}, "partly"),
    ({"adjoint_peak_bytes_slope": 1e5, "odenet_params": 7e5, "odenet_accuracy": 0.5}, "not reproduced"),
])
def test_memory_rule(tmp_path: Path, changes: dict[str, float], verdict: str) -> None:
    study(tmp_path, "memory", {**MEMORY, **changes})
    o = outcome(tmp_path, "d")
    assert o.verdict == verdict
    assert ("O(1) adjoint memory" in o.note) == ("adjoint_peak_bytes_slope" in changes)


STIFF = {"plain_accuracy": 0.9, "penalised_accuracy": 0.895, "plain_robust_accuracy": 0.3,
         "penalised_robust_accuracy": 0.35, "plain_stiffness": 16.0, "penalised_stiffness": 5.0,
         "plain_transfer_error": 0.2, "penalised_transfer_error": 0.25}


@pytest.mark.parametrize(("changes", "verdict"), [
    ({}, "reproduced"), ({"penalised_accuracy": 0.8}, "partly"), ({"penalised_stiffness": 17.0}, "not reproduced")])
def test_stiffness_rule(tmp_path: Path, changes: dict[str, float], verdict: str) -> None:
    study(tmp_path, "stiffness", {**STIFF, **changes})
    assert outcome(tmp_path, "g").verdict == verdict


def test_thin_or_pipeline_check_studies_give_no_verdict(tmp_path: Path) -> None:
    study(tmp_path, "compression", {"trained_accuracy": 0.96, "compressed_accuracy": 0.955, "latency_speedup": 1.7,
                                    "nfe_ratio": 1.7}, seeds=2)
    assert outcome(tmp_path, "b").verdict == cb.AWAITING and "2 seeds" in outcome(tmp_path, "b").note
    study(tmp_path, "refinement", {"refined_accuracy": 0.96, "full_accuracy": 0.964, "refined_train_seconds": 12,
                                   "full_train_seconds": 25}, tier="smoke")
    assert outcome(tmp_path, "c").verdict == cb.AWAITING and "pipeline check" in outcome(tmp_path, "c").note
    study(tmp_path, "stiffness", {"plain_accuracy": 0.9})  # a file lacking the rule's quantities
    assert outcome(tmp_path, "g").verdict == cb.AWAITING and "penalised_accuracy" in outcome(tmp_path, "g").note


def convergence(root: Path, euler_dips: bool, rk4_dips: bool) -> None:
    values = {f"{t}/{e}/dip": 0.0 for t in ("euler", "midpoint", "rk4") for e in ("euler", "midpoint", "rk4")}
    values.update({"euler/euler/dip": float(euler_dips), "rk4/rk4/dip": float(rk4_dips),
                   "euler/euler/dip_ratio": 100.0, "rk4/rk4/refine_ratio": 3.0 if rk4_dips else 1.0})
    per_seed = {k: [v] * 3 for k, v in values.items()}
    write_study(root, study="convergence", task="pendulum", tier="cpu-study", seeds=[0, 1, 2], per_seed=per_seed,
                rows=[], provenance={}, figure="leaderboards/convergence/pendulum.png")


def image_study(root: Path, cn_transfers: bool, resnet_dips: bool, tier: str = "standard") -> None:
    per_seed = {"continuousnet/transfers": [float(cn_transfers)] * 3, "resnet/dip": [float(resnet_dips)] * 3}
    write_study(root, study="depth-transfer", task="fashion-mnist", tier=tier, seeds=[0, 1, 2], per_seed=per_seed,
                rows=[], provenance={}, figure="leaderboards/depth-transfer/fashion-mnist.png")


def test_transfer_claim_combines_pendulum_and_image_evidence(tmp_path: Path) -> None:
    convergence(tmp_path, euler_dips=True, rk4_dips=False)
    o = outcome(tmp_path, "a")
    assert o.verdict == "partly" and "image tasks: awaiting data" in o.note  # pendulum alone is not the whole claim
    assert o.figure == "leaderboards/convergence/pendulum.png"
    image_study(tmp_path, True, True, tier="smoke")
    smoke = outcome(tmp_path, "a")
    assert smoke.verdict == "partly"  # a smoke study decides nothing, it is only shown
    assert "pipeline check only (smoke tier, fashion-mnist, n=3, not for citing): continuousnet transfers" in smoke.note
    assert "observed order per eval scheme: euler n/a" in smoke.ours
    image_study(tmp_path, True, True)
    assert outcome(tmp_path, "a").verdict == "reproduced"
    image_study(tmp_path, False, False)
    assert outcome(tmp_path, "a").verdict == "partly"
    convergence(tmp_path, euler_dips=False, rk4_dips=True)
    assert outcome(tmp_path, "a").verdict == "not reproduced"


def record(root: Path, model: str, task: str, seed: int, metrics: dict[str, float], protocol: dict[str, Any],
           transfer: list[dict[str, Any]] | None = None) -> None:
    save_record(root, Record(model=model, task=task, seed=seed, protocol=protocol, metrics=metrics,
                             depth_transfer=transfer or []))


@pytest.mark.parametrize(("node", "verdict"), [
    ({"noise@0.1": 0.9, "fgsm@0.1": 0.5}, "reproduced"), ({"noise@0.1": 0.9, "fgsm@0.1": 0.1}, "partly"),
    ({"noise@0.1": 0.5, "fgsm@0.1": 0.1}, "not reproduced")])
def test_robustness_claim_needs_standard_records(tmp_path: Path, node: dict[str, float], verdict: str) -> None:
    for seed in range(3):
        record(tmp_path, "resnet", "mnist", seed, {"accuracy": 0.99, "noise@0.1": 0.8, "fgsm@0.1": 0.3}, STANDARD)
        record(tmp_path, "neural-ode", "mnist", seed, {"accuracy": 0.99, **node}, STANDARD)
    o = outcome(tmp_path, "e")
    assert o.verdict == verdict and o.tier == "standard" and o.n == 3


@pytest.mark.parametrize(("inres", "verdict"), [
    ({"accuracy": 0.9228, "pgd@0.0313725": 0.3174}, "reproduced"),  # the paper's own numbers
    ({"accuracy": 0.85, "pgd@0.0313725": 0.3174}, "partly"),
    ({"accuracy": 0.93, "pgd@0.0313725": 0.05}, "not reproduced")])
def test_inresnet_claim(tmp_path: Path, inres: dict[str, float], verdict: str) -> None:
    for seed in range(3):
        record(tmp_path, "resnet", "cifar10", seed, {"accuracy": 0.9358, "pgd@0.0313725": 0.056}, STANDARD)
        record(tmp_path, "inresnet", "cifar10", seed, inres, STANDARD)
    assert outcome(tmp_path, "f").verdict == verdict


def test_smoke_records_are_shown_as_pipeline_figures_never_judged(tmp_path: Path) -> None:
    record(tmp_path, "resnet", "digits", 0, {"accuracy": 0.685, "pgd@0.05": 0.61}, SMOKE)
    record(tmp_path, "inresnet", "digits", 0, {"accuracy": 0.63, "pgd@0.05": 0.50}, SMOKE)
    o = outcome(tmp_path, "f")
    assert o.verdict == cb.AWAITING
    assert "pipeline check only (smoke tier, digits, n=1, not for citing)" in o.note and "68.50" in o.note


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


def test_claims_command_writes_depth_transfer_and_claims(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results, out = tmp_path / "results", tmp_path / "boards"
    for seed in range(3):
        record(results, "continuousnet", "fashion-mnist", seed, {"accuracy": 0.9}, STANDARD, LEARNED_ODE)
        record(results, "resnet", "fashion-mnist", seed, {"accuracy": 0.9}, STANDARD, DISCRETE_MAP)
    record(results, "resnet", "fashion-mnist", 0, {"accuracy": 0.5}, SMOKE, LEARNED_ODE)  # the standard tier wins
    record(results, "resnet", "digits", 0, {"accuracy": 0.5}, SMOKE, DISCRETE_MAP)
    convergence(results, euler_dips=True, rk4_dips=False)
    monkeypatch.chdir(tmp_path)  # figure paths are kept relative to the repository root
    assert main(["claims", "--results", "results", "--out", "boards"]) == 0
    fm = read_study(results / "depth-transfer" / "fashion-mnist.json")
    assert fm["tier"] == "standard" and fm["seeds"] == [0, 1, 2]
    assert fm["summary"]["continuousnet/transfers"]["mean"] == 1 and fm["summary"]["resnet/dip"]["mean"] == 1
    md = (out / "depth-transfer" / "fashion-mnist.md").read_text()
    assert "| continuousnet | 3 |" in md and "| transfers (n=3, standard) |" in md and "| dips (n=3, standard) |" in md
    assert "not for citing" not in md
    assert "smoke v2 (e84f18562809)" in md  # the other protocol is named, not mixed in
    digits = (out / "depth-transfer" / "digits.md").read_text()
    assert "Pipeline check, not for citing" in digits and "| resnet | 1 |" in digits
    assert "| dips (n=1, smoke: pipeline check) |" in digits and "+20.0 |" in digits  # one seed: no ± spread
    assert (out / "depth-transfer" / "digits.png").stat().st_size > 0
    claims_md = (out / "claims.md").read_text()
    assert claims_md.count("\n| (") == 7
    assert "| **reproduced** |" in claims_md  # (a): pendulum and fashion-mnist (standard, 3 seeds) agree
    assert "[pendulum.png](../leaderboards/convergence/pendulum.png)" in claims_md
    rows = list(csv.DictReader(io.StringIO((out / "claims.csv").read_text())))
    assert [r["key"] for r in rows] == list("abcdefg") and rows[0]["verdict"] == "reproduced"
    assert rows[1]["verdict"] == "awaiting data" and rows[1]["n"] == ""


def test_a_study_without_a_figure_links_its_table_or_file(tmp_path: Path) -> None:
    results = tmp_path / "results"
    values = {"refined_accuracy": 0.96, "full_accuracy": 0.964, "refined_train_seconds": 12, "full_train_seconds": 25}
    write_study(results, study="refinement", task="digits", tier="cpu-study", seeds=[0, 1, 2],
                per_seed={k: [v] * 3 for k, v in values.items()}, rows=[], provenance={})
    assert outcome(results, "c").figure == f"{results.as_posix()}/refinement/digits.json"
    (tmp_path / "leaderboards" / "refinement").mkdir(parents=True)
    (tmp_path / "leaderboards" / "refinement" / "digits.md").write_text("# table\n")
    assert outcome(results, "c").figure == "leaderboards/refinement/digits.md"
