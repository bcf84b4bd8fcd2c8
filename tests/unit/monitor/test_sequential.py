"""The always-valid comparison of an arm's Tier-1 error rate with control's: its error
rates under continuous monitoring on seeded simulations, its interval, its edge cases
and its refusals."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.sequential import (
    DEFAULT_ALPHA,
    DEFAULT_TAU,
    ArmCounts,
    Comparison,
    compare,
    p_values,
)

Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
Counts = tuple[Floats, Floats, Floats, Floats]  # control trials, errors, arm trials, errors

ALPHA = DEFAULT_ALPHA


def allowance(runs: int) -> float:
    """alpha plus three binomial standard errors of a rate measured over ``runs``."""
    return ALPHA + 3.0 * math.sqrt(ALPHA * (1.0 - ALPHA) / runs)


def balanced(
    seed: int, control_rate: float, arm_rate: float, *, runs: int, per_arm: int, batch: int
) -> Counts:
    """Cumulative counts at a look after every ``batch`` units per arm, one row a run."""
    rng = np.random.default_rng(seed)
    looks = per_arm // batch
    trials = np.arange(1, looks + 1, dtype=np.float64) * batch
    control = rng.binomial(batch, control_rate, (runs, looks)).cumsum(axis=1)
    arm = rng.binomial(batch, arm_rate, (runs, looks)).cumsum(axis=1)
    return trials, control.astype(np.float64), trials, arm.astype(np.float64)


def split(seed: int, rate: float, arm_share: float, *, runs: int, units: int, batch: int) -> Counts:
    """Cumulative counts at a look after every ``batch`` units, each unit hashed to the
    arm with probability ``arm_share``; both arms err at ``rate``."""
    rng = np.random.default_rng(seed)
    looks = units // batch
    to_arm = rng.binomial(batch, arm_share, (runs, looks))
    to_control = batch - to_arm
    return (
        to_control.cumsum(axis=1).astype(np.float64),
        rng.binomial(to_control, rate).cumsum(axis=1).astype(np.float64),
        to_arm.cumsum(axis=1).astype(np.float64),
        rng.binomial(to_arm, rate).cumsum(axis=1).astype(np.float64),
    )


def significant(counts: Counts) -> tuple[Bools, Bools]:
    """Per run and look: (harmful, better), as ``compare`` decides them."""
    control_trials, control_errors, arm_trials, arm_errors = counts
    p = p_values(control_trials, control_errors, arm_trials, arm_errors)
    with np.errstate(divide="ignore", invalid="ignore"):  # an arm with no trials yet
        difference = arm_errors / arm_trials - control_errors / control_trials
    return (p <= ALPHA) & (difference > 0), (p <= ALPHA) & (difference < 0)


def test_a_harmful_arm_is_halted_within_a_thousand_units() -> None:
    """0.04 against 0.01, looks every 50 units per arm: halted in 95% of 200 runs, at a
    median under 800 units per arm."""
    counts = balanced(1, 0.01, 0.04, runs=200, per_arm=20_000, batch=50)
    harmful, _ = significant(counts)
    halted = harmful.any(axis=1)
    units_at_halt = counts[0][harmful.argmax(axis=1)][halted]
    assert halted.mean() >= 0.95
    assert np.median(units_at_halt) < 800


def test_equal_arms_are_almost_never_halted_however_often_looked_at() -> None:
    """0.02 both, looks every 20 units per arm up to 10,000: the share of 2,000 runs
    ever declared harmful is within alpha's binomial allowance."""
    runs = 2_000
    harmful, _ = significant(balanced(2, 0.02, 0.02, runs=runs, per_arm=10_000, batch=20))
    assert harmful.any(axis=1).mean() <= allowance(runs)


