"""The decision function: thresholds, domains, rules, arms, audit sample, fallbacks."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from sidecar.core.decision import CalibrationFailure, Reason, decide
from sidecar.core.experiments import Arm, Experiment
from sidecar.core.policy import CalibratorRef, ModelPolicy, Policy
from sidecar.core.request import RouteInput
from sidecar.core.rules import Condition, Rule
from sidecar.core.sampling import AuditSampler
from sidecar.core.signals import Signals
from sidecar.core.thresholds import Thresholds, ThresholdTable, Tier, UnknownDomain
from tests.strategies import failures, policies, requests, signals

TABLE = ThresholdTable(Thresholds(0.9, 0.5), {"eu": Thresholds(0.97, 0.6)})


def policy(**model: object) -> Policy:
    fields: dict[str, object] = {
        "name": "m",
        "calibrator": CalibratorRef("c.onnx", "0" * 64, "v7"),
        "thresholds": TABLE,
    }
    fields.update(model)
    return Policy(12, {"m": ModelPolicy(**fields).with_labels(("a", "b", "c"))})  # type: ignore[arg-type]


def request(request_id: str = "r1", domain: str = "", **numbers: float) -> RouteInput:
    return RouteInput(
        request_id, "m", np.zeros(3, dtype=np.float32), domain=domain, numeric_attributes=numbers
    )


def sig(confidence: float, cls: int = 1) -> Signals:
    return Signals(cls, confidence, 0.5, 0.3)


def test_high_confidence_is_automated() -> None:
    """conf >= t_high gives AUTOMATED by THRESHOLD, with label and versions filled in."""
    d = decide(request(), policy(), sig(0.95), 0.0)
    assert (d.tier, d.reason, d.predicted_label) == (Tier.AUTOMATED, Reason.THRESHOLD, "b")
    assert (d.t_high, d.t_low, d.policy_revision, d.calibration_version) == (0.9, 0.5, 12, "v7")
    assert not d.escalate
    assert not d.degraded


def test_threshold_edges() -> None:
    """t_high is inclusive for AUTOMATED; t_low inclusive for HUMAN_ASSISTED."""
    p = policy()
    assert decide(request(), p, sig(0.9), 0.0).tier is Tier.AUTOMATED
    assert decide(request(), p, sig(0.8999), 0.0).tier is Tier.HUMAN_ASSISTED
    assert decide(request(), p, sig(0.5), 0.0).tier is Tier.HUMAN_ASSISTED
    assert decide(request(), p, sig(0.4999), 0.0).tier is Tier.HUMAN_PRIMARY


def test_domain_overrides_default() -> None:
    """A domain with its own thresholds uses them; no domain uses the default; a domain
    the policy does not name gets the strictest thresholds, or the default when the
    policy says unknown_domain: default."""
    assert decide(request(domain="eu"), policy(), sig(0.95), 0.0).tier is Tier.HUMAN_ASSISTED
    assert decide(request(), policy(), sig(0.95), 0.0).tier is Tier.AUTOMATED
    assert decide(request(domain="mars"), policy(), sig(0.95), 0.0).tier is Tier.HUMAN_ASSISTED
    assert decide(request(domain="EU"), policy(), sig(0.95), 0.0).tier is Tier.HUMAN_ASSISTED
    lenient = policy(thresholds=replace(TABLE, unknown=UnknownDomain.DEFAULT))
    assert decide(request(domain="mars"), lenient, sig(0.95), 0.0).tier is Tier.AUTOMATED


def test_first_matching_rule_wins_and_is_primary() -> None:
    """Rules override confidence: HUMAN_PRIMARY with the first matching rule's id."""
    rules = (
        Rule("big", (Condition("attributes.amount", "gt", 100.0),)),
        Rule("bigger", (Condition("attributes.amount", "gt", 1000.0),)),
    )
    d = decide(request(amount=5000.0), policy(rules=rules), sig(0.999), 0.0)
    assert (d.tier, d.reason, d.rule_id) == (Tier.HUMAN_PRIMARY, Reason.RULE, "big")
    assert d.escalate


def test_rule_on_predicted_label() -> None:
    """A rule can send a predicted label to a person whatever the confidence."""
    rules = (Rule("always-human-b", (Condition("predicted_label", "eq", "b"),)),)
    assert decide(request(), policy(rules=rules), sig(0.99, cls=1), 0.0).rule_id == "always-human-b"
    assert decide(request(), policy(rules=rules), sig(0.99, cls=2), 0.0).reason is Reason.THRESHOLD


def test_experiment_arm_thresholds_apply() -> None:
    """The chosen arm's thresholds replace the model's and the arm is reported."""
    strict = ThresholdTable(Thresholds(0.99, 0.5))
    experiment = Experiment("m/e", "request_id", (Arm("control", 0.0), Arm("strict", 1.0, strict)))
    d = decide(request(), policy(experiment=experiment), sig(0.95), 0.0)
    assert (d.experiment_arm, d.tier, d.t_high) == ("strict", Tier.HUMAN_ASSISTED, 0.99)


