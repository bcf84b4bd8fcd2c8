"""Reviewer quality: the figures on hand-built items, Cohen's kappa on hand-computed
cases, and the departure tests' error rate and power on seeded simulated pools."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest

from sidecar.review.item import UNKNOWN_CLASS, ItemState, Resolution, ReviewItem, Verdict
from sidecar.review.quality import (
    ALL,
    NO_AGREEMENT,
    Agreement,
    Check,
    QualityReport,
    chi_square_sf,
    cohen_kappa,
    holm,
    reviewer_quality,
)
from tests.escalations import escalation

SINCE = 1_800_000_000.0
HOUR = 3600.0
UNTIL = SINCE + 2 * HOUR
CLASSES = 3
MODELS = ("m", "n")
# Each model's class shares among the items the pool sees.
SHARES = {"m": np.array([0.5, 0.3, 0.2]), "n": np.array([0.2, 0.6, 0.2])}
REVIEWERS = tuple(f"r{i}" for i in range(8))


def resolved(
    escalation_id: str,
    reviewer: str,
    label_class: int,
    *,
    seconds: float = 30.0,
    at: float = SINCE + 60.0,
    verdict: Verdict | None = None,
    model: str = "m",
    predicted: int = 1,
    request_id: str = "",
) -> ReviewItem:
    """An item of model ``model`` predicting ``predicted``, resolved by ``reviewer`` with
    ``label_class`` (an ACCEPT when it is the predicted class unless ``verdict`` says)."""
    if verdict is None:
        verdict = Verdict.ACCEPT if label_class == predicted else Verdict.OVERRIDE
    return ReviewItem(
        escalation=escalation(
            escalation_id,
            model=model,
            predicted_class=predicted,
            request_id=request_id or f"req-{escalation_id}",
        ),
        state=ItemState.RESOLVED,
        priority=1,
        due_at=at + HOUR,
        escalation_level=0,
        received_at=at - seconds - 10.0,
        claimed_by=reviewer,
        claimed_at=at - seconds,
        resolution=Resolution(reviewer, verdict, label_class, "", "", seconds, at),
    )


def report(items: Sequence[ReviewItem], **kw: object) -> QualityReport:
    return reviewer_quality(items, since=SINCE, until=UNTIL, **kw)  # type: ignore[arg-type]


# -- Figures ---------------------------------------------------------------------------


def hand_built() -> list[ReviewItem]:
    """alice: 4 items (10, 20, 30, 40 s, one override); bob: 2 (5, 15 s, both overrides);
    one resolved before the window and one unresolved, both left out."""
    items = [resolved(f"a{i}", "alice", 1, seconds=10.0 * (i + 1)) for i in range(4)]
    items[3] = resolved("a3", "alice", 2, seconds=40.0)
    items += [resolved("b0", "bob", 0, seconds=5.0), resolved("b1", "bob", 2, seconds=15.0)]
    items.append(resolved("old", "bob", 1, at=SINCE - 1.0))
    open_item = resolved("open", "bob", 1)
    items.append(ReviewItem(open_item.escalation, ItemState.OPEN, 1, UNTIL, 0, SINCE))
    return items


def test_throughput_and_handling_times_per_reviewer() -> None:
    """Resolutions per hour of the window; median and 90th percentile (linear)."""
    quality = report(hand_built())
    alice, bob = quality.reviewers["alice"], quality.reviewers["bob"]
    assert (alice.items, alice.per_hour) == (4, 2.0)
    assert (alice.median_seconds, alice.p90_seconds) == pytest.approx((25.0, 37.0))
    assert (bob.items, bob.per_hour) == (2, 1.0)
    assert (bob.median_seconds, bob.p90_seconds) == pytest.approx((10.0, 14.0))
    assert (alice.overrides, alice.override_rate) == (1, 0.25)
    assert (bob.overrides, bob.override_rate) == (2, 1.0)


def test_groups_and_all_pool_their_reviewers() -> None:
    """A group's figures are over its reviewers' resolutions; reviewers in no group
    count only in "all"."""
    items = [*hand_built(), resolved("c0", "carol", 1, seconds=50.0)]
    quality = report(items, groups={"alice": "day", "bob": "day"})
    day = quality.groups["day"]
    assert (day.reviewers, day.items, day.per_hour, day.overrides) == (("alice", "bob"), 6, 3.0, 3)
    assert day.median_seconds == pytest.approx(17.5)
    assert list(quality.groups) == ["day"]
    assert quality.overall is not None
    assert (quality.overall.name, quality.overall.items) == (ALL, 7)
    assert quality.overall.reviewers == ("alice", "bob", "carol")


def test_agreement_with_ground_truth_rests_on_the_known_labels() -> None:
    """Only resolutions with a ground truth and a class index count toward agreement."""
    items = [
        resolved("t0", "alice", 0),
        resolved("t1", "alice", 1),
        resolved("t2", "alice", 1),
        resolved("t3", "alice", 0),
        resolved("t4", "alice", UNKNOWN_CLASS, verdict=Verdict.OVERRIDE),
        resolved("t5", "alice", 1),  # no ground truth
    ]
    truth = {"req-t0": 0, "req-t1": 1, "req-t2": 0, "req-t3": 1, "req-t4": 2}
    agreement = report(items, truth=truth).reviewers["alice"].truth
    # p_o = 2/4; each rater 2 and 2 of classes 0 and 1, so p_e = 1/2 and kappa = 0
    assert agreement == Agreement(4, 0.5, 0.0)


def test_ground_truth_given_is_reported_available() -> None:
    """A truth mapping, even empty, makes the report say ground truth was read."""
    assert report(hand_built(), truth={}).truth_available
    assert not report(hand_built()).truth_available
    assert report([], truth={}).as_json()["truth_available"] is True


# -- Consensus -------------------------------------------------------------------------


def answer(reviewer: str, label_class: int, at: float, seconds: float = 20.0) -> Resolution:
    verdict = Verdict.ACCEPT if label_class == 1 else Verdict.OVERRIDE
    return Resolution(reviewer, verdict, label_class, "", "", seconds, at)


def consensus_item(
    escalation_id: str,
    answers: Sequence[tuple[str, int]],
    final_class: int,
    *,
    adjudicated_by: str = "",
    at: float = SINCE + 60.0,
) -> ReviewItem:
    """An item needing len(answers) reviews (model m, predicting 1), answered a minute
    apart from ``at`` and resolved: agreed on ``final_class`` (the last answer naming
    it), or adjudicated by a lead a minute after the last answer."""
    given = tuple(answer(r, c, at + 60.0 * i) for i, (r, c) in enumerate(answers))
    done = at + 60.0 * len(given)
    if adjudicated_by:
        final = replace(
            answer(adjudicated_by, final_class, done, seconds=45.0),
            agreement=f"adjudicated (1 of {len(given)} agreed)",
        )
    else:
        agreeing = [a for a in given if a.label_class == final_class][-1]
        votes = sum(a.label_class == final_class for a in given)
        final = replace(agreeing, resolved_at=done, agreement=f"{votes} of {len(given)}")
    item = resolved(escalation_id, final.reviewer, final_class, at=done)
    return replace(
        item, resolution=final, reviews_required=len(given), answered=len(given), answers=given
    )


def consensus_pool() -> list[ReviewItem]:
    """Four items needing two reviews between alice and bob (two agreed, two
    adjudicated by lead) and one of three reviews decided by a majority."""
    return [
        consensus_item("c0", [("alice", 1), ("bob", 1)], 1),
        consensus_item("c1", [("bob", 0), ("alice", 0)], 0),
        consensus_item("c2", [("alice", 2), ("bob", 0)], 0, adjudicated_by="lead"),
        consensus_item("c3", [("alice", 1), ("bob", 2)], 2, adjudicated_by="lead"),
        consensus_item("c4", [("alice", 1), ("bob", 2), ("carol", 1)], 1),
    ]


def test_each_answer_counts_as_a_label_given() -> None:
    """Every answer is its reviewer's work; an agreed final resolution repeats an
    answer and is not counted again; a lead's adjudication is the lead's."""
    quality = report(consensus_pool())
    counts = {name: q.items for name, q in quality.reviewers.items()}
    assert counts == {"alice": 5, "bob": 5, "carol": 1, "lead": 2}
    assert quality.reviewers["lead"].median_seconds == pytest.approx(45.0)
    assert quality.overall is not None
    assert quality.overall.items == 13


def test_agreement_with_consensus_per_reviewer() -> None:
    """The share of a reviewer's answers equal to the final class, and its kappa."""
    quality = report(consensus_pool())
    alice, bob = quality.reviewers["alice"].consensus, quality.reviewers["bob"].consensus
    # alice answered 1, 0, 2, 1, 1 against finals 1, 0, 0, 2, 1: 3 of 5.
    # p_e = (3*2 + 1*2 + 1*1) / 25 = 9/25 (alice 1:3 0:1 2:1; finals 1:2 0:2 2:1)
    assert (alice.items, alice.rate) == (5, 0.6)
    assert alice.kappa == pytest.approx((15 - 9) / (25 - 9))
    # bob answered 1, 0, 0, 2, 2 against the same finals: 4 of 5.
    assert (bob.items, bob.rate) == (5, 0.8)
    assert quality.reviewers["carol"].consensus == Agreement(1, 1.0, None)
    # A lead's adjudication is the final class, not an answer compared with it.
    assert quality.reviewers["lead"].consensus == NO_AGREEMENT
    assert quality.overall is not None
    assert quality.overall.consensus.items == 11


