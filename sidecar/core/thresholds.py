"""Thresholds and the tier they give a calibrated confidence."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum


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


@dataclass(frozen=True, slots=True)
class ThresholdTable:
    """A default and per-domain overrides."""

    default: Thresholds
    domains: Mapping[str, Thresholds] = field(default_factory=dict)

    def for_domain(self, domain: str) -> Thresholds:
        return self.domains.get(domain, self.default)
