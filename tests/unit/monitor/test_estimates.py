"""monitor.estimates: each labelled decision weighs its stratum's estimated size over
its labelled decisions; on simulated traffic of known calibration the weighted Tier-1
accuracy, accuracy and ECE stand for the whole population where the labelled
decisions taken as they come do not, and the Tier-1 interval covers the population's
accuracy; strata without labels are reported; PSI compares weighted histograms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, get_args

import numpy as np
import numpy.typing as npt
import pytest

from calibrators.metrics import equal_width_bins
from monitor.estimates import (
    GroupKey,
    Stratum,
    by,
    class_psi,
    confidence_psi,
    health,
    weights,
)
from monitor.observations import Observation

Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]

TOLERANCE = 0.02  # the most one seed's estimate may be off the population's value
BIAS_TOLERANCE = 0.005  # the most the mean error over SEEDS may be
SEEDS = 20
DECISIONS = 200_000
T_HIGH, T_LOW = 0.9, 0.6
AUDIT_RATE, RECORD_RATE, OUTCOME_RATE = 0.05, 0.1, 0.3
OVERCONFIDENCE = 0.12  # the gap between confidence and accuracy at confidence 1


@dataclass(frozen=True)
class Traffic:
    """Every decision of a simulated population; which were recorded and labelled."""

    confidence: Floats
    hit: Bools  # the predicted class is the true one
    predicted: npt.NDArray[np.int64]
    label: npt.NDArray[np.int64]
    tier: npt.NDArray[np.str_]
    audited: Bools
    recorded: Bools
    labelled: Bools  # recorded and labelled

    def observations(self, only: Bools | None = None) -> list[Observation]:
        kept = self.recorded if only is None else self.recorded & only
        rows = np.flatnonzero(kept)
        automated = self.tier[rows] == "AUTOMATED"
        audited = self.audited[rows]
        return [
            Observation(
                request_id="",
                model="m",
                confidence=confidence,
                predicted_class=predicted,
                tier=tier,
                reason="AUDIT_SAMPLE" if audit else "THRESHOLD",
                inclusion_probability=RECORD_RATE if sampled else 1.0,
                decided_at=0.0,
                label=label if labelled else None,
            )
            for confidence, predicted, tier, audit, sampled, label, labelled in zip(
                self.confidence[rows].tolist(),
                self.predicted[rows].tolist(),
                self.tier[rows].tolist(),
                audited.tolist(),
                (automated & ~audited).tolist(),
                self.label[rows].tolist(),
                self.labelled[rows].tolist(),
                strict=True,
            )
        ]

    def automated(self) -> Bools:
        automated: Bools = self.tier == "AUTOMATED"
        return automated


def simulate(decisions: int, seed: int) -> Traffic:
    """Three classes; top-label confidence 1/3 + 2/3 Beta(8, 1); calibrated up to 0.8,
    then over-confident by a gap growing linearly to OVERCONFIDENCE at 1. Routed by
    T_HIGH and T_LOW; AUDIT_RATE of the automated decisions audited; every escalated
    one recorded and labelled; the other automated ones recorded at RECORD_RATE, and
    OUTCOME_RATE of those labelled by an outcome."""
    rng = np.random.default_rng(seed)
    confidence = 1 / 3 + 2 / 3 * rng.beta(8.0, 1.0, decisions)
    accuracy = confidence - OVERCONFIDENCE * np.clip((confidence - 0.8) / 0.2, 0.0, 1.0)
    hit = rng.uniform(size=decisions) < accuracy
    predicted = rng.integers(0, 3, decisions)
    label = np.where(hit, predicted, (predicted + rng.integers(1, 3, decisions)) % 3)
    tier = np.where(
        confidence >= T_HIGH,
        "AUTOMATED",
        np.where(confidence >= T_LOW, "HUMAN_ASSISTED", "HUMAN_PRIMARY"),
    )
    automated = tier == "AUTOMATED"
    audited = automated & (rng.uniform(size=decisions) < AUDIT_RATE)
    sampled = automated & ~audited
    recorded = ~sampled | (rng.uniform(size=decisions) < RECORD_RATE)
    labelled = recorded & (~sampled | (rng.uniform(size=decisions) < OUTCOME_RATE))
    return Traffic(confidence, hit, predicted, label, tier, audited, recorded, labelled)


class Errors(NamedTuple):
    """Estimate minus the population's value, weighted and unweighted (naive)."""

    tier1: float
    accuracy: float
    ece: float
    naive_tier1: float
    naive_accuracy: float
    naive_ece: float
    tier_shares: float  # the largest of the three tiers' errors


