"""The papers' claims (benchmarks/reporting/paper_claims/): quotes verbatim from the seeds, verdicts from intervals,
each rule shown giving every verdict on fixture study files and records, and `depthbench claims` end to end."""

from __future__ import annotations

import csv
import io
import math
import statistics
from pathlib import Path

import pytest

from benchmarks.cli import main
from benchmarks.protocols import PROTOCOLS
from benchmarks.reporting.paper_claims import board
from benchmarks.reporting.paper_claims.declared import CLAIMS
from benchmarks.reporting.paper_claims.rules import (
    AWAITING,
    INCONCLUSIVE,
    NOT_REPRODUCED,
    PARTLY,
    REPRODUCED,
    combine,
    correlation_interval,
    greater,
    less,
    ratio_interval,
    t_interval,
    within,
)
from benchmarks.reporting.paper_claims.sources import SOURCES, all_quotes, load_pinned, pinned_lines, seeds_dir
from benchmarks.store.records import Record, save_record
from benchmarks.store.studies import write_study
from benchmarks.studies.registry import all_studies

CPU = PROTOCOLS["cpu"].header("fashion-mnist")  # the current definition: only its records are evidence


def test_every_quote_stands_verbatim_on_its_pinned_line() -> None:
    """Everywhere, CI included: the seeds do not travel with the repository, their quoted lines do."""
    pinned = load_pinned()
    assert {source.seed_file for source in SOURCES} <= set(pinned), "a source has no pinned line"
    for quote in all_quotes():
        quote.check_pinned(pinned)  # raises, naming the line as pinned


def test_the_pinned_lines_are_the_seeds_own() -> None:
    """Where the seed talks are on disk: every quote on its line, and quoted_lines.json exactly what they hold."""
    folder = seeds_dir()
    if folder is None:
        pytest.skip("the seed talks are not on disk (../shared/seeds or $DEPTHBENCH_SEEDS); the pinned lines stand in")
    for source in SOURCES:
        assert (folder / source.seed_file).is_file(), source.seed_file
    for quote in all_quotes():
        quote.check(folder)  # raises, naming the line where the text really is
    assert pinned_lines(folder, all_quotes()) == load_pinned(), (
        "quoted_lines.json is stale: python -m benchmarks.reporting.paper_claims.sources SEEDS_DIR")


def test_a_misquoted_line_is_caught(tmp_path: Path) -> None:
    (tmp_path / "s.txt").write_text("first\nthe claim, verbatim\n", encoding="utf-8")
    from benchmarks.reporting.paper_claims.sources import Quote, Source

    source = Source("s.txt", "talk", "paper", "https://example.org")
    Quote(source, 2, "claim, verbatim").check(tmp_path)
    with pytest.raises(ValueError, match=r"not on line 1 \(found on \[2\]\)"):
        Quote(source, 1, "claim, verbatim").check(tmp_path)
    with pytest.raises(ValueError, match="nowhere"):
        Quote(source, 2, "paraphrased from memory").check(tmp_path)


def test_claims_and_studies_name_each_other() -> None:
    studies = all_studies()
    keys = [c.key for c in CLAIMS]
    assert len(set(keys)) == len(keys)
    for claim in CLAIMS:
        for effect in (*(p.effect for p in claim.parts), *claim.context):
            if effect.study is not None:
                assert effect.study in studies, f"{claim.key}: no registered study {effect.study!r}"
                assert claim.key in studies[effect.study].claims, f"{effect.study} does not declare {claim.key}"
                assert effect.command == f"depthbench study {effect.study}"
    for name, spec in studies.items():
        assert set(spec.claims) <= set(keys), f"{name} serves an undeclared claim"


# --- intervals and rules -----------------------------------------------------------------------------------------


def test_t_interval_of_three_seeds() -> None:
    i = t_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t(0.975, 2) x sd / sqrt(n)
    assert i.mean == 2.0 and i.low == pytest.approx(2 - half) and i.high == pytest.approx(2 + half) and i.n == 3
    single = t_interval([0.5])
    assert single.low == -math.inf and single.high == math.inf
    r = ratio_interval([2.0, 2.0, 2.0])
    assert r.mean == pytest.approx(2.0) and r.low == pytest.approx(2.0) and r.high == pytest.approx(2.0)
    with pytest.raises(ValueError):
        ratio_interval([1.0, -1.0])


def test_correlation_interval_stays_within_minus_one_and_one() -> None:
    values = [1.0, 0.83, -0.14]  # a rank correlation over a few epochs is often exactly 1
    t = t_interval(values)
    assert t.high > 1.0  # on r itself the t interval leaves the range a correlation can take
    c = correlation_interval(values)
    assert c.mean == pytest.approx(statistics.fmean(values)) and c.low == pytest.approx(t.low) and c.high == 1.0
    assert correlation_interval([-1.0, -1.0, -1.0]).low == -1.0
    with pytest.raises(ValueError):
        correlation_interval([1.5, 0.2])


