"""Which policy changes widen automation (and need an approver)."""

from __future__ import annotations

import copy
from typing import Any

from sidecar.core.policy import parse_policy
from sidecar.core.widening import widening

SHA = "a" * 64


def base() -> dict[str, Any]:
    return {
        "revision": 1,
        "max_age_seconds": 3600,
        "issued_at": "2026-11-21T00:00:00+00:00",
        "models": {
            "m": {
                "calibrator": {"name": "cal", "sha256": SHA, "version": "v1"},
                "thresholds": {"t_high": 0.9, "t_low": 0.5},
                "domains": {"eu": {"t_high": 0.95, "t_low": 0.6}},
                "rules": [
                    {
                        "id": "big",
                        "when": [{"field": "attributes.amount", "op": "gt", "value": 1e4}],
                    }
                ],
                "experiment": {
                    "name": "exp",
                    "arms": [
                        {"name": "control", "weight": 90},
                        {"name": "low", "weight": 10, "thresholds": {"t_high": 0.85, "t_low": 0.5}},
                    ],
                },
                "audit_sample_rate": 0.02,
            }
        },
    }


def judge(before: dict[str, Any], after: dict[str, Any]) -> tuple[str, ...]:
    return widening(parse_policy(before), parse_policy(after))


def changed(edit: Any) -> dict[str, Any]:
    doc = copy.deepcopy(base())
    edit(doc["models"]["m"])
    return doc


def test_identical_policy_does_not_widen() -> None:
    """No change, nothing to approve."""
    assert judge(base(), base()) == ()


def test_first_policy_widens() -> None:
    """With no policy before, every model is new automation."""
    assert widening(None, parse_policy(base())) == ("models.m: a new model is automated",)


def test_lower_default_t_high_widens() -> None:
    """Lowering t_high names the field and both values."""
    after = changed(lambda m: m["thresholds"].update(t_high=0.8))
    assert "models.m.thresholds.t_high: lowered from 0.9 to 0.8" in judge(base(), after)


def test_higher_thresholds_tighten() -> None:
    """Raising thresholds, adding a rule and auditing more only tighten."""

    def tighten(m: dict[str, Any]) -> None:
        m["thresholds"] = {"t_high": 0.95, "t_low": 0.6}
        m["rules"].append({"id": "new", "when": [{"field": "domain", "op": "eq", "value": "x"}]})
        m["audit_sample_rate"] = 0.05

    assert judge(base(), changed(tighten)) == ()


def test_lower_t_low_in_domain_widens() -> None:
    """A per-domain t_low lowered is caught at its path."""
    after = changed(lambda m: m["domains"]["eu"].update(t_low=0.4))
    assert judge(base(), after) == ("models.m.domains.eu.t_low: lowered from 0.6 to 0.4",)


def test_removing_a_domain_override_widens_when_the_default_is_lower() -> None:
    """The domain falls back to the model default, which is lower."""
    after = changed(lambda m: m.pop("domains"))
    reasons = judge(base(), after)
    assert "models.m.domains.eu.t_high: lowered from 0.95 to 0.9" in reasons


def test_new_domain_above_default_tightens() -> None:
    """A new domain override stricter than the default is a tightening."""
    after = changed(lambda m: m["domains"].update(us={"t_high": 0.97, "t_low": 0.7}))
    assert judge(base(), after) == ()


def test_removed_rule_widens() -> None:
    """A rule removed no longer sends anything to a person."""
    after = changed(lambda m: m.update(rules=[]))
    assert judge(base(), after) == ("models.m.rules.big: removed",)


def test_changed_rule_widens() -> None:
    """A rule whose conditions changed may match less."""
    after = changed(lambda m: m["rules"][0]["when"][0].update(value=2e4))
    assert judge(base(), after) == ("models.m.rules.big: conditions changed (may match less)",)