def test_consensus_answers_give_pairwise_kappa_without_adjudications() -> None:
    """Pairs come from the answers of one item; a lead's adjudication is left out."""
    pairs = {(p.first, p.second): p.agreement for p in report(consensus_pool()).pairs}
    assert set(pairs) == {("alice", "bob"), ("alice", "carol"), ("bob", "carol")}
    # alice 1, 0, 2, 1, 1; bob 1, 0, 0, 2, 2: agree on 2 of 5
    assert (pairs["alice", "bob"].items, pairs["alice", "bob"].rate) == (5, 0.4)
    assert pairs["alice", "carol"] == Agreement(1, 1.0, None)


def test_answers_outside_the_window_are_left_out() -> None:
    """An answer counts in the window it was given in, whenever its item resolved."""
    item = consensus_item("c0", [("alice", 1), ("bob", 1)], 1, at=SINCE - 30.0)
    quality = report([item])  # alice answered before the window, bob in it
    assert "alice" not in quality.reviewers
    assert quality.reviewers["bob"].items == 1
    assert quality.reviewers["bob"].consensus == Agreement(1, 1.0, None)


# -- Kappa -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        ([0, 1, 2, 0], [0, 1, 2, 0], Agreement(4, 1.0, 1.0)),  # perfect agreement
        ([0, 0, 1, 1], [0, 1, 0, 1], Agreement(4, 0.5, 0.0)),  # exactly chance
        ([0, 1], [1, 0], Agreement(2, 0.0, -1.0)),  # systematic disagreement
        # 50 items: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no: p_o .7, p_e .5
        ([1] * 25 + [0] * 25, [1] * 20 + [0] * 5 + [1] * 10 + [0] * 15, Agreement(50, 0.7, 0.4)),
        # p_o = 3/5; p_e = (3*3 + 2*2) / 25 = 13/25, so kappa = (15 - 13) / (25 - 13)
        ([0, 0, 0, 1, 1], [0, 0, 1, 1, 0], Agreement(5, 0.6, 1 / 6)),
        ([2, 2, 2], [2, 2, 2], Agreement(3, 1.0, None)),  # one class: chance is certain
        ([0, 0], [1, 1], Agreement(2, 0.0, 0.0)),  # one class each, never the same
        ([], [], NO_AGREEMENT),
    ],
)
def test_cohen_kappa_on_hand_computed_cases(
    first: list[int], second: list[int], expected: Agreement
) -> None:
    """Kappa against hand-computed values; undefined (None) where p_e is 1 or nothing to compare."""
    got = cohen_kappa(first, second)
    assert got.items == expected.items
    assert got.rate == pytest.approx(expected.rate)
    assert got.kappa == pytest.approx(expected.kappa)


