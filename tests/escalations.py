"""Escalation records for review queue tests: valid by default, any field replaced."""

from __future__ import annotations

from typing import Any

from sidecar.escalation.record import Escalation


def escalation(escalation_id: str = "e1", **fields: Any) -> Escalation:
    """A HUMAN_ASSISTED escalation of model 'm' predicting class 1 ('b') of three; an
    AUTOMATED one is an audit sample unless the fields say otherwise."""
    values: dict[str, Any] = {
        "escalation_id": escalation_id,
        "request_id": f"req-{escalation_id}",
        "model": "m",
        "model_version": "v1",
        "domain": "eu",
        "tier": "HUMAN_ASSISTED",
        "reason": "THRESHOLD",
        "rule_id": "",
        "predicted_class": 1,
        "predicted_label": "b",
        "calibrated_confidence": 0.625,
        "policy_revision": 3,
        "calibration_version": "temperature-1",
        "experiment_arm": "",
        "degraded": False,
        "input_ref": f"s3://inputs/{escalation_id}",
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "created_at": 1_799_999_990.0,
        "context": {"customer": "c-19"},
        "string_attributes": {"channel": "web"},
        "numeric_attributes": {"amount": 1250.0},
        "logits": [0.5, 2.0, -1.0],
        "input_kind": "LOGITS",
    }
    if fields.get("tier") == "AUTOMATED":
        values["reason"] = "AUDIT_SAMPLE"
    values.update(fields)
    return Escalation(**values)