def test_higher_arm_share_widens() -> None:
    """Raising an arm's weight raises its share of traffic."""
    after = changed(lambda m: m["experiment"]["arms"][1].update(weight=50))
    assert judge(base(), after) == ("models.m.experiment.arms.low.weight: share 0.1 -> 0.3571",)


def test_lowering_the_other_arm_also_raises_a_share() -> None:
    """Lowering control's weight raises the other arm's share: widening."""
    after = changed(lambda m: m["experiment"]["arms"][0].update(weight=10))
    assert judge(base(), after) == ("models.m.experiment.arms.low.weight: share 0.1 -> 0.5",)


def test_arm_thresholds_lowered_widen() -> None:
    """An arm's own thresholds are compared like the model's."""
    after = changed(lambda m: m["experiment"]["arms"][1]["thresholds"].update(t_high=0.8))
    reasons = judge(base(), after)
    assert "models.m.experiment.arms.low.thresholds.t_high: lowered from 0.85 to 0.8" in reasons


def test_lower_audit_rate_widens() -> None:
    """A higher audit-free share needs an approver."""
    after = changed(lambda m: m.update(audit_sample_rate=0.01))
    assert judge(base(), after) == (
        "models.m.audit_sample_rate: 0.02 -> 0.01 audits fewer automated decisions",
    )


def test_new_calibrator_widens() -> None:
    """A new calibrator changes every confidence."""
    after = changed(
        lambda m: m.update(calibrator={"name": "c", "sha256": "b" * 64, "version": "v2"})
    )
    assert judge(base(), after) == ("models.m.calibrator: v1 -> v2 changes every confidence",)


def test_removed_model_tightens_and_new_model_widens() -> None:
    """Removing a model automates nothing; adding one does."""
    doc = base()
    doc["models"]["n"] = doc["models"].pop("m")
    assert judge(base(), doc) == ("models.n: a new model is automated",)


def test_longer_or_no_max_age_widens() -> None:
    """A longer maximum age keeps automating on an older copy."""
    longer = {**base(), "max_age_seconds": 7200}
    assert judge(base(), longer) == (
        "max_age_seconds: 3600s -> 7200s keeps automating on an older copy",
    )
    none = {k: v for k, v in base().items() if k != "max_age_seconds"}
    assert len(judge(base(), none)) == 1
    assert judge(base(), {**base(), "max_age_seconds": 600}) == ()


def test_experiment_removed_widens() -> None:
    """Moving traffic between thresholds cannot be shown to tighten."""
    after = changed(lambda m: m.pop("experiment"))
    assert judge(base(), after) == (
        "models.m.experiment: removed (traffic moves to the model's thresholds)",
    )


def test_a_pause_tightens_and_lifting_it_widens() -> None:
    def pause(model: dict[str, Any]) -> None:
        model["domains"]["eu"]["paused"] = True

    paused = changed(pause)
    assert judge(base(), paused) == ()
    assert judge(paused, base()) == ("models.m.domains.eu.paused: lifted (automation resumes)",)


def test_a_drift_guard_added_or_made_more_sensitive_tightens() -> None:
    def guard(alarm: float, action: str = "pause_automation") -> Any:
        def edit(model: dict[str, Any]) -> None:
            model["drift"] = {"window": 1000, "psi_alarm": alarm, "action": action}

        return edit

    strict, loose = changed(guard(0.2)), changed(guard(0.3))
    assert judge(base(), strict) == ()
    assert judge(loose, strict) == ()
    assert judge(strict, loose) == (
        "models.m.drift.psi_alarm: 0.2 -> 0.3 alarms later",
        "models.m.drift.psi_recover: 0.1 -> 0.15 alarms later",
    )
    assert judge(strict, base()) == (
        "models.m.drift: removed (nothing pauses automation on drift)",
    )
    assert judge(strict, changed(guard(0.2, "alert"))) == (
        "models.m.drift.action: pause_automation -> alert",
    )
