"""The monitor's judgement and actions: which breaches a window shows, and that every
tightening it proposes only tightens (the registry applies it without an approver)."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from typing import Any

import pytest

from monitor.actions import reason, tightened
from monitor.checks import MODEL, Act, Breach, Limits, Reference, Scope, check_model
from monitor.observations import Observation
from sidecar.core.policy import ModelPolicy, parse_policy
from sidecar.core.widening import widening
from sidecar.registry.service import MAX_REASON_CHARS

SHA = "c" * 64
EDGES = [i / 10 for i in range(11)]


def doc(**model: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "calibrator": {"name": "cal", "sha256": SHA, "version": "v1"},
        "thresholds": {"t_high": 0.9, "t_low": 0.5},
        "domains": {"eu": {"t_high": 0.95, "t_low": 0.6}},
        "experiment": {
            "name": "exp",
            "arms": [
                {"name": "control", "weight": 1},
                {"name": "low", "weight": 1, "thresholds": {"t_high": 0.8, "t_low": 0.5}},
            ],
        },
        "target_tier1_accuracy": 0.95,
        "max_ece": 0.05,
        "drift": {"window": 100, "psi_alarm": 0.25, "action": "pause_automation"},
    }
    body.update(model)
    return {"models": {"m": body}}


def compiled(document: dict[str, Any]) -> ModelPolicy:
    return parse_policy({**document, "revision": 1}).models["m"]


def traffic(
    n: int, accuracy: dict[str, float], seed: int = 0, domain: str = "", confidence: float = 0.97
) -> list[Observation]:
    """n automated decisions, all labelled (audit samples), each arm right with the
    given probability; confidence spread like the reference when not fixed."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        arm = "control" if i % 2 else "low"
        right = rng.random() < accuracy[arm]
        out.append(
            Observation(
                request_id=f"{domain}{seed}-{i}",
                model="m",
                confidence=confidence,
                predicted_class=0,
                tier="AUTOMATED",
                reason="AUDIT_SAMPLE",
                inclusion_probability=1.0,
                decided_at=float(i),
                label=0 if right else 1,
                domain=domain,
                arm=arm,
                group="gold" if i % 4 == 0 else "",
            )
        )
    return out


def findings(observations: list[Observation], **model: Any) -> list[Breach]:
    reference = Reference(EDGES, [0] * 9 + [100], [50, 50])
    limits = Limits(min_labels=50, min_recorded=50)
    return check_model(compiled(doc(**model)), observations, reference, limits, (0, 1)).breaches


def test_a_healthy_window_breaches_nothing() -> None:
    assert findings(traffic(2000, {"control": 0.995, "low": 0.995}), drift=None) == []


def test_tier1_accuracy_below_target_pauses_the_model() -> None:
    breaches = findings(traffic(600, {"control": 0.85, "low": 0.85}), max_ece=None, drift=None)
    kinds = {(b.kind, str(b.scope), b.act) for b in breaches}
    assert ("tier1_accuracy", "model", Act.PAUSE) in kinds
    assert ("group_tier1_accuracy", "group:gold", Act.ALERT) in kinds
    model = next(b for b in breaches if b.scope == MODEL and b.kind == "tier1_accuracy")
    low, high = model.evidence["interval"]
    assert low < model.evidence["tier1_accuracy"] < high < 0.95
    assert model.evidence["target"] == 0.95


def test_a_domain_below_target_pauses_the_domain_only() -> None:
    good = traffic(1000, {"control": 0.999, "low": 0.999}, seed=1)
    bad = traffic(400, {"control": 0.85, "low": 0.85}, seed=2, domain="eu")
    breaches = findings(good + bad, max_ece=None, drift=None)
    scopes = {str(b.scope) for b in breaches if b.kind == "tier1_accuracy"}
    assert "domain:eu" in scopes


def test_an_overconfident_model_breaches_its_ece_limit() -> None:
    breaches = findings(traffic(600, {"control": 0.85, "low": 0.85}), target_tier1_accuracy=None)
    assert [b.kind for b in breaches if b.kind == "ece"] == ["ece"]


