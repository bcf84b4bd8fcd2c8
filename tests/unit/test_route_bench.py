"""The Route benchmark's verdict: a trial whose floor missed the limit measured the
machine, so it is run again and left out of the median, and a machine that spoils
too many trials fails the run rather than passing it unjudged."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from benchmarks.route_bench import (
    CANNOT_JUDGE,
    LIMIT_P99_MS,
    MAX_REPEATS,
    conclude,
    enforced,
    run_trials,
)


def measured(floor_p99: float, sidecar_p99: float) -> dict[str, Any]:
    """A trial's figures as the benchmark has them (numpy floats, from np.percentile)."""
    figures = ("p50", "p90", "p99", "p99.9", "max")
    return {
        "floor": {**dict.fromkeys(figures, np.float64(floor_p99)), "errors": 0},
        "sidecar": {**dict.fromkeys(figures, np.float64(sidecar_p99)), "errors": 0},
    }


def trials_of(*pairs: tuple[float, float]) -> list[dict[str, Any]]:
    """run_trials over trials that measure the given (floor, sidecar) p99s in turn."""
    return run_trials(lambda index: measured(*pairs[index]), wanted=3)


def test_three_trials_with_a_healthy_floor_are_all_judged() -> None:
    """The usual run: three trials, the median of the sidecar's p99s."""
    trials = trials_of((1.8, 2.6), (1.9, 2.9), (1.7, 2.4))

    verdict = enforced(trials, wanted=3)

    assert [t["judged"] for t in trials] == [True, True, True]
    assert verdict["passed"] is True
    assert json.loads(json.dumps([t["judged"] for t in trials])) == [True, True, True]
    assert verdict["sidecar_p99_median_ms"] == 2.6
    assert verdict["ratio"]["p99"] == 2.6 / 1.8


def test_a_trial_whose_floor_missed_the_limit_is_run_again_and_left_out() -> None:
    """A stalled floor spoils its trial: a fourth runs, and the median leaves it out."""
    trials = trials_of((1.8, 2.6), (LIMIT_P99_MS, 9.0), (1.9, 2.9), (1.7, 2.4))

    verdict = enforced(trials, wanted=3)

    assert [t["judged"] for t in trials] == [True, False, True, True]
    assert verdict["judged_trials"] == 3
    assert verdict["sidecar_p99_median_ms"] == 2.6
    assert verdict["passed"]


def test_a_sidecar_over_the_limit_beside_a_healthy_floor_is_judged() -> None:
    """The rule never excuses the sidecar: with the floor healthy, its misses count."""
    trials = trials_of((1.8, 6.0), (1.9, 7.0), (1.7, 2.4))

    verdict = enforced(trials, wanted=3)

    assert len(trials) == 3
    assert verdict["machine_judged"]
    assert verdict["sidecar_p99_median_ms"] == 6.0
    assert not verdict["passed"]


def test_a_machine_that_spoils_too_many_trials_cannot_pass() -> None:
    """MAX_REPEATS spoiled trials and no more: the run fails, whatever the sidecar did."""
    stalled = (LIMIT_P99_MS + 1.0, 2.0)
    trials = trials_of((1.8, 2.6), *[stalled] * (MAX_REPEATS + 2))

    verdict = enforced(trials, wanted=3)

    assert len(trials) == 3 + MAX_REPEATS
    assert verdict["judged_trials"] == 1
    assert not verdict["machine_judged"]
    assert not verdict["passed"]


def test_a_failed_call_fails_the_run() -> None:
    """An error in any trial fails the run, however fast it was."""
    trials = trials_of((1.8, 2.6), (1.9, 2.9), (1.7, 2.4))
    trials[1]["sidecar"]["errors"] = 1

    assert not enforced(trials, wanted=3)["passed"]


def test_exit_status_says_when_the_machine_could_not_judge() -> None:
    """0 for a pass, 1 for a sidecar over the limit, CANNOT_JUDGE (never 0) when the
    floor spoiled too many trials, and 1 again if a call failed on such a machine."""
    stalled = (LIMIT_P99_MS + 1.0, 2.0)
    passing = trials_of((1.8, 2.6), (1.9, 2.9), (1.7, 2.4))
    failing = trials_of((1.8, 6.0), (1.9, 7.0), (1.7, 2.4))
    unjudged = trials_of(*[stalled] * (3 + MAX_REPEATS))

    def status(trials: list[dict[str, Any]]) -> int:
        return conclude({"trials": trials, "enforced": enforced(trials, wanted=3)}, wanted=3)

    assert status(passing) == 0
    assert status(failing) == 1
    assert status(unjudged) == CANNOT_JUDGE != 0
    unjudged[0]["sidecar"]["errors"] = 1
    assert status(unjudged) == 1