def test_audit_sample_escalates_automated() -> None:
    """With rate 1 every AUTOMATED decision is an audit sample: still AUTOMATED, escalated."""
    d = decide(request(), policy(audit=AuditSampler(1.0, "m")), sig(0.95), 0.0)
    assert (d.tier, d.reason, d.escalate) == (Tier.AUTOMATED, Reason.AUDIT_SAMPLE, True)


def test_no_policy_falls_back() -> None:
    """No policy: HUMAN_ASSISTED, FALLBACK_NO_POLICY, degraded, escalated."""
    d = decide(request(), None, sig(0.99), 0.0)
    assert (d.tier, d.reason, d.degraded, d.escalate) == (
        Tier.HUMAN_ASSISTED,
        Reason.FALLBACK_NO_POLICY,
        True,
        True,
    )


def test_stale_policy_falls_back_but_keeps_prediction() -> None:
    """Past max age: degraded HUMAN_ASSISTED, with the prediction kept for the reviewer."""
    p = Policy(3, policy().models, issued_at=100.0, max_age_seconds=60.0)
    assert decide(request(), p, sig(0.99), 160.0).reason is Reason.THRESHOLD
    d = decide(request(), p, sig(0.99), 160.5)
    assert (d.tier, d.reason, d.predicted_label) == (
        Tier.HUMAN_ASSISTED,
        Reason.FALLBACK_STALE_POLICY,
        "b",
    )


def test_calibration_failures_fall_back() -> None:
    """A raising calibrator and a non-finite output each have their own reason."""
    assert (
        decide(request(), policy(), CalibrationFailure.RAISED, 0.0).reason
        is Reason.FALLBACK_CALIBRATOR
    )
    assert (
        decide(request(), policy(), CalibrationFailure.NON_FINITE, 0.0).reason
        is Reason.FALLBACK_NON_FINITE
    )


@given(requests(), policies(), st.one_of(failures, signals()), st.booleans())
def test_never_automated_on_any_fallback(
    r: RouteInput, p: Policy, s: object, drop_policy: bool
) -> None:
    """Whatever the policy and input: a degraded decision is never AUTOMATED, and
    any decision is degraded when the policy is missing or stale or calibration failed."""
    chosen = None if drop_policy else p
    d = decide(r, chosen, s, 1_000.0)  # type: ignore[arg-type]
    must_degrade = chosen is None or isinstance(s, CalibrationFailure) or chosen.is_stale(1_000.0)
    assert d.degraded == must_degrade
    if d.degraded:
        assert d.tier is Tier.HUMAN_ASSISTED
        assert d.escalate


@given(requests(), policies(), signals())
def test_same_request_same_snapshot_same_decision(r: RouteInput, p: Policy, s: Signals) -> None:
    """Decisions are reproducible: deciding twice gives equal decisions."""
    assert decide(r, p, s, 5.0) == decide(r, p, s, 5.0)


@given(requests(), policies(), signals())
def test_escalate_exactly_when_a_person_must_look(r: RouteInput, p: Policy, s: Signals) -> None:
    """Escalated iff tier 2 or 3, or an audit sample."""
    d = decide(r, p, s, 5.0)
    assert d.escalate == (d.tier is not Tier.AUTOMATED or d.reason is Reason.AUDIT_SAMPLE)
    if d.reason is Reason.AUDIT_SAMPLE:
        assert d.tier is Tier.AUTOMATED


def test_paused_thresholds_send_what_they_would_automate_to_a_person() -> None:
    """PAUSED, not degraded; below t_high the tiers are as usual."""
    table = ThresholdTable(Thresholds(0.9, 0.5, paused=True))
    p = policy(thresholds=table, audit=AuditSampler(1.0, "m"))
    d = decide(request(), p, sig(0.95), 0.0)
    assert (d.tier, d.reason, d.degraded, d.escalate) == (
        Tier.HUMAN_ASSISTED,
        Reason.PAUSED,
        False,
        True,
    )
    assert decide(request(), p, sig(0.3), 0.0).tier is Tier.HUMAN_PRIMARY


def test_a_drifted_model_falls_back_to_a_person_degraded() -> None:
    """The drift guard's pause: FALLBACK_DRIFT, degraded; rules still come first."""
    d = decide(request(), policy(), sig(0.95), 0.0, drifted=True)
    assert (d.tier, d.reason, d.degraded) == (Tier.HUMAN_ASSISTED, Reason.FALLBACK_DRIFT, True)
    assert (d.t_high, d.predicted_label) == (0.9, "b")
    assert decide(request(), policy(), sig(0.7), 0.0, drifted=True).reason is Reason.THRESHOLD
    ruled = policy(rules=(Rule("big", (Condition("attributes.amount", "gt", 10.0),)),))
    assert decide(request(amount=20), ruled, sig(0.95), 0.0, drifted=True).reason is Reason.RULE