def test_pairwise_kappa_on_escalations_both_answered() -> None:
    """Several answers to one escalation give each pair's kappa; the latest answer counts."""
    alice = [0, 0, 1, 1, 2]
    bob = [0, 0, 1, 2, 2]
    items = [resolved(f"e{i}", "alice", c) for i, c in enumerate(alice)]
    items += [resolved(f"e{i}", "bob", c) for i, c in enumerate(bob)]
    items.append(resolved("e0", "carol", 1))
    items.append(resolved("e0", "bob", 1, at=SINCE))  # superseded by bob's later 0
    pairs = {(p.first, p.second): p.agreement for p in report(items).pairs}
    assert set(pairs) == {("alice", "bob"), ("alice", "carol"), ("bob", "carol")}
    # p_o = 4/5; p_e = (2*2 + 2*1 + 1*2) / 25 = 8/25; kappa = (20 - 8) / (25 - 8)
    assert pairs["alice", "bob"].rate == pytest.approx(0.8)
    assert pairs["alice", "bob"].kappa == pytest.approx(12 / 17)
    assert pairs["alice", "carol"] == Agreement(1, 0.0, 0.0)


def test_no_pairs_when_each_escalation_has_one_answer() -> None:
    """Today's queue (one resolution per item) has no pairwise kappa."""
    assert report(hand_built()).pairs == ()


