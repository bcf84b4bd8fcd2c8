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
    """conf >= t_high: AUTOMATED; t_low <= conf < t_high: HUMAN_ASSISTED; else PRIMARY.
    ``paused``: the decision core sends what would be AUTOMATED to HUMAN_ASSISTED."""

    t_high: float
    t_low: float
    paused: bool = False

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
    # Every answer in one lookup ("" is the default); what an unknown domain gets.
    _lookup: Mapping[str, Thresholds] = field(init=False, repr=False, compare=False)
    _otherwise: Thresholds = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_lookup", {**self.domains, "": self.default})
        otherwise = self.default if self.unknown is UnknownDomain.DEFAULT else self.strictest()
        object.__setattr__(self, "_otherwise", otherwise)

    def for_domain(self, domain: str) -> Thresholds:
        return self._lookup.get(domain, self._otherwise)

    def knows(self, domain: str) -> bool:
        """Whether domain is no domain or one the table names."""
        return domain in self._lookup

    def strictest(self) -> Thresholds:
        """The highest t_high and t_low of the default and every domain, paused if any
        is: the fewest decisions automated, the most sent to a person first."""
        every = [self.default, *self.domains.values()]
        return Thresholds(
            max(t.t_high for t in every),
            max(t.t_low for t in every),
            any(t.paused for t in every),
        )
