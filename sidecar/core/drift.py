"""The drift guard: the rolling distribution of a model's calibrated confidence (and
of its predicted class) over its last ``window`` decisions, compared with the
reference the calibrator artefact carries (the same histograms on the data it was
fitted on) by the population stability index

    PSI = sum_i (o_i - r_i) * ln(o_i / r_i)

over the shares o (observed) and r (reference) of each bin, each share floored at
``FLOOR`` so that an empty bin counts as rare rather than impossible.

The guard judges a full window only. It alarms when either PSI (confidence or
predicted class) reaches ``psi_alarm`` and clears once both are at or below
``psi_recover`` (hysteresis: a window hovering at the alarm level does not flap).
With ``action: pause_automation`` an alarm pauses automation for the model: the
decision core sends what would have been automated to a person (HUMAN_ASSISTED,
REASON_FALLBACK_DRIFT, degraded). It needs no labels and no network, so it reacts
within one window of the shift.

An observation costs O(1): the window is a ring of bin numbers, each PSI a running
sum of per-bin terms of which an observation changes at most two; the sums are
recomputed whole once per window so rounding cannot accumulate."""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

FLOOR = 1e-4  # the least share a bin counts with


class DriftAction(Enum):
    ALERT = "alert"
    PAUSE_AUTOMATION = "pause_automation"


@dataclass(frozen=True, slots=True)
class DriftPolicy:
    """A model's ``drift`` section, compiled."""

    window: int
    psi_alarm: float
    psi_recover: float
    action: DriftAction


def shares(counts: Sequence[float]) -> list[float]:
    """counts as shares of their total, each at least FLOOR (all FLOOR when empty)."""
    total = float(sum(counts))
    if total <= 0:
        return [FLOOR] * len(counts)
    return [max(c / total, FLOOR) for c in counts]


def psi(reference: Sequence[float], observed: Sequence[float]) -> float:
    """The population stability index of observed against reference (counts or
    masses over the same bins)."""
    if len(reference) != len(observed):
        raise ValueError(f"{len(observed)} observed bins for {len(reference)} reference bins")
    return sum(
        (o - r) * math.log(o / r) for r, o in zip(shares(reference), shares(observed), strict=True)
    )


class _Rolling:
    """The PSI of the last ``window`` bin numbers against reference shares."""

    __slots__ = ("_counts", "_reference", "_terms", "_window", "bins", "value")

    def __init__(self, reference: Sequence[float], window: int) -> None:
        self.bins = len(reference)
        self._reference = shares(reference)
        self._window = window
        self._counts = [0] * len(reference)
        self._terms = [self._term(i) for i in range(len(reference))]
        self.value = 0.0

    def _term(self, i: int) -> float:
        o = max(self._counts[i] / self._window, FLOOR)
        r = self._reference[i]
        return (o - r) * math.log(o / r)

    def move(self, old: int, new: int) -> None:
        """One bin number leaves the window and one enters it (-1: none)."""
        if old != new:
            self._add(new, 1)
            self._add(old, -1)

    def _add(self, i: int, step: int) -> None:
        if i >= 0:
            self._counts[i] += step
            before = self._terms[i]
            self._terms[i] = self._term(i)
            self.value += self._terms[i] - before

    def resum(self) -> None:
        self.value = sum(self._terms)

    @property
    def counts(self) -> list[int]:
        return list(self._counts)


class DriftGuard:
    """One model's guard. ``observe`` is called for every decision that has signals,
    paused or not (so that the guard sees the traffic recover)."""

    __slots__ = (
        "_classes",
        "_confidence",
        "_edges",
        "_filled",
        "_ring",
        "_slot",
        "alarmed",
        "alarms",
        "pauses",
        "policy",
    )

    def __init__(
        self,
        policy: DriftPolicy,
        edges: Sequence[float],
        reference_counts: Sequence[float],
        reference_classes: Sequence[float] = (),
    ) -> None:
        if len(edges) != len(reference_counts) + 1:
            raise ValueError(f"{len(edges)} edges for {len(reference_counts)} bins")
        self.policy = policy
        self.pauses = policy.action is DriftAction.PAUSE_AUTOMATION
        self._edges = tuple(edges[1:-1])  # inner edges: bisect gives the bin number
        self._confidence = _Rolling(reference_counts, policy.window)
        self._classes = _Rolling(reference_classes, policy.window) if reference_classes else None
        self._ring: list[tuple[int, int]] = [(-1, -1)] * policy.window
        self._slot = 0
        self._filled = False
        self.alarmed = False
        self.alarms = 0  # how many times the guard has alarmed

    @property
    def paused(self) -> bool:
        """Whether automation is paused by this guard now."""
        return self.alarmed and self.pauses

    @property
    def filled(self) -> bool:
        return self._filled

    @property
    def confidence_psi(self) -> float:
        return self._confidence.value if self._filled else 0.0

    @property
    def class_psi(self) -> float:
        """The predicted class's PSI (0 when the artefact has no class reference)."""
        return self._classes.value if self._classes is not None and self._filled else 0.0

    def class_shares(self) -> list[float]:
        """The predicted classes' shares in the window (empty without a reference)."""
        if self._classes is None:
            return []
        counts = self._classes.counts
        total = sum(counts)
        return [c / total if total else 0.0 for c in counts]

    def observe(self, confidence: float, predicted_class: int) -> bool:
        """Count one decision; True when this changed whether the guard alarms."""
        slot = self._slot
        old_bin, old_class = self._ring[slot]
        new_bin = bisect_right(self._edges, confidence)
        self._confidence.move(old_bin, new_bin)
        classes = self._classes
        if classes is not None:
            if not 0 <= predicted_class < classes.bins:
                predicted_class = -1
            classes.move(old_class, predicted_class)
        self._ring[slot] = (new_bin, predicted_class)
        slot += 1
        if slot == self.policy.window:
            slot = 0
            self._filled = True
            self._confidence.resum()
            if classes is not None:
                classes.resum()
        self._slot = slot
        if not self._filled:
            return False
        return self._judge()

    def _judge(self) -> bool:
        worst = max(self._confidence.value, self.class_psi)
        if not self.alarmed and worst >= self.policy.psi_alarm:
            self.alarmed = True
            self.alarms += 1
            return True
        if self.alarmed and worst <= self.policy.psi_recover:
            self.alarmed = False
            return True
        return False
