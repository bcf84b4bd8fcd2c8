"""What a report is about: one model over a period cut into buckets, the policy
and its revisions, and the observations read for it. Plain data with no I/O; the
command (``monitor.report_cli``) fills it in."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from monitor.checks import Limits, Reference
from monitor.observations import Observation
from sidecar.core.diff import FieldChange
from sidecar.core.policy import ModelPolicy
from sidecar.core.thresholds import ThresholdTable

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Period:
    """[since, until) in Unix seconds, cut into ``buckets`` equal buckets."""

    since: float
    until: float
    buckets: int

    def __post_init__(self) -> None:
        if not self.since < self.until or self.buckets < 1:
            raise ValueError(f"an empty period or no bucket: {self}")

    def edges(self) -> Floats:
        edges: Floats = np.linspace(self.since, self.until, self.buckets + 1, dtype=np.float64)
        return edges

    def split(self, observations: Sequence[Observation]) -> list[list[Observation]]:
        """The observations decided in each bucket [e_i, e_i+1), bucket by bucket."""
        inner = self.edges()[1:-1]
        parts: list[list[Observation]] = [[] for _ in range(self.buckets)]
        for o in observations:
            parts[int(np.searchsorted(inner, o.decided_at, side="right"))].append(o)
        return parts


@dataclass(frozen=True, slots=True)
class Revision:
    """A policy revision as the threshold review shows it; ``thresholds`` are the
    model's after it (None: the revision has no such model)."""

    number: int
    created_at: float
    proposed_by: str
    approved_by: str  # "": an operator's tightening, applied at once
    reason: str
    changes: tuple[FieldChange, ...]
    thresholds: ThresholdTable | None

    def touches(self, model: str) -> bool:
        return bool(self.changes_to(model))

    def changes_to(self, model: str) -> list[FieldChange]:
        prefix = f"models.{model}"
        return [c for c in self.changes if c.path == prefix or c.path.startswith(prefix + ".")]


@dataclass(frozen=True)
class Subject:
    """One model over a period, and what was read for the report on it."""

    model: str
    period: Period
    generated_at: float
    policy: ModelPolicy  # in force at the period's end: targets, arms, calibrator
    policy_revision: int
    observations: Sequence[Observation] = ()
    reference: Reference | None = None  # the calibrator artefact's histograms
    # The revision in force at ``since``, then every one made in the period, oldest first.
    revisions: Sequence[Revision] = ()
    limits: Limits = field(default_factory=Limits)
    group_attribute: str = ""