def test_psi_pauses_only_when_the_drift_action_says_so() -> None:
    shifted = traffic(600, {"control": 0.999, "low": 0.999}, confidence=0.55)
    psi = [b for b in findings(shifted, max_ece=None) if b.kind == "psi"]
    assert [b.act for b in psi] == [Act.PAUSE]
    assert psi[0].evidence["psi"]["confidence"] > 0.25
    alert = {"window": 100, "psi_alarm": 0.25, "action": "alert"}
    psi = [b for b in findings(shifted, max_ece=None, drift=alert) if b.kind == "psi"]
    assert [b.act for b in psi] == [Act.ALERT]


def test_a_sidecars_drift_pause_becomes_the_policys() -> None:
    """Decisions a drift guard sent to a person: the model is paused for every sidecar
    when its drift action pauses, never when it only alerts."""
    window = traffic(100, {"control": 0.999, "low": 0.999})
    window[7] = replace(window[7], tier="HUMAN_ASSISTED", reason="FALLBACK_DRIFT")
    guard = [b for b in findings(window, max_ece=None) if b.kind == "drift_guard"]
    assert [(b.scope, b.act) for b in guard] == [(MODEL, Act.PAUSE)]
    assert guard[0].evidence["fallback_drift_decisions"] == 1
    alert = {"window": 100, "psi_alarm": 0.25, "action": "alert"}
    assert not [b for b in findings(window, max_ece=None, drift=alert) if b.kind == "drift_guard"]


def test_a_harmful_arm_is_halted() -> None:
    breaches = findings(
        traffic(4000, {"control": 0.995, "low": 0.95}),
        max_ece=None,
        drift=None,
        target_tier1_accuracy=None,
    )
    halted = [b for b in breaches if b.kind == "arm_harmful"]
    assert [(str(b.scope), b.act) for b in halted] == [("arm:low", Act.HALT_ARM)]
    assert halted[0].evidence["comparison"]["p_value"] <= 0.05


def test_a_contaminated_experiment_is_reported_and_compared_without_the_contamination() -> None:
    """Decisions without the unit key, and units seen in two arms, are counted, left
    out of the arms' comparison, and alerted on."""
    experiment = {**doc()["models"]["m"]["experiment"], "unit": "attributes.user"}
    window = [
        replace(o, attributes={"user": f"u{i}"})
        for i, o in enumerate(traffic(400, {"control": 0.99, "low": 0.99}))
    ]
    window[0] = replace(window[0], attributes={})  # no unit key
    window[1] = replace(window[1], attributes={"user": "u2"})  # u2 in both arms
    found = check_model(
        compiled(doc(experiment=experiment, max_ece=None, drift=None)),
        window,
        None,
        Limits(),
        (0, 1),
    )
    (breach,) = [b for b in found.breaches if b.kind == "experiment_contaminated"]
    assert (str(breach.scope), breach.act) == ("experiment:m/exp", Act.ALERT)
    assert (breach.evidence["unit_key_missing"], breach.evidence["units_in_two_arms"]) == (1, 1)
    assert breach.evidence["decisions_in_two_arms"] == 2
    arms = (
        found.health[Scope("arm", "control")].recorded + found.health[Scope("arm", "low")].recorded
    )
    assert arms == 400 - 3
    assert found.health[MODEL].recorded == 400


@pytest.mark.parametrize(
    "breach",
    [
        Breach("tier1_accuracy", MODEL, Act.PAUSE, "s"),
        Breach("tier1_accuracy", Scope("domain", "eu"), Act.PAUSE, "s"),
        Breach("tier1_accuracy", Scope("domain", "us"), Act.PAUSE, "s"),
        Breach("arm_harmful", Scope("arm", "low"), Act.HALT_ARM, "s"),
    ],
    ids=str,
)
def test_every_action_only_tightens_and_is_done_once(breach: Breach) -> None:
    """The registry applies an operator's change at once only when widening() finds
    nothing; a second application of the same action changes nothing."""
    before = doc()
    after = tightened(before, "m", breach)
    assert after != before
    policies = [parse_policy({**d, "revision": 1}) for d in (before, after)]
    assert widening(*policies) == ()
    assert tightened(after, "m", breach) == after