# -- The statistics --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "df", "p"),
    [
        (3.841458820694124, 1, 0.05),
        (5.991464547107979, 2, 0.05),
        (7.814727903251179, 3, 0.05),
        (9.487729036781154, 4, 0.05),
        (18.307038053275146, 10, 0.05),
        (6.6348966010212145, 1, 0.01),
        (15.08627246938899, 5, 0.01),
        (23.209251158954356, 10, 0.01),
        (0.0, 3, 1.0),
    ],
)
def test_chi_square_survival_at_known_quantiles(x: float, df: int, p: float) -> None:
    """The closed form matches the tables' critical values."""
    assert chi_square_sf(x, df) == pytest.approx(p, rel=1e-9)


def test_holm_adjusts_step_down_and_keeps_order() -> None:
    """Smallest p times m, the next times m - 1, ..., kept monotone and at most 1."""
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0]
    assert holm([]) == []


# -- Departure tests on simulated pools --------------------------------------------------


def simulated_pool(
    seed: int,
    items: int,
    biased: str = "",
    reviewers: Sequence[str] = REVIEWERS,
) -> list[ReviewItem]:
    """Items of two models spread at random over the reviewers. Each item's true class
    follows its model's shares; the model predicts it 60% of the time; a reviewer
    labels it right 85% of the time, else one of the other classes. ``biased`` then
    moves labels to class 2 until it labels class 2 twice as often as the others do."""
    rng = np.random.default_rng(seed)
    model = rng.integers(0, len(MODELS), items)
    shares = np.stack([SHARES[MODELS[m]] for m in model])
    true = (rng.random(items)[:, None] > np.cumsum(shares, axis=1)).sum(axis=1)
    offset = rng.integers(1, CLASSES, items)
    predicted = np.where(rng.random(items) < 0.6, true, (true + offset) % CLASSES)
    offset = rng.integers(1, CLASSES, items)
    label = np.where(rng.random(items) < 0.85, true, (true + offset) % CLASSES)
    who = rng.integers(0, len(reviewers), items)
    if biased:
        # The pool's share s of class 2 per model; moving a non-2 label with
        # probability s / (1 - s) makes it 2s.
        share = np.array([0.85 * SHARES[m][2] + 0.075 * (1 - SHARES[m][2]) for m in MODELS])
        move = rng.random(items) < (share / (1 - share))[model]
        label = np.where((np.array(reviewers)[who] == biased) & move, 2, label)
    seconds = rng.exponential(40.0, items)
    at = SINCE + rng.random(items) * (UNTIL - SINCE)
    return [
        resolved(
            f"e{i}",
            reviewers[who[i]],
            int(label[i]),
            seconds=float(seconds[i]),
            at=float(at[i]),
            model=MODELS[model[i]],
            predicted=int(predicted[i]),
        )
        for i in range(items)
    ]