@pytest.mark.parametrize(("rule", "values", "verdict"), [
    (greater(0.0, ""), [0.02, 0.03, 0.025], REPRODUCED),
    (greater(0.0, ""), [-0.02, -0.03, -0.025], NOT_REPRODUCED),
    (greater(0.0, ""), [-0.02, 0.03, 0.01], INCONCLUSIVE),  # straddles 0
    (less(1.0, ""), [0.5, 0.6, 0.55], REPRODUCED),
    (within(-0.01, 0.01, ""), [0.001, -0.002, 0.0], REPRODUCED),
    (within(-0.01, 0.01, ""), [0.05, 0.06, 0.055], NOT_REPRODUCED),
    (within(-0.01, 0.01, ""), [0.005, 0.009, 0.02], INCONCLUSIVE),
    (greater(0.0, ""), [0.02, 0.03], INCONCLUSIVE),  # two seeds: below MIN_SEEDS, whatever the interval
])
def test_a_rule_reads_the_interval_not_the_mean(rule, values, verdict) -> None:
    assert rule.verdict(t_interval(values)) == verdict


def test_two_means_a_point_apart_with_three_noisy_seeds_decide_nothing() -> None:
    # e.g. ODE-Net 74% vs ResNet 75% with a 2-point spread per seed: a mean comparison would say "worse"
    assert greater(0.0, "").verdict(t_interval([-0.03, 0.01, -0.01])) == INCONCLUSIVE


def test_combining_parts() -> None:
    assert combine([REPRODUCED, REPRODUCED]) == REPRODUCED
    assert combine([REPRODUCED, NOT_REPRODUCED]) == PARTLY
    assert combine([REPRODUCED, INCONCLUSIVE]) == PARTLY
    assert combine([NOT_REPRODUCED, INCONCLUSIVE]) == NOT_REPRODUCED
    assert combine([INCONCLUSIVE, AWAITING]) == INCONCLUSIVE
    assert combine([AWAITING, AWAITING]) == AWAITING


# --- the board on fixtures ------------------------------------------------------------------------------------------


def _study(root: Path, name: str, task: str, per_seed: dict[str, list[float]], tier: str = "cpu") -> None:
    seeds = list(range(len(next(iter(per_seed.values())))))
    write_study(root, study=name, task=task, tier=tier, seeds=seeds, per_seed=per_seed, rows=[],
                provenance={"command": "fixture"})


def _outcome(root: Path, key: str) -> board.Outcome:
    return next(o for o in board.evaluate(root) if o.claim.key == key)


def test_every_claim_awaits_data_in_an_empty_store(tmp_path: Path) -> None:
    outcomes = board.evaluate(tmp_path)
    assert [o.claim.key for o in outcomes] == [c.key for c in CLAIMS]
    assert all(o.verdict == AWAITING for o in outcomes)
    assert "depthbench study refinement" in board.markdown(outcomes)


@pytest.mark.parametrize(("ratios", "verdict"), [
    ([0.5, 0.48, 0.52], REPRODUCED), ([0.9, 0.95, 0.92], NOT_REPRODUCED), ([0.3, 0.6, 0.45], INCONCLUSIVE)])
def test_backward_cost_gives_each_verdict(tmp_path: Path, ratios: list[float], verdict: str) -> None:
    _study(tmp_path, "adjoint-cost", "fashion-mnist", {"backward_forward_ratio": ratios})
    o = _outcome(tmp_path, "chen-backward-cost")
    assert o.verdict == verdict and o.parts[0].interval.n == 3


def _record(root: Path, model: str, seed: int, metrics: dict[str, float], protocol: dict = CPU) -> None:
    save_record(root, Record(model=model, task="fashion-mnist", seed=seed, protocol=protocol, metrics=metrics))


@pytest.mark.parametrize(("gap", "verdict"), [
    ([0.002, -0.001, 0.0], REPRODUCED), ([-0.05, -0.06, -0.055], NOT_REPRODUCED),
    ([-0.004, -0.02, 0.002], INCONCLUSIVE)])
def test_parity_from_tier_records_paired_by_seed(tmp_path: Path, gap: list[float], verdict: str) -> None:
    for seed, g in enumerate(gap):
        base = 0.88 + 0.01 * seed  # the seeds differ more than the pairs do: pairing is what decides
        _record(tmp_path, "resnet", seed, {"accuracy": base})
        _record(tmp_path, "continuousnet", seed, {"accuracy": base + g})
    assert _outcome(tmp_path, "queiruga-parity").verdict == verdict