def test_a_paused_model_automates_nothing_anywhere() -> None:
    after = compiled(tightened(doc(), "m", Breach("psi", MODEL, Act.PAUSE, "s")))
    assert after.thresholds.default.paused
    assert after.thresholds.for_domain("eu").paused
    assert after.experiment is not None
    assert all(arm.thresholds is None or arm.thresholds.default.paused
               for arm in after.experiment.arms)  # fmt: skip


def test_a_halted_arm_automates_no_more_than_the_control() -> None:
    after = compiled(
        tightened(doc(), "m", Breach("arm_harmful", Scope("arm", "low"), Act.HALT_ARM, "s"))
    )
    assert after.experiment is not None
    low = after.experiment.arms[1].thresholds
    assert low is not None
    assert (low.default.t_high, low.for_domain("eu").t_high) == (0.9, 0.95)


def test_the_reason_carries_the_evidence_and_fits_the_registry() -> None:
    breach = Breach("ece", MODEL, Act.PAUSE, "m: ECE 0.08", {"ece": 0.08, "bins": list(range(900))})
    text = reason(breach)
    assert text.startswith("calibration monitor: m: ECE 0.08; evidence {")
    assert len(text) <= MAX_REASON_CHARS
    short = reason(Breach("ece", MODEL, Act.PAUSE, "m: ECE 0.08", {"ece": 0.08}))
    assert json.loads(short.partition("evidence ")[2]) == {
        "breach": "ece",
        "ece": 0.08,
        "scope": "model",
    }


def test_a_domain_pause_reaches_every_arm() -> None:
    """An arm with thresholds of its own that names no such domain gets the pause
    too: otherwise its traffic there would go on being automated."""
    after = compiled(
        tightened(doc(), "m", Breach("tier1_accuracy", Scope("domain", "eu"), Act.PAUSE, "s"))
    )
    assert after.experiment is not None
    for arm in after.experiment.arms:
        table = arm.thresholds or after.thresholds
        assert table.for_domain("eu").paused, arm.name
    assert not after.thresholds.default.paused


def test_halting_an_arm_never_widens_whatever_the_tables_name() -> None:
    """The control with a table of its own, the model's stricter and paused domain
    that neither arm names (an arm with a table of its own does not take the model's
    rows): the halted arm gets at least what it had and what the control gets, for
    every domain any table names."""
    arms = [
        {"name": "control", "weight": 1, "thresholds": {"t_high": 0.9, "t_low": 0.5}},
        {"name": "low", "weight": 1, "thresholds": {"t_high": 0.8, "t_low": 0.5},
         "domains": {"us": {"t_high": 0.85, "t_low": 0.55}}},
    ]  # fmt: skip
    before = doc(
        experiment={"name": "exp", "arms": arms},
        domains={"eu": {"t_high": 0.97, "t_low": 0.6, "paused": True}},
    )
    after = tightened(before, "m", Breach("arm_harmful", Scope("arm", "low"), Act.HALT_ARM, "s"))
    policies = [parse_policy({**d, "revision": 1}) for d in (before, after)]
    assert widening(*policies) == ()
    halted = after["models"]["m"]["experiment"]["arms"][1]
    assert halted["thresholds"] == {"t_high": 0.9, "t_low": 0.5}
    assert halted["domains"]["us"] == {"t_high": 0.9, "t_low": 0.55}
    assert halted["domains"]["eu"] == {"t_high": 0.9, "t_low": 0.55}  # both arms' strictest


def test_the_class_shift_estimate_is_the_mixes_total_variation() -> None:
    """Every decision predicted class 0 against an even reference: half of them moved."""
    window = traffic(200, {"control": 0.99, "low": 0.99})
    reference = Reference(EDGES, [0] * 9 + [100], [50, 50])
    found = check_model(compiled(doc()), window, reference, Limits(), (0, 1))
    assert found.class_shift == pytest.approx(0.5)
    assert check_model(compiled(doc()), window, None, Limits(), (0, 1)).class_shift is None
