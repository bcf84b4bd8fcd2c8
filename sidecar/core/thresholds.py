"""Thresholds and the tier they give a calibrated confidence."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum


class Tier(IntEnum):
    """Mirrors hitl.v1.Tier (values equal the proto numbers)."""

    AUTOMATED = 1
    HUMAN_ASSISTED = 2
    HUMAN_PRIMARY = 3


@dataclass(frozen=True, slots=True)
class Thresholds:
    """conf >= t_high: AUTOMATED; t_low <= conf < t_high: HUMAN_ASSISTED; else PRIMARY."""

    t_high: float
    t_low: float

    def tier(self, confidence: float) -> Tier:
        if confidence >= self.t_high:
            return Tier.AUTOMATED
        if confidence >= self.t_low:
            return Tier.HUMAN_ASSISTED
        return Tier.HUMAN_PRIMARY


class UnknownDomain(StrEnum):
    """What a request's domain gets when its model's policy does not name it (a typo,
    another case): refused, the model's default thresholds, or the strictest it has."""

    REJECT = "reject"
    DEFAULT = "default"
    STRICTEST = "strictest"


@dataclass(frozen=True, slots=True)
class ThresholdTable:
    """A default and per-domain overrides; ``unknown`` says what a domain the table
    does not name gets (no domain at all gets the default)."""

    default: Thresholds
    domains: Mapping[str, Thresholds] = field(default_factory=dict)
    unknown: UnknownDomain = UnknownDomain.STRICTEST

    def for_domain(self, domain: str) -> Thresholds:
        found = self.domains.get(domain)
        if found is not None:
            return found
        if not domain or self.unknown is UnknownDomain.DEFAULT:
            return self.default
        return self.strictest()

    def knows(self, domain: str) -> bool:
        """Whether domain is no domain or one the table names."""
        return not domain or domain in self.domains

    def strictest(self) -> Thresholds:
        """The highest t_high and t_low of the default and every domain: the fewest
        decisions automated, the most sent to a person first."""
        every = [self.default, *self.domains.values()]
        return Thresholds(max(t.t_high for t in every), max(t.t_low for t in every))
