"""Reviewer quality: what a lead sees of each reviewer, each group of reviewers and
all of them over a window, and the flags for reviewer-specific patterns (issue 31,
item 3). Pure: the caller reads the resolved items and the ground truth; no I/O, no
clock, and no scipy (the sidecar must not import it: the p-values below come from
``math``).

The figures are taken over the labels reviewers gave in the window ``[since,
until)`` on resolved items (items without a resolution are skipped): an item needing
one review gives its resolution; an item needing several (consensus) gives each
reviewer's answer, at the time it was given, and, when a lead adjudicated it, the
lead's resolution too (its agreed final resolution repeats an answer and is not
counted again):

- ``items`` and ``per_hour``: labels given, and per hour of the window (a group's is
  the group's total, not per head; a reviewer's counts the whole window, not the
  hours they worked);
- ``median_seconds`` and ``p90_seconds`` of ``time_to_label_seconds`` (numpy's
  default, linear interpolation between order statistics);
- ``override_rate``: the share of OVERRIDE verdicts;
- ``consensus``: agreement with consensus, over the reviewer's answers to items
  needing several reviews: the share equal to the item's final class (agreed, or a
  lead's adjudication), the count it rests on, and Cohen's kappa between the answers
  and the final classes. The reviewer's own answer is one of the votes the final
  class came from, so the share reads high by construction; what it shows is how
  often a reviewer is the one outvoted or overruled;
- ``truth``: agreement with the ground truth the feedback service received later
  (keyed by ``request_id``): the share of labels whose ``label_class`` equals it,
  the count that share rests on, and Cohen's kappa over the classes seen. ``truth``
  None (the caller could not read any) is reported as unavailable, not as no match;
- ``pairs``: Cohen's kappa between two reviewers over the escalations both answered
  independently (a consensus item's answers, or several items with one
  ``escalation_id``; a lead's adjudication, given after seeing the answers, is left
  out; a reviewer who answered one twice counts with their latest answer).

Labels given by name only (``UNKNOWN_CLASS``) are left out of every agreement.

Kappa is ``(p_o - p_e) / (1 - p_e)``, computed on integer counts; it is ``None``
(undefined, never a division by zero) when there is nothing to compare or when
chance agreement is certain (both raters used one and the same class).

Flags. Each reviewer is compared with the rest of the pool on comparable items: the
same stratum, by default the same model (``stratum`` says otherwise). Two tests:

1. ``labels``: Pearson's chi-square test of homogeneity on the 2 x K table of label
   counts (the reviewer, everyone else) in each stratum; statistics and degrees of
   freedom are added over strata (independent chi-squares under the null). In each
   stratum, classes are pooled, rarest first, until every expected count is at least
   5 (Cochran's rule); the pooling depends on the margins only, so the null
   distribution stands. Assumptions: resolutions are independent, and a stratum's
   items reach reviewers without regard to their true class (the queue's order, not
   their content). Several answers to one escalation make the reviewer's and the
   rest's counts positively correlated, which makes the test conservative.
2. ``override_rate``: the Cochran-Mantel-Haenszel test over strata of the 2 x 2
   tables (the reviewer, everyone else) x (OVERRIDE, ACCEPT); in one stratum it is
   the two-proportion z-test with the hypergeometric variance, z^2 (N - 1) / N.
   Chi-square on 1 df, two-sided, normal approximation.

p-values are the chi-square survival function for integer degrees of freedom in
closed form: ``erfc`` for the odd start and a finite sum of Poisson-like terms
(Abramowitz and Stegun 26.4.4 and 26.4.5): exact to rounding, no series cut off.

Correction: Holm's step-down procedure over the family of every test eligible at
the start (both kinds, every reviewer), at ``level`` (default 0.01): the smallest p
is flagged when m times it is at most the level, the next when m - 1 times it is,
and so on. One change: after each flag the remaining tests are run again with the
flagged reviewer out of the pool the others are compared with (for both kinds),
since one reviewer who departs shifts "the rest" for everybody else and would get
faithful colleagues flagged in a large pool. Under the global null the first step is
Holm's first step and any false flag needs a first one, so the chance of any false
flag in a report is at most the level, whatever the dependence between the tests;
with a departing reviewer removed, the others are tested against a pool that meets
their null (tests/unit/review/test_quality.py measures both). Adjusted p-values are
Holm's, step by step.

A reviewer takes a test only with at least ``min_count`` resolutions (default 30)
that count toward it: with a known class (labels) and in strata where the rest of
the pool also answered. A flag asks a lead to look; it does not say who is wrong."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import numpy as np

from sidecar.escalation.record import Escalation
from sidecar.review.consensus import is_adjudicated
from sidecar.review.item import UNKNOWN_CLASS, Resolution, ReviewItem, Verdict

DEFAULT_LEVEL = 0.01
DEFAULT_MIN_COUNT = 30
# Cochran's rule: the chi-square approximation wants every expected count this large.
MIN_EXPECTED = 5.0
ALL = "all"  # the name of the figures over every reviewer


class Check(StrEnum):
    """The two departure tests (the module's docstring states them)."""

    LABELS = "labels"
    OVERRIDE_RATE = "override_rate"


@dataclass(frozen=True, slots=True)
class Agreement:
    """How often two sets of labels on the same items agree, and Cohen's kappa."""

    items: int  # the items it rests on
    rate: float | None  # None: no items
    kappa: float | None  # None: no items, or chance agreement is certain

    def as_json(self) -> dict[str, Any]:
        return {"items": self.items, "rate": self.rate, "kappa": self.kappa}


NO_AGREEMENT = Agreement(0, None, None)


@dataclass(frozen=True, slots=True)
class ReviewerQuality:
    """The figures of one reviewer, one group, or all reviewers (``name`` ALL)."""

    name: str
    reviewers: tuple[str, ...]
    items: int
    per_hour: float
    median_seconds: float
    p90_seconds: float
    overrides: int
    override_rate: float
    truth: Agreement  # against the ground truth, where known
    consensus: Agreement = NO_AGREEMENT  # answers against their items' final classes

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "reviewers": list(self.reviewers),
            "items": self.items,
            "per_hour": self.per_hour,
            "median_seconds": self.median_seconds,
            "p90_seconds": self.p90_seconds,
            "overrides": self.overrides,
            "override_rate": self.override_rate,
            "truth": self.truth.as_json(),
            "consensus": self.consensus.as_json(),
        }


