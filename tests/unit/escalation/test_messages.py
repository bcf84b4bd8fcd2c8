"""A decision's record gets its model's labels when it is forwarded, and only from the
policy revision it was decided under."""

from __future__ import annotations

from typing import Any

from sidecar.escalation.messages import decision_message, with_labels

LABELS = {("m", 3): ("cat", "dog")}


def labels_of(model: str, revision: int) -> tuple[str, ...]:
    return LABELS.get((model, revision), ())


def record(**fields: Any) -> dict[str, Any]:
    return {
        "request_id": "r-1",
        "model": "m",
        "model_version": "v1",
        "domain": "",
        "tier": "HUMAN_PRIMARY",
        "reason": "THRESHOLD",
        "rule_id": "",
        "predicted_class": 1,
        "predicted_label": "dog",
        "calibrated_confidence": 0.4,
        "policy_revision": 3,
        "calibration_version": "t-v1",
        "experiment_arm": "",
        "degraded": False,
        "trace_id": "",
        "created_at": 100.0,
        "logits": [0.1, 0.3],
        **fields,
    }


def test_a_decision_under_the_revision_in_force_gets_its_labels() -> None:
    message = decision_message(with_labels(record(), labels_of))
    assert list(message.labels) == ["cat", "dog"]


def test_labels_are_left_out_when_the_revision_or_the_kind_differs() -> None:
    older = record(policy_revision=2)
    assert with_labels(older, labels_of) is older
    assert not decision_message(with_labels(older, labels_of)).labels
    outcome = {"kind": "outcome", "model": "m", "policy_revision": 3}
    assert with_labels(outcome, labels_of) is outcome