def errors(traffic: Traffic) -> Errors:
    estimated = health(traffic.observations())
    assert estimated.tier1_accuracy is not None
    assert estimated.accuracy is not None
    assert estimated.ece is not None
    ece = equal_width_bins(traffic.confidence, traffic.hit).weighted_gap()
    tier1 = float(traffic.hit[traffic.automated()].mean())
    accuracy = float(traffic.hit.mean())
    seen = traffic.labelled
    return Errors(
        tier1=estimated.tier1_accuracy - tier1,
        accuracy=estimated.accuracy - accuracy,
        ece=estimated.ece - ece,
        naive_tier1=float(traffic.hit[seen & traffic.automated()].mean()) - tier1,
        naive_accuracy=float(traffic.hit[seen].mean()) - accuracy,
        naive_ece=equal_width_bins(traffic.confidence[seen], traffic.hit[seen]).weighted_gap()
        - ece,
        tier_shares=max(
            abs(share - float((traffic.tier == tier).mean()))
            for tier, share in estimated.tier_shares.items()
        ),
    )


@pytest.fixture(scope="module")
def seeded() -> list[Errors]:
    return [errors(simulate(DECISIONS, seed)) for seed in range(SEEDS)]


def observation(
    *,
    tier: str = "AUTOMATED",
    reason: str = "THRESHOLD",
    probability: float = 1.0,
    label: int | None = None,
    predicted: int = 0,
    confidence: float = 0.95,
) -> Observation:
    return Observation(
        request_id="r",
        model="m",
        confidence=confidence,
        predicted_class=predicted,
        tier=tier,
        reason=reason,
        inclusion_probability=probability,
        decided_at=0.0,
        label=label,
    )


def test_a_stratum_weighs_its_estimated_size_over_its_labelled_decisions() -> None:
    """10 recorded at 0.1 (100 decisions), 4 labelled: each labelled weighs 25."""
    sampled = [observation(probability=0.1, label=0 if i < 4 else None) for i in range(10)]
    audited = [observation(reason="AUDIT_SAMPLE", label=0), observation(reason="AUDIT_SAMPLE")]
    escalated = [observation(tier="HUMAN_ASSISTED", label=1)] * 3
    w = weights([*sampled, *audited, *escalated])
    assert w.tolist() == pytest.approx([25.0] * 4 + [0.0] * 6 + [2.0, 0.0] + [1.0] * 3)


def test_a_stratum_recorded_at_two_rates_keeps_each_in_proportion() -> None:
    """Two at 0.1 and two at 0.5 (24 decisions), one of each labelled: 20 and 4."""
    rows = [
        observation(probability=0.1, label=0),
        observation(probability=0.1),
        observation(probability=0.5, label=0),
        observation(probability=0.5),
    ]
    assert weights(rows).tolist() == pytest.approx([20.0, 0.0, 4.0, 0.0])


def test_weighted_estimates_match_the_population(seeded: list[Errors]) -> None:
    """Tier-1 accuracy, accuracy and ECE: each seed within TOLERANCE, the mean within
    BIAS_TOLERANCE."""
    for name in ("tier1", "accuracy", "ece"):
        error = np.array([getattr(run, name) for run in seeded])
        assert np.abs(error).max() < TOLERANCE, name
        assert abs(error.mean()) < BIAS_TOLERANCE, name


