"""Deadlines per tier: defaults, partial overrides, units, and refusals naming the variable."""

from __future__ import annotations

import pytest

from sidecar.errors import ConfigError
from sidecar.review.sla import DEFAULT_SLA_SECONDS, Sla, parse_sla


def test_defaults_are_15_minutes_2_hours_24_hours() -> None:
    """An empty setting keeps every default."""
    assert dict(parse_sla("", "V").seconds) == {
        "HUMAN_PRIMARY": 900.0,
        "HUMAN_ASSISTED": 7200.0,
        "AUTOMATED": 86400.0,
    }
    assert Sla().seconds == DEFAULT_SLA_SECONDS


def test_named_tiers_override_and_units_apply() -> None:
    """Seconds or s/m/h/d; the TIER_ prefix and case are forgiven; unnamed tiers keep defaults."""
    sla = parse_sla("tier_human_primary=5m, HUMAN_ASSISTED=1.5h", "V")
    assert dict(sla.seconds) == {
        "HUMAN_PRIMARY": 300.0,
        "HUMAN_ASSISTED": 5400.0,
        "AUTOMATED": 86400.0,
    }
    assert sla.due_at("HUMAN_PRIMARY", 1000.0) == 1300.0
    assert parse_sla("AUTOMATED=2d", "V").seconds["AUTOMATED"] == 172800.0
    assert sla.describe() == "HUMAN_PRIMARY=300,HUMAN_ASSISTED=5400,AUTOMATED=86400"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("HUMAN_PRIMARY", "not TIER=SECONDS"),
        ("REVIEWER=10", "not TIER=SECONDS"),
        ("HUMAN_PRIMARY=soon", "not a duration"),
        ("HUMAN_PRIMARY=0", "positive"),
        ("HUMAN_PRIMARY=-5m", "positive"),
        ("HUMAN_PRIMARY=inf", "positive"),
    ],
)
def test_bad_settings_fail_naming_the_variable(text: str, problem: str) -> None:
    """Each bad entry fails at start-up with the variable and what is wrong."""
    with pytest.raises(ConfigError, match=f"HITL_REVIEW_SLA: .*{problem}"):
        parse_sla(text, "HITL_REVIEW_SLA")
