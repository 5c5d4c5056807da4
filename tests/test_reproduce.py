"""The published-vs-reproduced rule: the protocol's tolerance, or the seed spread where it is larger."""

from __future__ import annotations

import dataclasses
import math

import pytest

from benchmarks.protocols import PROTOCOLS, SMOKE, Protocol, Tolerance
from benchmarks.reporting.reproduce import compare_records, compare_values, tolerance_for
from benchmarks.store.records import Record

TIGHT = Tolerance(accuracy_points=1.0, mse_relative=0.1)


def test_accuracy_within_the_tolerance_in_points() -> None:
    ok = compare_values("accuracy", [0.800], [0.792], TIGHT)
    assert ok.reproduces and ok.basis == "tolerance" and ok.difference == pytest.approx(-0.8)
    assert ok.published == pytest.approx(80.0) and ok.allowed == pytest.approx(1.0)
    assert not compare_values("accuracy", [0.800], [0.785], TIGHT).reproduces


def test_the_seed_spread_widens_the_band_where_it_is_larger() -> None:
    # Seeds spread by ~2 points: 2 standard errors of a difference of two 3-seed means is 2*2*sqrt(2/3) = 3.27 pt.
    published, local = [0.78, 0.80, 0.82], [0.755, 0.775, 0.795]
    verdict = compare_values("accuracy", published, local, TIGHT)
    assert verdict.basis == "seed spread" and verdict.allowed == pytest.approx(2 * 2 * math.sqrt(2 / 3))
    assert verdict.reproduces and verdict.difference == pytest.approx(-2.5)
    assert not compare_values("accuracy", published, [0.74, 0.76, 0.78], TIGHT).reproduces  # 4 pt off
    # One seed on each side: no spread to use, only the tolerance.
    assert compare_values("accuracy", [0.80], [0.775], TIGHT).basis == "tolerance"


def test_mse_is_compared_as_a_ratio_either_way() -> None:
    assert compare_values("test_mse", [1e-3], [1.09e-3], TIGHT).reproduces
    assert compare_values("test_mse", [1.09e-3], [1e-3], TIGHT).reproduces  # symmetric on the log scale
    worse = compare_values("test_mse", [1e-3], [1.2e-3], TIGHT)
    assert not worse.reproduces and worse.difference == pytest.approx(0.2)
    with pytest.raises(ValueError, match="no reproduction rule"):
        compare_values("latency_ms", [1.0], [1.0], TIGHT)


def test_every_tier_has_a_tolerance_outside_its_hash() -> None:
    for protocol in PROTOCOLS.values():
        assert tolerance_for(protocol.name) == protocol.tolerance
        # a field outside the hash: changing how results are compared never changes the hash of how they are made
        looser = dataclasses.replace(protocol, tolerance=Tolerance(accuracy_points=50.0, mse_relative=9.0))
        assert looser.hashes() == protocol.hashes()
    assert tolerance_for("smoke").accuracy_points == 10.0
    assert tolerance_for("a-tier-nobody-declared") == Protocol.tolerance


def test_records_are_matched_by_protocol_hash_model_and_task() -> None:
    def rec(model: str, accuracy: float | None, phash: str = SMOKE.task_hash("digits")) -> Record:
        r = Record(model=model, task="digits", seed=0, protocol={**SMOKE.header("digits"), "hash": phash})
        if accuracy is None:
            r.status, r.error = "failed", "boom"
        else:
            r.metrics = {"accuracy": accuracy}
        return r

    rows = compare_records([rec("resnet", 0.6), rec("anode", None), rec("node", 0.5)],
                           [rec("resnet", 0.65), rec("anode", 0.4), rec("node", 0.5, phash="000000000000")])
    by_model = {row.model: row for row in rows}
    assert by_model["resnet"].verdict.reproduces and by_model["anode"].note == "every run failed here"
    assert by_model["node"].note == "no published record of this protocol hash"