def test_unweighted_estimates_of_the_labelled_decisions_are_biased(seeded: list[Errors]) -> None:
    """Escalated decisions are over-represented among the labelled ones: accuracy and
    ECE taken as they come are off by more than TOLERANCE on every seed."""
    for name in ("naive_accuracy", "naive_ece"):
        error = np.array([getattr(run, name) for run in seeded])
        assert np.abs(error).min() > TOLERANCE, name


def test_unweighted_tier1_accuracy_is_unbiased_here(seeded: list[Errors]) -> None:
    """Both AUTOMATED strata are random samples of the automated decisions, so the
    weights matter for Tier-1 accuracy only when the strata differ."""
    error = np.array([run.naive_tier1 for run in seeded])
    assert abs(error.mean()) < BIAS_TOLERANCE


def test_tier_shares_match_the_population(seeded: list[Errors]) -> None:
    """Shares of the tiers, from every recorded decision, within BIAS_TOLERANCE."""
    assert max(run.tier_shares for run in seeded) < BIAS_TOLERANCE


def test_tier1_interval_covers_the_population_accuracy() -> None:
    """95% Clopper-Pearson on Kish's effective size covers in at least 45 of 50 smaller
    populations (only automated decisions enter Tier-1 accuracy, so only they are
    built)."""
    covered = 0
    for seed in range(50):
        traffic = simulate(20_000, 1000 + seed)
        estimated = health(traffic.observations(only=traffic.automated()), level=0.95)
        assert estimated.tier1_interval is not None
        low, high = estimated.tier1_interval
        covered += low <= float(traffic.hit[traffic.automated()].mean()) <= high
    assert covered >= 45


def test_a_stratum_without_labels_is_reported_unseen() -> None:
    """Left out of the estimates, named, and its estimated share given."""
    rows = [
        observation(tier="HUMAN_PRIMARY", reason="RULE", predicted=1),
        observation(tier="HUMAN_PRIMARY", reason="RULE", predicted=1),
        observation(tier="HUMAN_PRIMARY", reason="THRESHOLD", label=1, predicted=1),
        observation(probability=0.5, label=0),
    ]
    estimated = health(rows)
    assert estimated.unseen == (Stratum("HUMAN_PRIMARY", "RULE"),)
    assert estimated.unseen_share == pytest.approx(2 / 5)
    assert estimated.decisions == pytest.approx(5.0)
    assert weights(rows).tolist() == [0.0, 0.0, 1.0, 2.0]
    assert estimated.accuracy == 1.0


def test_override_rates_are_each_tiers_weighted_share_of_changed_labels() -> None:
    """AUTOMATED: 1 of 2 labelled at 0.5 changed (weight 2 each) beside 2 audited
    right: 2 / 6; HUMAN_ASSISTED: 1 of 4 changed."""
    rows = [
        observation(probability=0.5, label=1),
        observation(probability=0.5, label=0),
        observation(reason="AUDIT_SAMPLE", label=0),
        observation(reason="AUDIT_SAMPLE", label=0),
        *[observation(tier="HUMAN_ASSISTED", label=label) for label in (2, 0, 0, 0)],
    ]
    estimated = health(rows)
    assert estimated.override_rates == pytest.approx({"AUTOMATED": 2 / 6, "HUMAN_ASSISTED": 1 / 4})
    assert estimated.tier1_accuracy == pytest.approx(4 / 6)
    assert estimated.tier1_effective == pytest.approx(36 / 10)


def test_reliability_diagram_has_the_bins_asked_for() -> None:
    """Edges, labelled rows per bin and the weighted mass of the seen decisions."""
    rows = [
        observation(confidence=0.95, probability=0.1, label=0),
        observation(confidence=0.65, tier="HUMAN_ASSISTED", label=1),
    ]
    reliability = health(rows, bins=10).reliability
    assert reliability is not None
    assert reliability.edges.shape == (11,)
    assert reliability.count.tolist() == [0] * 6 + [1, 0, 0, 1]
    assert reliability.mass is not None
    assert reliability.mass.sum() == pytest.approx(11.0)
    assert reliability.accuracy.tolist() == [0.0] * 9 + [1.0]


