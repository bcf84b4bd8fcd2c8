"""The Route benchmark's verdict: a trial whose floor missed the limit measured the
machine, so it is run again and left out of the median, and a machine that spoils
too many trials fails the run rather than passing it unjudged."""

from __future__ import annotations

from typing import Any

from benchmarks.route_bench import LIMIT_P99_MS, MAX_REPEATS, enforced, run_trials


def measured(floor_p99: float, sidecar_p99: float) -> dict[str, Any]:
    figures = ("p50", "p90", "p99", "p99.9", "max")
    return {
        "floor": {**dict.fromkeys(figures, floor_p99), "errors": 0},
        "sidecar": {**dict.fromkeys(figures, sidecar_p99), "errors": 0},
    }


def trials_of(*pairs: tuple[float, float]) -> list[dict[str, Any]]:
    """run_trials over trials that measure the given (floor, sidecar) p99s in turn."""
    return run_trials(lambda index: measured(*pairs[index]), wanted=3)


def test_three_trials_with_a_healthy_floor_are_all_judged() -> None:
    trials = trials_of((1.8, 2.6), (1.9, 2.9), (1.7, 2.4))

    verdict = enforced(trials, wanted=3)

    assert [t["judged"] for t in trials] == [True, True, True]
    assert verdict["passed"]
    assert verdict["sidecar_p99_median_ms"] == 2.6
    assert verdict["ratio"]["p99"] == 2.6 / 1.8


def test_a_trial_whose_floor_missed_the_limit_is_run_again_and_left_out() -> None:
    trials = trials_of((1.8, 2.6), (LIMIT_P99_MS, 9.0), (1.9, 2.9), (1.7, 2.4))

    verdict = enforced(trials, wanted=3)

    assert [t["judged"] for t in trials] == [True, False, True, True]
    assert verdict["judged_trials"] == 3
    assert verdict["sidecar_p99_median_ms"] == 2.6
    assert verdict["passed"]


def test_a_sidecar_over_the_limit_beside_a_healthy_floor_is_judged() -> None:
    trials = trials_of((1.8, 6.0), (1.9, 7.0), (1.7, 2.4))

    verdict = enforced(trials, wanted=3)

    assert len(trials) == 3
    assert verdict["machine_judged"]
    assert verdict["sidecar_p99_median_ms"] == 6.0
    assert not verdict["passed"]


def test_a_machine_that_spoils_too_many_trials_cannot_pass() -> None:
    stalled = (LIMIT_P99_MS + 1.0, 2.0)
    trials = trials_of((1.8, 2.6), *[stalled] * (MAX_REPEATS + 2))

    verdict = enforced(trials, wanted=3)

    assert len(trials) == 3 + MAX_REPEATS
    assert verdict["judged_trials"] == 1
    assert not verdict["machine_judged"]
    assert not verdict["passed"]


def test_a_failed_call_fails_the_run() -> None:
    trials = trials_of((1.8, 2.6), (1.9, 2.9), (1.7, 2.4))
    trials[1]["sidecar"]["errors"] = 1

    assert not enforced(trials, wanted=3)["passed"]