def test_pipeline_check_records_are_never_evidence(tmp_path: Path) -> None:
    smoke = {"name": "smoke", "version": 4, "hash": "5dafb6f8fe4b"}
    for seed in range(3):
        _record(tmp_path, "resnet", seed, {"accuracy": 0.9}, smoke)
        _record(tmp_path, "continuousnet", seed, {"accuracy": 0.9}, smoke)
    assert _outcome(tmp_path, "queiruga-parity").verdict == AWAITING
    _study(tmp_path, "adjoint-cost", "fashion-mnist", {"backward_forward_ratio": [0.5, 0.5, 0.5]}, tier="smoke")
    o = _outcome(tmp_path, "chen-backward-cost")
    assert o.verdict == AWAITING and "pipeline-check tier" in o.parts[0].note


def test_records_of_an_earlier_definition_of_the_tier_are_not_evidence(tmp_path: Path) -> None:
    """More runs under an old hash than under the current one: only the current hash's records decide."""
    old = {**CPU, "hash": "0123456789ab"}
    for seed in range(3):  # the old definition: parity holds, with more seeds
        _record(tmp_path, "resnet", seed, {"accuracy": 0.9}, old)
        _record(tmp_path, "continuousnet", seed, {"accuracy": 0.9}, old)
        _record(tmp_path, "resnet", seed + 3, {"accuracy": 0.9}, old)
        _record(tmp_path, "continuousnet", seed + 3, {"accuracy": 0.9}, old)
    assert _outcome(tmp_path, "queiruga-parity").verdict == AWAITING
    for seed, gap in enumerate([-0.05, -0.06, -0.055]):  # the current definition: it fails
        _record(tmp_path, "resnet", seed, {"accuracy": 0.9})
        _record(tmp_path, "continuousnet", seed, {"accuracy": 0.9 + gap})
    assert _outcome(tmp_path, "queiruga-parity").verdict == NOT_REPRODUCED


def test_a_dip_part_is_only_decided_where_truncation_exceeds_the_fit(tmp_path: Path) -> None:
    per_seed = {}
    for scheme in ("euler", "midpoint", "rk4"):
        for dt in ("1", "0.5", "0.25"):
            per_seed[f"{scheme}/dt{dt}/dip_ratio"] = [5.0, 6.0, 5.5] if scheme == "euler" else [1.0, 0.99, 1.01]
            # RK4 at Δt 0.25: truncation far below the fit, so "no dip" there says nothing
            small = scheme == "rk4" and dt == "0.25"
            per_seed[f"{scheme}/dt{dt}/trunc_over_fit"] = [0.04, 0.05, 0.04] if small else [30.0, 35.0, 32.0]
    _study(tmp_path, "convergence", "pendulum", per_seed, tier="cpu-study")
    o = _outcome(tmp_path, "queiruga-dip")
    verdicts = {p.part.effect.quantity: p.verdict for p in o.parts}
    assert verdicts["euler/dt1/dip_ratio"] == REPRODUCED and verdicts["midpoint/dt0.5/dip_ratio"] == REPRODUCED
    assert verdicts["rk4/dt0.25/dip_ratio"] == INCONCLUSIVE and verdicts["rk4/dt1/dip_ratio"] == REPRODUCED
    assert o.verdict == PARTLY
    assert "undecidable" in next(p.note for p in o.parts if p.part.effect.quantity == "rk4/dt0.25/dip_ratio")


def test_the_claims_command_writes_the_table_and_csv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results, out = tmp_path / "results", tmp_path / "boards"
    _study(results, "adjoint-cost", "fashion-mnist", {"backward_forward_ratio": [0.5, 0.48, 0.52],
                                                      "test_time_nfe_range": [3.0, 3.2, 2.9]})
    monkeypatch.chdir(tmp_path)
    assert main(["claims", "--results", "results", "--out", "boards"]) == 0
    md = (out / "claims.md").read_text(encoding="utf-8")
    assert md.count("\n| **") == len(CLAIMS)
    assert "“Number of evaluations in the backward pass is roughly half of the forward" in md
    assert "001_f168be8525f4e816.txt:413" in md and "[95% CI" in md and "**reproduced**" in md
    rows = list(csv.DictReader(io.StringIO((out / "claims.csv").read_text(encoding="utf-8"))))
    backward = [r for r in rows if r["claim"] == "chen-backward-cost"]
    assert backward[0]["part_verdict"] == REPRODUCED and backward[0]["n"] == "3"
    assert float(backward[0]["ci_low"]) < 0.5 < float(backward[0]["ci_high"])