def test_a_reviewer_labelling_a_class_twice_as_often_is_flagged() -> None:
    """8 reviewers over 3000 items: the biased one is flagged on labels, nobody else."""
    quality = report(simulated_pool(seed=7, items=3000, biased="r3"))
    flags = quality.flags
    assert [(f.reviewer, f.check) for f in flags if f.check is Check.LABELS] == [
        ("r3", Check.LABELS)
    ]
    assert {f.reviewer for f in flags} == {"r3"}
    assert flags[0].adjusted_p_value <= 0.01
    assert flags[0].reason.startswith("labels class 2 in ")
    assert "resolutions of " in flags[0].reason
    assert len(quality.tests) == 2 * len(REVIEWERS)


def test_power_at_150_resolutions_per_reviewer() -> None:
    """Over 100 seeded pools of 1200 items (150 per reviewer) the biased one is flagged
    in nearly all; the others almost never."""
    pools = [report(simulated_pool(seed=300 + s, items=1200, biased="r3")) for s in range(100)]
    caught = sum(("r3", Check.LABELS) in {(f.reviewer, f.check) for f in p.flags} for p in pools)
    others = sum(any(f.reviewer != "r3" for f in p.flags) for p in pools)
    assert caught >= 90  # 96.5% measured over 200 other pools
    assert others <= allowance(100, 0.01)


def allowance(pools: int, level: float, tail: float = 0.001) -> int:
    """The count of pools with a false flag that Binomial(pools, level) exceeds with
    probability below ``tail``."""
    k, above = 0, 1.0
    while True:
        above -= math.comb(pools, k) * level**k * (1 - level) ** (pools - k)
        if above < tail:
            return k
        k += 1


def test_false_flags_across_null_pools_stay_within_the_level() -> None:
    """200 seeded pools with no biased reviewer: pools with any flag stay within the
    level (Holm's family-wise bound) plus a 99.9% binomial allowance."""
    pools, level = 200, 0.01
    flagged = sum(
        bool(report(simulated_pool(seed=1000 + s, items=960), level=level).flags)
        for s in range(pools)
    )
    assert flagged <= allowance(pools, level)  # 8 of 200 at level 0.01


def test_a_reviewer_under_the_minimum_is_never_flagged() -> None:
    """29 resolutions all of one class: not tested at 30, flagged once the minimum allows."""
    items = simulated_pool(seed=3, items=1200, reviewers=REVIEWERS[:4])
    items += [resolved(f"x{i}", "newcomer", 2, model="m") for i in range(29)]
    quality = report(items)
    assert "newcomer" in quality.reviewers
    assert all(t.reviewer != "newcomer" for t in quality.tests)
    lowered = report(items, min_count=29)
    assert ("newcomer", Check.LABELS) in {(f.reviewer, f.check) for f in lowered.flags}


