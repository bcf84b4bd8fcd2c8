"""Policy documents <-> registry messages: every field survives the round trip."""

from __future__ import annotations

from typing import Any

from sidecar.core.policy import parse_policy
from sidecar.registry.messages import document_from_policy, policy_from_document

SHA = "b" * 64

DOC: dict[str, Any] = {
    "models": {
        "m": {
            "calibrator": {"name": "cal", "version": "v1", "sha256": SHA},
            "thresholds": {"t_high": 0.9, "t_low": 0.5, "paused": True},
            "domains": {"eu": {"t_high": 0.95, "t_low": 0.6}},
            "experiment": {
                "name": "exp",
                "unit": "request_id",
                "arms": [
                    {"name": "control", "weight": 1.0},
                    {
                        "name": "strict",
                        "weight": 1.0,
                        "thresholds": {"t_high": 0.97, "t_low": 0.6, "paused": True},
                    },
                ],
            },
            "audit_sample_rate": 0.05,
            "target_tier1_accuracy": 0.99,
            "max_ece": 0.05,
            "unknown_domain": "reject",
            "drift": {"window": 500, "psi_alarm": 0.25, "psi_recover": 0.1, "action": "alert"},
        }
    }
}


def test_a_document_survives_the_message_round_trip() -> None:
    assert document_from_policy(policy_from_document(DOC)) == DOC
    parse_policy({"revision": 1, **DOC})  # and it is a valid policy


def test_a_drift_section_without_optional_fields_stays_without_them() -> None:
    doc = {"models": {"m": {**DOC["models"]["m"], "drift": {"window": 50, "psi_alarm": 0.2}}}}
    assert document_from_policy(policy_from_document(doc))["models"]["m"]["drift"] == {
        "window": 50,
        "psi_alarm": 0.2,
    }
