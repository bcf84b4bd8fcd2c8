"""Deadlines per tier: how long an item may wait for a reviewer before it is overdue.
Pure: parsing and arithmetic; the sweep that acts on them is in ``queue``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from sidecar.errors import ConfigError
from sidecar.review.item import TIERS
from sidecar.settings import duration

DEFAULT_SLA_SECONDS: Mapping[str, float] = MappingProxyType(
    {"HUMAN_PRIMARY": 15 * 60.0, "HUMAN_ASSISTED": 2 * 3600.0, "AUTOMATED": 24 * 3600.0}
)


@dataclass(frozen=True, slots=True)
class Sla:
    """Seconds each tier's items may wait; every tier has one."""

    seconds: Mapping[str, float] = field(default_factory=lambda: DEFAULT_SLA_SECONDS)

    def due_at(self, tier: str, since: float) -> float:
        return since + self.seconds[tier]

    def describe(self) -> str:
        return ",".join(f"{tier}={self.seconds[tier]:g}" for tier in TIERS)


def parse_sla(text: str, var: str) -> Sla:
    """``HUMAN_PRIMARY=900,HUMAN_ASSISTED=2h`` -> an Sla; tiers not named keep their
    default. Values are seconds, or a number with s, m, h or d. ConfigError names var."""
    seconds = dict(DEFAULT_SLA_SECONDS)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        tier = name.strip().upper().removeprefix("TIER_")
        if not sep or tier not in seconds:
            raise ConfigError(
                f"{var}: {part!r} is not TIER=SECONDS with TIER one of {', '.join(TIERS)}"
            )
        seconds[tier] = duration(value.strip(), f"{var}: {tier}")
    return Sla(MappingProxyType(seconds))