def test_no_observations_give_an_empty_health() -> None:
    """Counts of 0, estimates None, no error."""
    estimated = health([])
    assert (estimated.decisions, estimated.recorded, estimated.labelled) == (0.0, 0, 0)
    assert set(estimated.tier_shares.values()) == {0.0}
    assert estimated.accuracy is None
    assert estimated.tier1_accuracy is None
    assert estimated.tier1_interval is None
    assert estimated.tier1_effective == 0.0
    assert estimated.ece is None
    assert estimated.reliability is None
    assert estimated.override_rates == {}
    assert (estimated.unseen, estimated.unseen_share) == ((), 0.0)


@pytest.mark.parametrize("probability", [0.0, -0.1, 1.5, float("nan")])
def test_an_inclusion_probability_outside_0_1_is_refused(probability: float) -> None:
    """Such a record is corrupt; no weight could be made of it."""
    with pytest.raises(ValueError, match="inclusion probability"):
        health([observation(probability=probability)])


@pytest.mark.parametrize("key", get_args(GroupKey))
def test_by_groups_the_observations_by_one_attribute(key: GroupKey) -> None:
    """Every observation once, under its own value, the values in order."""
    rows = [tagged(key, value) for value in ("b", "a", "b", "")]
    groups = by(rows, key)
    assert list(groups) == ["", "a", "b"]
    assert groups["b"] == [rows[0], rows[2]]
    assert groups["a"] == [rows[1]]
    assert groups[""] == [rows[3]]


def tagged(key: GroupKey, value: str) -> Observation:
    """An observation with value for key and "x" for the other attributes."""
    attributes = dict.fromkeys(get_args(GroupKey), "x") | {key: value}
    return Observation(
        request_id="r",
        model=attributes["model"],
        confidence=0.95,
        predicted_class=0,
        tier="AUTOMATED",
        reason="THRESHOLD",
        inclusion_probability=1.0,
        decided_at=0.0,
        domain=attributes["domain"],
        arm=attributes["arm"],
        group=attributes["group"],
    )


def test_confidence_psi_is_zero_against_the_same_weighted_histogram() -> None:
    """One decision recorded at 0.1 counts as ten."""
    rows = [observation(confidence=0.3, probability=0.1), observation(confidence=0.8)]
    assert confidence_psi(rows, [0.0, 0.5, 1.0], [10, 1]) == pytest.approx(0.0)


def test_confidence_psi_is_large_for_a_shifted_distribution() -> None:
    """Confidence drawn from Beta(8, 2) against a reference from Beta(4, 4)."""
    rng = np.random.default_rng(3)
    edges = np.linspace(0.0, 1.0, 21)
    reference, _ = np.histogram(rng.beta(4.0, 4.0, 5000), bins=edges)
    same = [observation(confidence=c) for c in rng.beta(4.0, 4.0, 5000).tolist()]
    shifted = [observation(confidence=c) for c in rng.beta(8.0, 2.0, 5000).tolist()]
    assert confidence_psi(same, edges.tolist(), reference.tolist()) < 0.02
    assert confidence_psi(shifted, edges.tolist(), reference.tolist()) > 0.25


def test_class_psi_is_zero_for_the_same_shares_and_large_for_new_ones() -> None:
    """Weighted class counts against the reference; a class it never saw counts."""
    rows = [observation(predicted=0, probability=0.5), observation(predicted=1)]
    assert class_psi(rows, [20, 10]) == pytest.approx(0.0)
    moved = [observation(predicted=2)] * 3 + [observation(predicted=0)]
    assert class_psi(moved, [20, 10]) > 0.25


def test_psi_of_no_decisions_is_zero() -> None:
    """Nothing to judge, as the sidecar's guard before its window fills."""
    assert confidence_psi([], [0.0, 0.5, 1.0], [1, 1]) == 0.0
    assert class_psi([], [1, 1]) == 0.0