@dataclass(frozen=True, slots=True)
class PairKappa:
    """Two reviewers (first < second) on the escalations both answered."""

    first: str
    second: str
    agreement: Agreement

    def as_json(self) -> dict[str, Any]:
        return {"first": self.first, "second": self.second, **self.agreement.as_json()}


@dataclass(frozen=True, slots=True)
class Departure:
    """One test of one reviewer against the rest of the pool."""

    reviewer: str
    check: Check
    resolutions: int  # the reviewer's resolutions it rests on
    statistic: float  # chi-square
    df: int
    p_value: float
    adjusted_p_value: float  # Holm, over every test in the report
    flagged: bool
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {
            "reviewer": self.reviewer,
            "check": self.check.value,
            "resolutions": self.resolutions,
            "statistic": self.statistic,
            "df": self.df,
            "p_value": self.p_value,
            "adjusted_p_value": self.adjusted_p_value,
            "flagged": self.flagged,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class QualityReport:
    since: float
    until: float
    level: float
    min_count: int
    overall: ReviewerQuality | None  # None: nothing resolved in the window
    reviewers: Mapping[str, ReviewerQuality] = field(default_factory=dict)
    groups: Mapping[str, ReviewerQuality] = field(default_factory=dict)
    pairs: tuple[PairKappa, ...] = ()
    tests: tuple[Departure, ...] = ()  # every test run, flagged or not
    truth_available: bool = False  # the caller read the ground truth (it may be empty)

    @property
    def flags(self) -> tuple[Departure, ...]:
        return tuple(t for t in self.tests if t.flagged)

    def as_json(self) -> dict[str, Any]:
        """The report as plain data for the console's page or an API."""
        return {
            "window": {"since": self.since, "until": self.until},
            "level": self.level,
            "min_count": self.min_count,
            "correction": "holm",
            "truth_available": self.truth_available,
            ALL: None if self.overall is None else self.overall.as_json(),
            "reviewers": {name: q.as_json() for name, q in self.reviewers.items()},
            "groups": {name: q.as_json() for name, q in self.groups.items()},
            "pairs": [p.as_json() for p in self.pairs],
            "tests": [t.as_json() for t in self.tests],
            "flags": [t.as_json() for t in self.flags],
        }


def by_model(escalation: Escalation) -> str:
    """The default stratum: items of one model are comparable."""
    return escalation.model


@dataclass(frozen=True, slots=True)
class _Answer:
    """One label a reviewer gave, reduced to what the figures need."""

    reviewer: str
    escalation_id: str
    stratum: str
    label_class: int
    override: bool
    seconds: float
    resolved_at: float
    truth: int | None
    final: int | None = None  # an answer's item's final class (consensus only)
    independent: bool = True  # False: a lead's adjudication, given seeing the answers


def reviewer_quality(
    items: Iterable[ReviewItem],
    *,
    since: float,
    until: float,
    truth: Mapping[str, int] | None = None,
    groups: Mapping[str, str] | None = None,
    level: float = DEFAULT_LEVEL,
    min_count: int = DEFAULT_MIN_COUNT,
    stratum: Callable[[Escalation], str] = by_model,
) -> QualityReport:
    """The report over the labels given in ``[since, until)`` on resolved items.
    ``truth``: request_id -> the true class (None: unavailable); ``groups``: reviewer
    -> group name (reviewers not named belong to no group). ValueError for an empty
    window, a level outside (0, 1) or a minimum below 1."""
    if not until > since:
        raise ValueError(f"the window is empty: until {until} is not after since {since}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level {level} is not between 0 and 1")
    if min_count < 1:
        raise ValueError(f"min_count {min_count} is below 1")
    answers = _answers(items, since, until, truth or {}, stratum)
    available = truth is not None
    empty = QualityReport(since, until, level, min_count, None, truth_available=available)
    if not answers:
        return empty
    hours = (until - since) / 3600.0
    by_reviewer: dict[str, list[_Answer]] = defaultdict(list)
    by_group: dict[str, list[_Answer]] = defaultdict(list)
    for a in answers:
        by_reviewer[a.reviewer].append(a)
        if groups and a.reviewer in groups:
            by_group[groups[a.reviewer]].append(a)
    return QualityReport(
        since,
        until,
        level,
        min_count,
        overall=_figures(ALL, answers, hours),
        reviewers=MappingProxyType(
            {name: _figures(name, by_reviewer[name], hours) for name in sorted(by_reviewer)}
        ),
        groups=MappingProxyType(
            {name: _figures(name, by_group[name], hours) for name in sorted(by_group)}
        ),
        pairs=_pairs(answers),
        tests=_departures(answers, level, min_count),
        truth_available=available,
    )


def _answers(
    items: Iterable[ReviewItem],
    since: float,
    until: float,
    truth: Mapping[str, int],
    stratum: Callable[[Escalation], str],
) -> list[_Answer]:
    answers = []
    for item in items:
        final = item.resolution
        if final is None:
            continue
        e = item.escalation
        for given, of_final, independent in _labels_given(item, final):
            if not since <= given.resolved_at < until:
                continue
            answers.append(
                _Answer(
                    reviewer=given.reviewer,
                    escalation_id=e.escalation_id,
                    stratum=stratum(e),
                    label_class=given.label_class,
                    override=given.verdict is Verdict.OVERRIDE,
                    seconds=given.time_to_label_seconds,
                    resolved_at=given.resolved_at,
                    truth=truth.get(e.request_id),
                    final=of_final,
                    independent=independent,
                )
            )
    return answers


def _labels_given(item: ReviewItem, final: Resolution) -> list[tuple[Resolution, int | None, bool]]:
    """(label, the final class it is compared with, given independently) for each
    label a reviewer gave the resolved item."""
    if not item.answers:
        return [(final, None, True)]
    given: list[tuple[Resolution, int | None, bool]] = [
        (a, final.label_class, True) for a in item.answers
    ]
    if is_adjudicated(final):
        given.append((final, None, False))
    return given


def _figures(name: str, answers: Sequence[_Answer], hours: float) -> ReviewerQuality:
    seconds = np.array([a.seconds for a in answers], dtype=float)
    median, p90 = (float(q) for q in np.percentile(seconds, [50, 90]))
    overrides = sum(a.override for a in answers)
    return ReviewerQuality(
        name=name,
        reviewers=tuple(sorted({a.reviewer for a in answers})),
        items=len(answers),
        per_hour=len(answers) / hours,
        median_seconds=median,
        p90_seconds=p90,
        overrides=overrides,
        override_rate=overrides / len(answers),
        truth=_agreement([(a.label_class, a.truth) for a in answers]),
        consensus=_agreement([(a.label_class, a.final) for a in answers]),
    )


def _agreement(pairs: Iterable[tuple[int, int | None]]) -> Agreement:
    """Agreement over the pairs whose reference is known and both classes named."""
    known = [
        (label, reference)
        for label, reference in pairs
        if reference is not None and UNKNOWN_CLASS not in (label, reference)
    ]
    return cohen_kappa([label for label, _ in known], [reference for _, reference in known])


def cohen_kappa(first: Sequence[int], second: Sequence[int]) -> Agreement:
    """Agreement of two raters' labels on the same items (``first[i]`` and
    ``second[i]`` label item i), with Cohen's kappa over the classes either used."""
    if len(first) != len(second):
        raise ValueError(f"{len(first)} labels against {len(second)}")
    n = len(first)
    if n == 0:
        return NO_AGREEMENT
    agreed = sum(a == b for a, b in zip(first, second, strict=True))
    counts_first, counts_second = Counter(first), Counter(second)
    # chance is n^2 p_e, so kappa = (n agreed - chance) / (n^2 - chance): integers,
    # and p_e = 1 (the degenerate case) is caught exactly.
    chance = sum(c * counts_second[k] for k, c in counts_first.items())
    kappa = None if chance == n * n else (agreed * n - chance) / (n * n - chance)
    return Agreement(n, agreed / n, kappa)


def _pairs(answers: Sequence[_Answer]) -> tuple[PairKappa, ...]:
    latest: dict[str, dict[str, _Answer]] = defaultdict(dict)
    for a in answers:
        if a.label_class == UNKNOWN_CLASS or not a.independent:
            continue
        mine = latest[a.escalation_id]
        if a.reviewer not in mine or mine[a.reviewer].resolved_at <= a.resolved_at:
            mine[a.reviewer] = a
    labels: dict[tuple[str, str], tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
    for answered in latest.values():
        names = sorted(answered)
        for i, first in enumerate(names):
            for second in names[i + 1 :]:
                ours, theirs = labels[first, second]
                ours.append(answered[first].label_class)
                theirs.append(answered[second].label_class)
    return tuple(
        PairKappa(first, second, cohen_kappa(*labels[first, second]))
        for first, second in sorted(labels)
    )


# -- The departure tests -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Result:
    reviewer: str
    check: Check
    resolutions: int
    statistic: float
    df: int
    p_value: float
    reason: str


@dataclass(frozen=True, slots=True)
class _Counts:
    """Resolutions of one stratum by one reviewer or a set of them."""

    labels: Counter[int]  # by class; UNKNOWN_CLASS left out
    items: int
    overrides: int

    def minus(self, other: _Counts) -> _Counts:
        return _Counts(
            self.labels - other.labels, self.items - other.items, self.overrides - other.overrides
        )


@dataclass(slots=True)
class _Stratum:
    """One stratum's counts per reviewer. A test takes the reviewer's counts and the
    rest's as differences of sums, so it costs the number of classes, not of
    resolutions."""

    labels: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    items: Counter[str] = field(default_factory=Counter)
    overrides: Counter[str] = field(default_factory=Counter)

    def add(self, a: _Answer) -> None:
        self.items[a.reviewer] += 1
        self.overrides[a.reviewer] += a.override
        if a.label_class != UNKNOWN_CLASS:
            self.labels[a.reviewer][a.label_class] += 1

    def own(self, reviewer: str) -> _Counts:
        labels = self.labels.get(reviewer, Counter())
        return _Counts(labels, self.items[reviewer], self.overrides[reviewer])

    def pool(self, excluded: frozenset[str]) -> _Counts:
        labels: Counter[int] = Counter()
        for reviewer, counts in self.labels.items():
            if reviewer not in excluded:
                labels.update(counts)
        return _Counts(
            labels,
            sum(n for reviewer, n in self.items.items() if reviewer not in excluded),
            sum(n for reviewer, n in self.overrides.items() if reviewer not in excluded),
        )


# (stratum, the reviewer's counts, the rest of the pool's) for each stratum
_Sides = list[tuple[str, _Counts, _Counts]]


def _departures(answers: Sequence[_Answer], level: float, min_count: int) -> tuple[Departure, ...]:
    """Holm's step-down, re-testing after each flag without the flagged reviewers in
    the pool the others are compared with."""
    strata: dict[str, _Stratum] = defaultdict(_Stratum)
    for a in answers:
        strata[a.stratum].add(a)
    everyone = [(reviewer, check) for reviewer in sorted(_reviewers(strata)) for check in Check]
    results = _tests(strata, everyone, frozenset(), min_count)
    m = len(results)  # the family: every test eligible at the start
    flagged: list[Departure] = []
    excluded: frozenset[str] = frozenset()
    running = 0.0
    while results:
        first = min(results, key=lambda r: (r.p_value, r.reviewer, r.check))
        bound = min(1.0, (m - len(flagged)) * first.p_value)
        if bound > level:
            break
        running = max(running, bound)
        flagged.append(_departure(first, running, flagged=True))
        excluded |= {first.reviewer}
        pending = [(r.reviewer, r.check) for r in results if r is not first]
        results = _tests(strata, pending, excluded, min_count)
    adjusted = _step_down([r.p_value for r in results], m - len(flagged), running)
    rest = [_departure(r, p, flagged=False) for r, p in zip(results, adjusted, strict=True)]
    return tuple(sorted([*flagged, *rest], key=lambda d: (d.reviewer, d.check)))


def _reviewers(strata: Mapping[str, _Stratum]) -> set[str]:
    return {reviewer for stratum in strata.values() for reviewer in stratum.items}


def _tests(
    strata: Mapping[str, _Stratum],
    pending: Iterable[tuple[str, Check]],
    excluded: frozenset[str],
    min_count: int,
) -> list[_Result]:
    pools = {name: stratum.pool(excluded) for name, stratum in strata.items()}
    results = []
    for reviewer, check in pending:
        sides: _Sides = []
        for name, stratum in strata.items():
            ours = stratum.own(reviewer)
            theirs = pools[name] if reviewer in excluded else pools[name].minus(ours)
            sides.append((name, ours, theirs))
        test = _label_test if check is Check.LABELS else _override_test
        result = test(reviewer, sides)
        if result is not None and result.resolutions >= min_count:
            results.append(result)
    return results


def _departure(r: _Result, adjusted: float, *, flagged: bool) -> Departure:
    return Departure(
        reviewer=r.reviewer,
        check=r.check,
        resolutions=r.resolutions,
        statistic=r.statistic,
        df=r.df,
        p_value=r.p_value,
        adjusted_p_value=adjusted,
        flagged=flagged,
        reason=r.reason,
    )


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: rejecting those at or
    below a level keeps the family-wise error rate at that level."""
    return _step_down(p_values, len(p_values), 0.0)


def _step_down(p_values: Sequence[float], remaining: int, running: float) -> list[float]:
    """Holm's adjustment of the tests left after earlier steps: the j-th smallest
    (from 0) times ``remaining - j``, never below an earlier step's ``running``."""
    adjusted = [1.0] * len(p_values)
    for rank, i in enumerate(sorted(range(len(p_values)), key=p_values.__getitem__)):
        running = max(running, min(1.0, (remaining - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def _label_test(reviewer: str, sides: _Sides) -> _Result | None:
    statistic, df = 0.0, 0
    tested = []
    for name, ours, theirs in sides:
        s, d = _homogeneity(ours.labels, theirs.labels)
        if d > 0:
            statistic, df = statistic + s, df + d
            tested.append((name, ours.labels, theirs.labels))
    if df == 0:
        return None
    return _Result(
        reviewer,
        Check.LABELS,
        sum(ours.total() for _, ours, _ in tested),
        statistic,
        df,
        chi_square_sf(statistic, df),
        _label_reason(tested),
    )


def _homogeneity(ours: Counter[int], theirs: Counter[int]) -> tuple[float, int]:
    """Pearson's chi-square and its degrees of freedom for the 2 x K table, rare
    classes pooled until every expected count is at least MIN_EXPECTED."""
    n_ours, n_theirs = ours.total(), theirs.total()
    if n_ours == 0 or n_theirs == 0:
        return 0.0, 0
    n = n_ours + n_theirs
    smaller = min(n_ours, n_theirs)
    # (column total, the reviewer's count) per bin, rarest first
    bins = sorted((ours[k] + theirs[k], ours[k]) for k in ours.keys() | theirs.keys())
    while len(bins) > 1 and smaller * bins[0][0] / n < MIN_EXPECTED:
        (t0, o0), (t1, o1) = bins[0], bins[1]
        bins = sorted([(t0 + t1, o0 + o1), *bins[2:]])
    statistic = 0.0
    for total, mine in bins:
        expected = n_ours * total / n
        # the rest's row deviates by the same amount with the opposite sign
        statistic += (mine - expected) ** 2 * (1.0 / expected + 1.0 / (total - expected))
    return statistic, len(bins) - 1


def _label_reason(tested: Sequence[tuple[str, Counter[int], Counter[int]]]) -> str:
    """The class whose share departs most (in standardised residuals), as shares of
    its stratum's resolutions."""

    def residual(cell: tuple[str, Counter[int], Counter[int], int]) -> float:
        _, ours, theirs, label = cell
        expected = ours.total() * (ours[label] + theirs[label]) / (ours.total() + theirs.total())
        return abs(ours[label] - expected) / math.sqrt(expected)

    cells = [(name, o, t, label) for name, o, t in tested for label in sorted(o.keys() | t.keys())]
    name, ours, theirs, label = max(cells, key=residual)
    where = f" of {name!r}" if len(tested) > 1 else ""
    return (
        f"labels class {label} in {ours[label] / ours.total():.1%} of its {ours.total()} "
        f"resolutions{where} against {theirs[label] / theirs.total():.1%} by the rest of the pool"
    )


def _override_test(reviewer: str, sides: _Sides) -> _Result | None:
    """Cochran-Mantel-Haenszel over strata (no continuity correction)."""
    deviation = variance = 0.0
    n_ours = overrides_ours = n_theirs = overrides_theirs = 0
    for _, ours, theirs in sides:
        n1, n2 = ours.items, theirs.items
        if n1 == 0 or n2 == 0:
            continue
        n, a, m1 = n1 + n2, ours.overrides, ours.overrides + theirs.overrides
        deviation += a - n1 * m1 / n
        variance += n1 * n2 * m1 * (n - m1) / (n * n * (n - 1))
        n_ours, overrides_ours = n_ours + n1, overrides_ours + a
        n_theirs, overrides_theirs = n_theirs + n2, overrides_theirs + theirs.overrides
    if variance <= 0.0:
        return None  # no stratum had both verdicts: nothing to compare
    statistic = deviation**2 / variance
    return _Result(
        reviewer,
        Check.OVERRIDE_RATE,
        n_ours,
        statistic,
        1,
        chi_square_sf(statistic, 1),
        f"overrides {overrides_ours / n_ours:.1%} of its {n_ours} resolutions against "
        f"{overrides_theirs / n_theirs:.1%} by the rest of the pool",
    )


def chi_square_sf(x: float, df: int) -> float:
    """P(X >= x) for X chi-square with ``df`` (a positive integer) degrees of freedom.

    Q(x; 1) = erfc(sqrt(x / 2)), Q(x; 2) = exp(-x / 2), and
    Q(x; k + 2) = Q(x; k) + (x / 2)^(k / 2) exp(-x / 2) / Gamma(k / 2 + 1);
    the terms are positive and taken in logarithms, so neither cancellation nor
    overflow can spoil them."""
    if df < 1:
        raise ValueError(f"{df} degrees of freedom; at least 1 is needed")
    if x <= 0.0:
        return 1.0
    half = x / 2.0
    k = df % 2
    total = math.erfc(math.sqrt(half)) if k else 0.0
    log_half = math.log(half)
    while k < df:
        total += math.exp(k / 2.0 * log_half - half - math.lgamma(k / 2.0 + 1.0))
        k += 2
    return min(1.0, total)
