"""Deadlines per tier: how long an item may wait for a reviewer before it is overdue.
Pure: parsing and arithmetic; the sweep that acts on them is in ``queue``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from sidecar.errors import ConfigError
from sidecar.review.item import TIERS

DEFAULT_SLA_SECONDS: Mapping[str, float] = MappingProxyType(
    {"HUMAN_PRIMARY": 15 * 60.0, "HUMAN_ASSISTED": 2 * 3600.0, "AUTOMATED": 24 * 3600.0}
)
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


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
        seconds[tier] = _duration(value.strip(), var, tier)
    return Sla(MappingProxyType(seconds))


def _duration(value: str, var: str, tier: str) -> float:
    unit = _UNITS.get(value[-1:].lower(), 0.0)
    number = value[:-1] if unit else value
    try:
        amount = float(number) * (unit or 1.0)
    except ValueError:
        raise ConfigError(f"{var}: {tier}={value!r} is not a duration (900, 15m, 2h, 1d)") from None
    if not (math.isfinite(amount) and amount > 0):
        raise ConfigError(f"{var}: {tier}={value!r} must be a positive duration")
    return amount
