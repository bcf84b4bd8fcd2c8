"""Policy parsing: a valid document compiles; every invalid one names its field."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from sidecar.core.drift import DriftAction, DriftPolicy
from sidecar.core.policy import parse_policy
from sidecar.core.thresholds import Thresholds, UnknownDomain
from sidecar.errors import PolicyError

SHA = "a" * 64
VALID: dict[str, Any] = {
    "revision": 4,
    "issued_at": "2026-11-21T09:00:00Z",
    "max_age_seconds": 3600,
    "models": {
        "fraud": {
            "calibrator": {"path": "fraud.onnx", "sha256": SHA, "version": "t-3"},
            "labels": ["legit", "fraud"],
            "thresholds": {"t_high": 0.95, "t_low": 0.6},
            "domains": {"eu": {"t_high": 0.98, "t_low": 0.7}},
            "rules": [
                {"id": "big", "when": [{"field": "attributes.amount", "op": "gt", "value": 1000}]}
            ],
            "experiment": {
                "name": "strict-eu",
                "unit": "attributes.user",
                "arms": [
                    {"name": "control", "weight": 9},
                    {"name": "strict", "weight": 1, "thresholds": {"t_high": 0.99, "t_low": 0.6}},
                ],
            },
            "audit_sample_rate": 0.02,
            "target_tier1_accuracy": 0.99,
            "drift": {"window": 500, "psi_alarm": 0.3, "action": "pause_automation"},
        }
    },
}


def test_valid_policy_compiles() -> None:
    """Every section of a full policy lands in the compiled objects."""
    policy = parse_policy(VALID)
    model = policy.models["fraud"]
    assert policy.revision == 4
    assert policy.max_age_seconds == 3600
    assert policy.issued_at == pytest.approx(1795251600.0)
    assert model.thresholds.for_domain("eu") == Thresholds(0.98, 0.7)
    assert model.thresholds.for_domain("") == Thresholds(0.95, 0.6)
    assert model.thresholds.for_domain("us") == Thresholds(0.98, 0.7)  # unknown: strictest
    assert model.thresholds.unknown is UnknownDomain.STRICTEST
    assert model.rules[0].id == "big"
    assert model.experiment is not None
    assert [a.name for a in model.experiment.arms] == ["control", "strict"]
    assert model.audit.rate == 0.02
    assert model.labels == ("legit", "fraud")
    assert model.drift == DriftPolicy(500, 0.3, 0.15, DriftAction.PAUSE_AUTOMATION)


def test_thresholds_may_be_paused() -> None:
    """paused: true on any thresholds; an unknown domain gets the pause of the strictest."""
    doc = broken("models.fraud.domains.eu.paused", True)
    model = parse_policy(doc).models["fraud"]
    assert model.thresholds.for_domain("eu") == Thresholds(0.98, 0.7, paused=True)
    assert not model.thresholds.for_domain("").paused
    assert model.thresholds.for_domain("us").paused


def test_stale_after_max_age() -> None:
    """is_stale compares now with issued_at + max_age_seconds."""
    policy = parse_policy(VALID)
    assert policy.issued_at is not None
    assert not policy.is_stale(policy.issued_at + 3600)
    assert policy.is_stale(policy.issued_at + 3601)


def broken(path: str, value: Any) -> dict[str, Any]:
    """VALID with the field at a dotted path replaced (or deleted when value is ...)."""
    doc = copy.deepcopy(VALID)
    *parents, last = path.split(".")
    node: Any = doc
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is ...:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("revision", ..., "revision"),
        ("revision", 0, "revision"),
        ("revision", "7", "revision"),
        ("issued_at", ..., "issued_at"),
        ("issued_at", "yesterday", "issued_at"),
        ("models", {}, "models"),
        ("colour", "blue", "colour"),
        ("models.fraud.thresholds.t_high", 1.5, "models.fraud.thresholds.t_high"),
        ("models.fraud.thresholds.t_low", 0.99, "models.fraud.thresholds.t_low"),
        ("models.fraud.thresholds.t_high", float("nan"), "models.fraud.thresholds.t_high"),
        ("models.fraud.thresholds", ..., "models.fraud.thresholds"),
        ("models.fraud.domains.eu.t_low", "high", "models.fraud.domains.eu.t_low"),
        ("models.fraud.calibrator.sha256", "abc", "models.fraud.calibrator.sha256"),
        ("models.fraud.calibrator.version", "", "models.fraud.calibrator.version"),
        ("models.fraud.rules.0.when", [], "models.fraud.rules[0].when"),
        ("models.fraud.rules.0.when.0.op", "like", "models.fraud.rules[0].when[0].op"),
        ("models.fraud.rules.0.when.0.field", "amount", "models.fraud.rules[0].when[0].field"),
        ("models.fraud.rules.0.when.0.value", "many", "models.fraud.rules[0].when[0].value"),
        ("models.fraud.experiment.unit", "user", "models.fraud.experiment.unit"),
        ("models.fraud.experiment.arms.1.weight", -1, "models.fraud.experiment.arms[1].weight"),
        ("models.fraud.audit_sample_rate", 2, "models.fraud.audit_sample_rate"),
        ("models.fraud.labels", "legit", "models.fraud.labels"),
        ("models.fraud.thresholds.paused", "yes", "models.fraud.thresholds.paused"),
        ("models.fraud.drift.window", 10, "models.fraud.drift.window"),
        ("models.fraud.drift.window", 10**7, "models.fraud.drift.window"),
        ("models.fraud.drift.psi_alarm", 0, "models.fraud.drift.psi_alarm"),
        ("models.fraud.drift.psi_alarm", ..., "models.fraud.drift.psi_alarm"),
        ("models.fraud.drift.psi_recover", 0.5, "models.fraud.drift.psi_recover"),
        ("models.fraud.drift.psi_recover", 0.3, "models.fraud.drift.psi_recover"),
        ("models.fraud.drift.action", "panic", "models.fraud.drift.action"),
        ("models.fraud.drift.colour", "blue", "models.fraud.drift.colour"),
    ],
)
def test_invalid_field_is_named(path: str, value: Any, field: str) -> None:
    """The error's path names the offending field."""
    with pytest.raises(PolicyError) as raised:
        parse_policy(broken(path, value))
    assert raised.value.path == field
    assert str(raised.value).startswith(field)


def test_duplicate_rule_ids_refused() -> None:
    """Two rules with one id would make audit records ambiguous."""
    doc = copy.deepcopy(VALID)
    rules = doc["models"]["fraud"]["rules"]
    rules.append(copy.deepcopy(rules[0]))
    with pytest.raises(PolicyError, match=r"models.fraud.rules\[1\].id: duplicate"):
        parse_policy(doc)


def test_not_a_mapping() -> None:
    """A document that is not a mapping (an empty file) is refused."""
    with pytest.raises(PolicyError, match="is required"):
        parse_policy(None)
