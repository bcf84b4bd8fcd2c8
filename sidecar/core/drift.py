"""The drift guard: the rolling distribution of a model's calibrated confidence (and
of its predicted class) over its last ``window`` decisions, compared with the
reference the calibrator artefact carries (the same histograms on the data it was
fitted on) by the population stability index

    PSI = sum_i (o_i - r_i) * ln(o_i / r_i)

over the shares o (observed) and r (reference) of each bin, each share floored at
``FLOOR`` so that an empty bin counts as rare rather than impossible.

The guard judges a full window only, every ``window / JUDGEMENTS_PER_WINDOW``
decisions. It alarms when either PSI (confidence or predicted class) reaches
``psi_alarm`` and clears once both are at or below ``psi_recover`` (hysteresis: a
window hovering at the alarm level does not flap).
With ``action: pause_automation`` an alarm pauses automation for the model: the
decision core sends what would have been automated to a person (HUMAN_ASSISTED,
REASON_FALLBACK_DRIFT, degraded). It needs no labels and no network, so it reacts
within one window of the shift.

An observation costs O(1): it is appended to a short list. Every
``window / JUDGEMENTS_PER_WINDOW`` observations a judgement moves them into the
window (a ring of bin numbers and classes whose counts change by the ones in and
out) and measures both PSI, in numpy, O(bins + that many); so the guard reacts at
most that many decisions late, and costs O(bins / window) more per decision."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

FLOOR = 1e-4  # the least share a bin counts with
JUDGEMENTS_PER_WINDOW = 20  # how often per window's length the PSI is measured


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


def shares(counts: Sequence[float] | npt.NDArray[Any]) -> Floats:
    """counts as shares of their total, each at least FLOOR (all FLOOR when empty)."""
    values = np.asarray(counts, dtype=np.float64)
    total = values.sum()
    if total <= 0:
        return np.full(values.shape, FLOOR)
    shared: Floats = np.maximum(values / total, FLOOR)
    return shared


def psi(
    reference: Sequence[float] | npt.NDArray[Any], observed: Sequence[float] | npt.NDArray[Any]
) -> float:
    """The population stability index of observed against reference (counts or
    masses over the same bins)."""
    if len(reference) != len(observed):
        raise ValueError(f"{len(observed)} observed bins for {len(reference)} reference bins")
    r, o = shares(reference), shares(observed)
    return float(((o - r) * np.log(o / r)).sum())


class DriftGuard:
    """One model's guard. ``observe`` is called for every decision that has signals,
    paused or not (so that the guard sees the traffic recover)."""

    __slots__ = (
        "_bins",
        "_class_counts",
        "_class_reference",
        "_classes",
        "_counts",
        "_every",
        "_inner",
        "_pending",
        "_reference",
        "_seen",
        "_slot",
        "alarmed",
        "alarms",
        "class_psi",
        "class_shift",
        "confidence_psi",
        "on_change",
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
        window = policy.window
        self.policy = policy
        self.pauses = policy.action is DriftAction.PAUSE_AUTOMATION
        self._inner = np.asarray(edges[1:-1], dtype=np.float64)  # searchsorted: the bin
        self._reference = shares(reference_counts)
        self._class_reference = shares(reference_classes) if reference_classes else None
        self._counts = np.zeros(len(reference_counts), dtype=np.int64)
        self._class_counts = np.zeros(len(reference_classes), dtype=np.int64)
        self._bins = np.full(window, -1, dtype=np.int64)  # the window's bins, a ring
        self._classes = np.full(window, -1, dtype=np.int64)  # its classes (-1: none)
        self._slot = 0
        self._seen = 0
        self._every = max(1, window // JUDGEMENTS_PER_WINDOW)
        self._pending: list[tuple[float, int]] = []
        self.confidence_psi = 0.0  # as of the last judgement (0 before the window fills)
        self.class_psi = 0.0  # 0 as well when the artefact has no class reference
        self.class_shift = 0.0  # total variation of the predicted classes' mix
        self.alarmed = False
        self.alarms = 0  # how many times the guard has alarmed
        self.on_change: Callable[[DriftGuard], None] | None = None  # told of each change

    @property
    def paused(self) -> bool:
        """Whether automation is paused by this guard now."""
        return self.alarmed and self.pauses

    @property
    def filled(self) -> bool:
        return self._seen >= self.policy.window

    def class_shares(self) -> list[float]:
        """The predicted classes' shares in the window (empty without a reference)."""
        total = int(self._class_counts.sum())
        return [int(c) / total if total else 0.0 for c in self._class_counts]

    def _class_shift(self) -> float:
        """Half the summed absolute difference between the window's predicted-class
        shares and the reference's: the share of decisions whose class would have to
        change for the two mixes to agree (0: the same mix; 1: disjoint)."""
        if self._class_reference is None or not self._class_counts.any():
            return 0.0
        observed = self._class_counts / self._class_counts.sum()
        reference = self._class_reference / self._class_reference.sum()
        return float(0.5 * np.abs(observed - reference).sum())

    def observe(self, confidence: float, predicted_class: int) -> bool:
        """Count one decision; whether the guard pauses automation now. (On the Route
        path: one call, the rest in C until a judgement is due.)"""
        pending = self._pending
        pending.append((confidence, predicted_class))
        if len(pending) >= self._every:
            self._judge_and_tell()
        return self.alarmed and self.pauses  # not the property: one call less per Route

    def observe_rows(self, rows: Iterable[tuple[int, float, float, float] | None]) -> bool:
        """``observe`` for a batch's signal rows (class, confidence, ...; None: none),
        judged once at the end when a judgement is due."""
        pending = self._pending
        pending.extend([(row[1], row[0]) for row in rows if row is not None])
        if len(pending) >= self._every:
            self._judge_and_tell()
        return self.paused

    def _judge_and_tell(self) -> None:
        if self.judge() and self.on_change is not None:
            self.on_change(self)

    def judge(self) -> bool:
        """Move the decisions observed since the last judgement into the window, then,
        once it is full, measure both PSI and apply the alarm's hysteresis; True when
        whether the guard alarms changed. ``observe`` calls it every
        ``window / JUDGEMENTS_PER_WINDOW`` decisions."""
        self._move()
        if not self.filled:
            return False
        self.confidence_psi = psi(self._reference, self._counts)
        if self._class_reference is not None:
            self.class_psi = psi(self._class_reference, self._class_counts)
            self.class_shift = self._class_shift()
        worst = max(self.confidence_psi, self.class_psi)
        if not self.alarmed and worst >= self.policy.psi_alarm:
            self.alarmed = True
            self.alarms += 1
            return True
        if self.alarmed and worst <= self.policy.psi_recover:
            self.alarmed = False
            return True
        return False

    def _move(self) -> None:
        if not self._pending:
            return
        rows = np.asarray(self._pending, dtype=np.float64)
        self._pending = []
        window = self.policy.window
        rows = rows[-window:]
        at = (self._slot + np.arange(rows.shape[0])) % window
        bins = np.searchsorted(self._inner, rows[:, 0], side="right")
        _replace(self._bins, self._counts, at, bins)
        if self._class_reference is not None:
            classes = rows[:, 1].astype(np.int64)
            classes[(classes < 0) | (classes >= self._class_counts.shape[0])] = -1
            _replace(self._classes, self._class_counts, at, classes)
        self._slot = int(at[-1] + 1) % window
        self._seen += rows.shape[0]


def _replace(ring: Ints, counts: Ints, at: Ints, values: Ints) -> None:
    """ring[at] = values, keeping counts (of the ring's values >= 0) in step."""
    size = counts.shape[0]
    old = ring[at]
    counts -= np.bincount(old[old >= 0], minlength=size)
    counts += np.bincount(values[values >= 0], minlength=size)
    ring[at] = values