@pytest.mark.parametrize("arm_share", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("rate", [0.005, 0.02, 0.2])
def test_uneven_splits_and_rare_errors_keep_the_level(rate: float, arm_share: float) -> None:
    """Equal arms on an uneven split, 20,000 units looked at every 20: either verdict,
    ever, in no more than alpha's allowance of 1,000 runs (a small arm's first errors
    at a rare rate are where the normal approximation fails)."""
    runs = 1_000
    harmful, better = significant(split(3, rate, arm_share, runs=runs, units=20_000, batch=20))
    assert (harmful | better).any(axis=1).mean() <= allowance(runs)


def test_a_better_arm_is_found_better_and_never_harmful() -> None:
    """0.01 against 0.04: better in 95% of 200 runs, harmful in none."""
    harmful, better = significant(balanced(4, 0.04, 0.01, runs=200, per_arm=20_000, batch=50))
    assert better.any(axis=1).mean() >= 0.95
    assert not harmful.any()


def test_a_better_arm_compared_once() -> None:
    """One look at 1% against 4% over 2,000 trials each: better, not harmful."""
    result = compare(ArmCounts("control", 2_000, 80), ArmCounts("b", 2_000, 20))
    assert result.better
    assert not result.harmful
    assert result.difference == pytest.approx(-0.03)
    assert result.ci_high < 0


def test_a_harmful_arm_compared_once() -> None:
    """One look at 4% against 1% over 2,000 trials each: harmful, its rates reported."""
    result = compare(ArmCounts("control", 2_000, 20), ArmCounts("b", 2_000, 80))
    assert result.harmful
    assert not result.better
    assert (result.control_error_rate, result.arm_error_rate) == (0.01, 0.04)
    assert result.p_value <= ALPHA
    assert 0 < result.ci_low < 0.03 < result.ci_high


def test_the_interval_covers_the_true_difference_at_every_look() -> None:
    """1% against 3% on a 30/70 split, ten looks up to 20,000 units: the interval leaves
    out the true difference at some look in no more than alpha's allowance of 100 runs."""
    runs, looks, step = 100, 10, 2_000
    rng = np.random.default_rng(5)
    missed = 0
    for _ in range(runs):
        to_arm = rng.random(looks * step) < 0.3
        wrong = rng.random(looks * step) < np.where(to_arm, 0.03, 0.01)
        for end in range(step, looks * step + 1, step):
            arm, error = to_arm[:end], wrong[:end]
            result = compare(
                ArmCounts("control", float((~arm).sum()), float((error & ~arm).sum())),
                ArmCounts("b", float(arm.sum()), float((error & arm).sum())),
            )
            if not result.ci_low < 0.02 < result.ci_high:
                missed += 1
                break
    assert missed / runs <= allowance(runs)


def test_the_interval_is_the_closed_form_boundary_when_the_variance_settles() -> None:
    """At 50,000 trials an arm, the half-widths are the mSPRT's closed form
    sqrt(2 V (V + tau^2) / tau^2 * (log(1/alpha) + log((V + tau^2) / V) / 2))."""
    result = compare(ArmCounts("control", 50_000, 1_000), ArmCounts("b", 50_000, 1_500))
    variance = 0.02 * 0.98 / 50_000 + 0.03 * 0.97 / 50_000
    spread = variance + DEFAULT_TAU**2
    half_width = math.sqrt(
        2
        * variance
        * spread
        / DEFAULT_TAU**2
        * (math.log(1 / ALPHA) + 0.5 * math.log(spread / variance))
    )
    assert result.difference - result.ci_low == pytest.approx(half_width, rel=0.02)
    assert result.ci_high - result.difference == pytest.approx(half_width, rel=0.02)


def test_evidence_is_flat_and_json_ready() -> None:
    """The arms' names and counts, then every field, all plain JSON values."""
    result = compare(ArmCounts("control", 2_000, 20), ArmCounts("b", 2_000, 80), tau=0.03)
    evidence = json.loads(json.dumps(result.as_evidence(), allow_nan=False))
    assert (evidence["control"], evidence["arm"], evidence["arm_errors"]) == ("control", "b", 80)
    assert (evidence["p_value"], evidence["tau"]) == (result.p_value, 0.03)
    assert evidence["harmful"] is True


@given(
    st.integers(30, 5_000).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n))),
    st.integers(30, 5_000).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n))),
)
def test_the_verdict_the_p_value_and_the_interval_agree(
    control: tuple[int, int], arm: tuple[int, int]
) -> None:
    """p is ``p_values``'s; harmful or better exactly when the interval leaves out 0 on
    that side; the interval holds the estimate."""
    result = compare(ArmCounts("control", *control), ArmCounts("b", *arm))
    assert result.p_value == float(p_values(*control, *arm))
    assert result.harmful == (result.ci_low > 0)
    assert result.better == (result.ci_high < 0)
    assert -1 <= result.ci_low <= result.ci_high <= 1
    if result.p_value < 1:
        assert result.ci_low <= result.difference <= result.ci_high


