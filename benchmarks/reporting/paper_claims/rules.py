"""Verdicts from intervals: a claim's effect, its 95% interval over seeds, and the rule that reads the interval.

An effect is measured once per seed (paired where the arms share a seed: the per-seed difference, or for a ratio
the per-seed log ratio), and its 95% interval is Student's t interval of the mean over seeds (n - 1 degrees of
freedom; a ratio's interval is taken on the logs and mapped back, so it stays positive; a correlation's is cut to
[-1, 1]). A rule then says:

- reproduced: the whole interval lies where the claim says the effect is;
- not reproduced: the whole interval lies where the claim says it is not;
- inconclusive: the interval straddles the boundary, or there are fewer than `MIN_SEEDS` seeds.

Means alone never decide: two noisy means a point apart with 3 seeds are usually inconclusive, and say so.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, AWAITING = "reproduced", "not reproduced", "inconclusive", "awaiting data"
MIN_SEEDS = 3
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """The mean of per-seed values and its two-sided `LEVEL` interval (t over seeds), in the effect's own units."""

    mean: float
    low: float
    high: float
    n: int
    values: tuple[float, ...]

    def text(self, scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
        if self.n == 1:
            return f"{self.mean * scale:.{digits}f}{unit} (n=1, no interval)"
        return (f"{self.mean * scale:.{digits}f}{unit} [95% CI {self.low * scale:.{digits}f}, "
                f"{self.high * scale:.{digits}f}] (n={self.n})")


def t_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean and Student's t interval of `values` (one per seed); for n = 1 the interval is unbounded."""
    values = tuple(float(v) for v in values)
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"an interval needs finite values, got {values}")
    mean = statistics.fmean(values)
    if len(values) == 1:
        return Interval(mean, -math.inf, math.inf, 1, values)
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return Interval(mean, mean - half, mean + half, len(values), values)


def ratio_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """The geometric mean of positive per-seed ratios and its interval, from the t interval of their logs."""
    if not values or any(not v > 0 for v in values):
        raise ValueError(f"a ratio's interval needs positive values, got {tuple(values)}")
    logs = t_interval([math.log(v) for v in values], level)
    high = math.exp(logs.high) if math.isfinite(logs.high) else math.inf
    low = math.exp(logs.low) if math.isfinite(logs.low) else 0.0
    return Interval(math.exp(logs.mean), low, high, logs.n, tuple(float(v) for v in values))


def correlation_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """The mean of per-seed correlations and its t interval, cut to [-1, 1], the range a correlation can take.

    Not Fisher's z: a rank correlation over a few epochs is often exactly +-1, whose z is infinite and would swamp
    the mean (seeds 1.0, 0.83, -0.14 would read 1.00 [-1.00, 1.00]); the mean of r is what the claim is about."""
    if not values or any(not -1.0 <= v <= 1.0 for v in values):
        raise ValueError(f"a correlation's interval needs values in [-1, 1], got {tuple(values)}")
    r = t_interval(values, level)
    return Interval(r.mean, max(-1.0, r.low), min(1.0, r.high), r.n, r.values)


@dataclass(frozen=True)
class Rule:
    """Where the claim puts the effect: above `above` and/or below `below` (a band when both are set)."""

    above: float | None = None
    below: float | None = None
    statement: str = ""  # the rule in words, e.g. "ODE-Net − CNN > 0 points"

    def __post_init__(self) -> None:
        if self.above is None and self.below is None:
            raise ValueError("a rule bounds the effect from above, below or both")
        if self.above is not None and self.below is not None and not self.above < self.below:
            raise ValueError(f"empty band: above {self.above} must be < below {self.below}")

    def verdict(self, interval: Interval, min_seeds: int = MIN_SEEDS) -> str:
        if interval.n < min_seeds:
            return INCONCLUSIVE
        lo = -math.inf if self.above is None else self.above
        hi = math.inf if self.below is None else self.below
        if lo < interval.low and interval.high < hi:
            return REPRODUCED
        if interval.high <= lo or interval.low >= hi:
            return NOT_REPRODUCED
        return INCONCLUSIVE


def greater(than: float, statement: str) -> Rule:
    """The effect exceeds `than` (a superiority claim: the difference is positive)."""
    return Rule(above=than, statement=statement)


def less(than: float, statement: str) -> Rule:
    return Rule(below=than, statement=statement)


def within(low: float, high: float, statement: str) -> Rule:
    """The effect lies in [low, high] (a parity claim: the difference is within a margin either way)."""
    return Rule(above=low, below=high, statement=statement)


PARTLY = "partly"


def combine(verdicts: Sequence[str]) -> str:
    """One verdict for a claim of several parts (the notes say which part gave what):

    every part reproduced -> reproduced; some reproduced, others not reproduced or undecided -> partly; some not
    reproduced and none reproduced -> not reproduced (one failed part fails the claim); nothing decided -> awaiting
    data when every part awaits data, else inconclusive."""
    if not verdicts:
        raise ValueError("a claim has at least one part")
    if all(v == REPRODUCED for v in verdicts):
        return REPRODUCED
    if REPRODUCED in verdicts:
        return PARTLY
    if NOT_REPRODUCED in verdicts:
        return NOT_REPRODUCED
    return AWAITING if all(v == AWAITING for v in verdicts) else INCONCLUSIVE
