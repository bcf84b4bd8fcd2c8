"""The CPU gate's verdict: the median of the rounds' ratios against the limit, and no
failed call."""

from __future__ import annotations

from typing import Any

from benchmarks.cpu_gate import LIMIT_RATIO, judge


def rounds(*pairs: tuple[float, float], errors: int = 0) -> list[dict[str, Any]]:
    """Rounds with the given (floor, sidecar) CPU per call."""
    return [
        {"floor": {"cpu_us_per_request": f, "errors": 0},
         "sidecar": {"cpu_us_per_request": s, "errors": errors}}
        for f, s in pairs
    ]  # fmt: skip


def test_the_median_round_decides() -> None:
    """One stalled round over the limit does not fail a run whose median is under it."""
    verdict = judge(rounds((400, 800), (400, 2000), (500, 900)))
    assert verdict["median_ratio"] == 2.0
    assert verdict["passed"]


def test_a_median_over_the_limit_fails() -> None:
    """A sidecar costing more than LIMIT_RATIO floors per call in most rounds fails."""
    over = LIMIT_RATIO + 0.1
    assert not judge(rounds((400, 400 * over), (400, 400 * over), (400, 800)))["passed"]


def test_a_failed_call_fails_the_gate() -> None:
    """Any error fails the run, however cheap the calls were."""
    assert not judge(rounds((400, 500), errors=1))["passed"]