def no_inference(result: Comparison) -> bool:
    return (
        result.p_value == 1.0
        and (result.ci_low, result.ci_high) == (-1.0, 1.0)
        and not (result.harmful or result.better)
    )


def test_no_trials_give_no_inference() -> None:
    """Zero trials: rates are NaN, p is 1 and the interval is everything."""
    result = compare(ArmCounts("control", 0, 0), ArmCounts("b", 0, 0), min_trials=0)
    assert no_inference(result)
    assert math.isnan(result.arm_error_rate)
    assert math.isnan(result.difference)


def test_fewer_than_min_trials_are_never_harmful() -> None:
    """29 errors in 29 trials against none in 1,000: below min_trials, no verdict."""
    assert no_inference(compare(ArmCounts("control", 1_000, 0), ArmCounts("b", 29, 29)))


@pytest.mark.parametrize(("errors", "trials"), [(0, 10_000), (10_000, 10_000), (2, 10_000)])
def test_too_few_errors_or_successes_give_no_inference(errors: int, trials: int) -> None:
    """No errors in either arm, all errors in both, or too few to expect five in each."""
    result = compare(ArmCounts("control", trials, errors), ArmCounts("b", trials, errors))
    assert no_inference(result)


def test_all_errors_against_none_is_harmful() -> None:
    """Every decision wrong against none wrong: harmful, the interval reaching 1."""
    result = compare(ArmCounts("control", 100, 0), ArmCounts("b", 100, 100))
    assert result.harmful
    assert result.ci_high == 1.0


def test_weighted_counts_are_accepted() -> None:
    """Effective counts need not be whole numbers."""
    result = compare(ArmCounts("control", 812.4, 8.3), ArmCounts("b", 790.7, 35.9))
    assert result.harmful


@pytest.mark.parametrize(
    ("trials", "errors", "argument"),
    [
        (-1, 0, "trials"),
        (math.nan, 0, "trials"),
        (math.inf, 0, "trials"),
        (10, -1, "errors"),
        (10, 11, "errors"),
        (10, math.nan, "errors"),
    ],
)
def test_bad_counts_are_refused_naming_the_argument(
    trials: float, errors: float, argument: str
) -> None:
    """trials finite and >= 0, errors between 0 and trials."""
    with pytest.raises(ValueError, match=f"'b': {argument} must"):
        ArmCounts("b", trials, errors)


@pytest.mark.parametrize(
    ("keywords", "argument"),
    [
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.0}, "alpha"),
        ({"alpha": math.nan}, "alpha"),
        ({"tau": 0.0}, "tau"),
        ({"tau": -0.1}, "tau"),
        ({"tau": math.inf}, "tau"),
        ({"min_trials": -1}, "min_trials"),
    ],
)
def test_bad_parameters_are_refused_naming_the_argument(
    keywords: dict[str, Any], argument: str
) -> None:
    """alpha in (0, 1), tau finite and > 0, min_trials >= 0."""
    counts = ArmCounts("control", 100, 1), ArmCounts("b", 100, 2)
    with pytest.raises(ValueError, match=f"^{argument} must"):
        compare(*counts, **keywords)


@pytest.mark.parametrize(
    ("counts", "argument"),
    [
        (([10, 10], [1, 11], [10, 10], [1, 1]), "control_errors"),
        (([10, -10], [1, 1], [10, 10], [1, 1]), "control_trials"),
        (([10, 10], [1, 1], [10, 10], [1, -1]), "arm_errors"),
    ],
)
def test_bad_count_arrays_are_refused_naming_the_argument(
    counts: tuple[list[int], ...], argument: str
) -> None:
    """The array form checks every element."""
    with pytest.raises(ValueError, match=f"^{argument} must"):
        p_values(*counts)
