"""The drift guard: PSI, the rolling window, the alarm and its hysteresis."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.core.drift import FLOOR, DriftAction, DriftGuard, DriftPolicy, psi, shares

EDGES = [i / 10 for i in range(11)]
UNIFORM = [100] * 10


def guard(window: int = 200, action: DriftAction = DriftAction.PAUSE_AUTOMATION) -> DriftGuard:
    return DriftGuard(DriftPolicy(window, 0.25, 0.1, action), EDGES, UNIFORM, [50, 50])


def test_psi_of_a_distribution_with_itself_is_zero_and_grows_with_the_shift() -> None:
    assert psi([1, 2, 3], [2, 4, 6]) == 0.0
    assert 0 < psi([50, 50], [55, 45]) < psi([50, 50], [70, 30]) < psi([50, 50], [95, 5])


def test_an_empty_bin_counts_as_rare_not_impossible() -> None:
    """A bin the reference never saw is floored, so PSI stays finite."""
    value = psi([0, 100], [50, 50])
    assert math.isfinite(value)
    assert value == pytest.approx((0.5 - FLOOR) * math.log(0.5 / FLOOR) + 0.5 * math.log(2))
    assert shares([0, 0]).tolist() == [FLOOR, FLOOR]


def test_psi_refuses_histograms_of_different_bins() -> None:
    with pytest.raises(ValueError, match="3 observed bins for 2"):
        psi([1, 1], [1, 1, 1])


@given(st.lists(st.tuples(st.floats(0, 1), st.integers(0, 1)), min_size=1, max_size=400))
def test_the_psi_measured_is_the_psi_of_the_window(stream: list[tuple[float, int]]) -> None:
    """However the ring has moved, a judgement measures PSI over exactly the last
    window decisions."""
    g = guard(window=50)
    for confidence, cls in stream:
        g.observe(confidence, cls)
    g.judge()
    if len(stream) < 50:
        assert not g.filled
        assert g.confidence_psi == 0.0
        return
    window = stream[-50:]
    counts = [0] * 10
    for confidence, _ in window:
        counts[min(int(confidence * 10), 9)] += 1
    classes = [sum(1 for _, c in window if c == k) for k in (0, 1)]
    assert g.confidence_psi == pytest.approx(psi(UNIFORM, counts), abs=1e-9)
    assert g.class_psi == pytest.approx(psi([50, 50], classes), abs=1e-9)


def test_it_judges_only_a_full_window_every_twentieth_of_it() -> None:
    """observe answers whether automation is paused; a change is told to on_change."""
    g = guard(window=200)
    changes: list[bool] = []
    g.on_change = lambda guard: changes.append(guard.alarmed)
    for _ in range(199):
        assert not g.observe(0.99, 0)
    assert not g.alarmed
    assert g.observe(0.99, 0)  # the 200th fills it: far from the reference
    assert changes == [True]
    assert g.confidence_psi > 1
    for _ in range(9):  # judged again only at the 10th decision (200 / 20)
        g.observe(0.5, 1)
    before = g.confidence_psi
    assert g.observe(0.5, 1)
    assert g.confidence_psi < before
    assert g.paused
    assert g.alarms == 1


def test_a_batch_is_observed_as_its_rows_one_by_one() -> None:
    one, many = guard(window=50), guard(window=50)
    rows = [(i % 2, (i % 10) / 10 + 0.05, 0.0, 0.0) for i in range(120)]
    for cls, confidence, _, _ in rows:
        one.observe(confidence, cls)
    many.observe_rows([*rows[:60], None, *rows[60:]])
    one.judge()
    many.judge()
    assert (many.confidence_psi, many.class_psi) == (one.confidence_psi, one.class_psi)
    assert many.class_shares() == one.class_shares()


def test_it_alarms_on_the_predicted_class_alone() -> None:
    """Confidence as the reference, classes all one: the class PSI alarms."""
    g = guard()
    rng = random.Random(1)
    for _ in range(400):
        g.observe(rng.random(), 0)
    assert g.confidence_psi < 0.1
    assert g.class_psi > 0.25
    assert g.alarmed


def test_it_clears_only_below_the_recover_level() -> None:
    """Hysteresis: after an alarm, a window between psi_recover and psi_alarm keeps
    it; a window like the reference clears it."""
    g = guard(window=200)
    for _ in range(200):
        g.observe(0.95, 0)
    assert g.alarmed
    rng = random.Random(2)
    # Back to the reference in confidence, classes 70/30: class PSI about 0.17.
    for i in range(400):
        g.observe(rng.random(), 0 if i % 10 < 7 else 1)
    assert 0.1 < max(g.confidence_psi, g.class_psi) < 0.25
    assert g.alarmed
    for i in range(400):
        g.observe(rng.random(), i % 2)
    assert max(g.confidence_psi, g.class_psi) <= 0.1
    assert not g.alarmed
    assert not g.paused
    assert g.alarms == 1


def test_the_class_shift_is_the_mixes_total_variation() -> None:
    g = guard(window=100)  # reference classes 50/50
    for i in range(100):
        g.observe(0.55, 0 if i % 10 < 8 else 1)  # 80/20
    g.judge()
    assert g.class_shift == pytest.approx(0.3)


def test_an_alert_guard_alarms_without_pausing() -> None:
    g = guard(action=DriftAction.ALERT)
    for _ in range(200):
        g.observe(0.99, 0)
    assert g.alarmed
    assert not g.paused


def test_a_class_beyond_the_reference_is_not_counted() -> None:
    """A predicted class the reference has no bin for leaves the class window alone."""
    g = guard(window=50)
    for i in range(50):
        g.observe(0.55, i % 2)
    g.judge()
    before = g.class_psi
    g.observe(0.55, 7)
    g.judge()
    assert g.class_shares() == pytest.approx([24 / 49, 25 / 49])
    assert g.class_psi != before


def test_a_guard_needs_one_more_edge_than_bins() -> None:
    with pytest.raises(ValueError, match="3 edges for 3 bins"):
        DriftGuard(DriftPolicy(50, 0.25, 0.1, DriftAction.ALERT), [0, 0.5, 1], [1, 1, 1])