def test_no_test_rests_on_fewer_than_the_minimum() -> None:
    """In small pools (about 30 each) only reviewers at the minimum are tested."""
    for seed in range(20):
        quality = report(simulated_pool(seed=seed, items=240))
        assert all(t.resolutions >= 30 for t in quality.tests)
        small = {name for name, q in quality.reviewers.items() if q.items < 30}
        assert not small & {t.reviewer for t in quality.tests}


def test_overriding_more_than_the_pool_is_flagged() -> None:
    """A reviewer who overrides every item while the pool accepts most is flagged."""
    items = simulated_pool(seed=5, items=1200, reviewers=REVIEWERS[:4])
    items += [
        resolved(f"o{i}", "contrarian", i % CLASSES, predicted=(i + 1) % CLASSES, model="m")
        for i in range(60)
    ]
    flags = {(f.reviewer, f.check) for f in report(items).flags}
    assert ("contrarian", Check.OVERRIDE_RATE) in flags


def test_reviewers_are_compared_on_the_same_model() -> None:
    """A reviewer who sees mostly one model is not flagged for that model's classes."""
    rng = np.random.default_rng(11)
    items = simulated_pool(seed=11, items=2000, reviewers=REVIEWERS[:4])
    for i in range(300):
        model = "n" if rng.random() < 0.9 else "m"
        true = int(rng.choice(CLASSES, p=SHARES[model]))
        items.append(resolved(f"s{i}", "specialist", true, model=model, predicted=true))
    tests = {(t.reviewer, t.check): t for t in report(items).tests}
    assert not tests["specialist", Check.LABELS].flagged
    # Pooled over models, the same labels would stand out: class 1 is n's commonest.
    pooled = report(items, stratum=lambda e: "any")
    assert {(f.reviewer, f.check) for f in pooled.flags} >= {("specialist", Check.LABELS)}


# -- Edges -----------------------------------------------------------------------------


def test_empty_input_gives_an_empty_report() -> None:
    """No items, or none in the window: no figures, pairs or tests, and no error."""
    for items in ([], [resolved("late", "alice", 1, at=UNTIL)]):
        quality = report(items, truth={}, groups={"alice": "day"})
        assert quality.overall is None
        assert (dict(quality.reviewers), dict(quality.groups)) == ({}, {})
        assert (quality.pairs, quality.tests, quality.flags) == ((), (), ())
        assert quality.as_json()[ALL] is None


def test_as_json_is_plain_data() -> None:
    """The report serialises with no NaN or infinity and names every section."""
    items = [*simulated_pool(seed=2, items=600), resolved("e0", "r9", 0)]
    text = json.dumps(report(items, groups={"r0": "day"}).as_json(), allow_nan=False)
    data = json.loads(text)
    assert set(data) == {
        "window", "level", "min_count", "correction", "truth_available", ALL, "reviewers",
        "groups", "pairs", "tests", "flags",
    }  # fmt: skip
    assert data["truth_available"] is False
    assert data["reviewers"]["r0"]["truth"] == {"items": 0, "rate": None, "kappa": None}
    assert data["reviewers"]["r0"]["consensus"] == {"items": 0, "rate": None, "kappa": None}
    assert data["tests"][0]["check"] in {"labels", "override_rate"}


@pytest.mark.parametrize(
    ("kw", "problem"),
    [
        ({"until": SINCE}, "window is empty"),
        ({"level": 1.0}, "level"),
        ({"level": 0.0}, "level"),
        ({"min_count": 0}, "min_count"),
    ],
)
def test_bad_arguments_are_refused(kw: dict[str, float], problem: str) -> None:
    """An empty window, a level outside (0, 1) or a minimum below 1: ValueError."""
    args: dict[str, float] = {"since": SINCE, "until": UNTIL, **kw}
    with pytest.raises(ValueError, match=problem):
        reviewer_quality([], **args)  # type: ignore[arg-type]
