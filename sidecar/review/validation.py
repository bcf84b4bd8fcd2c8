"""Every bound a caller of the review queue can break, named by its proto field.
Pure; raises InvalidRequest."""

from __future__ import annotations

import json
import math

from sidecar.core.validation import (
    MAX_INPUT_REF,
    MAX_LOGITS,
    MAX_NAME,
    MAX_REQUEST_ID,
    MAX_STRING_VALUE,
    check_attributes,
    check_context,
    check_labels,
)
from sidecar.errors import InvalidRequest
from sidecar.escalation.record import Escalation
from sidecar.review.item import TIERS, Verdict
from sidecar.review.resolution import ReviewerVerdict

MAX_BATCH = 1000
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
DEFAULT_LEASE_SECONDS = 300.0
DEFAULT_MAX_LEASE_SECONDS = 3600.0  # a lease no longer than this (HITL_REVIEW_MAX_LEASE_SECONDS)
DEFAULT_MAX_CLAIMS = 10  # items one reviewer may hold at once (HITL_REVIEW_MAX_CLAIMS)
MAX_REVIEWER = 128
MAX_TRACE_ID = 64
MAX_RATIONALE = 16 * 1024
MAX_LABEL = 1024
MAX_EVIDENCE = 16 * 1024  # bytes of a resolution's evidence (a JSON object as text)
_INPUT_KINDS = frozenset({"LOGITS", "PROBABILITIES"})


def check_batch_size(size: int) -> None:
    if size == 0:
        raise InvalidRequest("escalations", "must hold at least one escalation")
    if size > MAX_BATCH:
        raise InvalidRequest("escalations", f"{size} escalations; at most {MAX_BATCH} per call")


def check_escalation(e: Escalation) -> None:
    """What makes an escalation unusable for good (the forwarder dead-letters it): the
    sidecar's own bounds on what a Route may carry, and a decision that holds together."""
    _text(e.escalation_id, "escalation_id", MAX_REQUEST_ID, required=True)
    _text(e.request_id, "request_id", MAX_REQUEST_ID)
    _text(e.model, "model", MAX_NAME, required=True)
    for field in ("model_version", "domain", "rule_id", "calibration_version", "experiment_arm"):
        _text(getattr(e, field), field, MAX_NAME)
    _text(e.predicted_label, "predicted_label", MAX_STRING_VALUE)
    _text(e.input_ref, "input_ref", MAX_INPUT_REF)
    _text(e.trace_id, "trace_id", MAX_TRACE_ID)
    if e.tier not in TIERS:
        raise InvalidRequest("tier", f"must be one of {', '.join(TIERS)}, got {e.tier or 'none'}")
    if e.tier == "AUTOMATED" and e.reason != "AUDIT_SAMPLE":
        raise InvalidRequest("reason", f"an AUTOMATED item is an audit sample, not {e.reason}")
    if e.input_kind not in _INPUT_KINDS:
        raise InvalidRequest("input_kind", f"unknown value {e.input_kind}")
    if not 0 < len(e.logits) <= MAX_LOGITS:
        raise InvalidRequest("logits", f"{len(e.logits)} values; 1 to {MAX_LOGITS}")
    if not all(math.isfinite(x) for x in e.logits):
        raise InvalidRequest("logits", "must be finite")
    if not -1 <= e.predicted_class < len(e.logits):
        raise InvalidRequest(
            "predicted_class",
            f"{e.predicted_class} is not a class of its {len(e.logits)} logits (or -1)",
        )
    check_attributes(e.string_attributes, e.numeric_attributes)
    check_context(e.context)
    check_labels(e.labels, len(e.logits))


def check_reviewer(reviewer: str) -> None:
    _text(reviewer, "reviewer", MAX_REVIEWER, required=True)


def check_model_filter(model: str) -> None:
    _text(model, "model", MAX_NAME)


def lease_seconds(value: float, longest: float = DEFAULT_MAX_LEASE_SECONDS) -> float:
    """The lease asked for, 0 meaning the default (or longest, when shorter)."""
    if value == 0:
        return min(DEFAULT_LEASE_SECONDS, longest)
    if not (math.isfinite(value) and 0 < value <= longest):
        raise InvalidRequest("lease_seconds", f"must be in (0, {longest:g}] seconds, got {value}")
    return value


def list_limit(value: int) -> int:
    """The limit asked for, 0 meaning the default."""
    if value == 0:
        return DEFAULT_LIMIT
    if not 0 < value <= MAX_LIMIT:
        raise InvalidRequest("limit", f"must be 1 to {MAX_LIMIT} (0: {DEFAULT_LIMIT}), got {value}")
    return value


def check_tier_filter(tier: str) -> None:
    if tier and tier not in TIERS:
        raise InvalidRequest("tier", f"unknown value {tier}")


def check_since(value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise InvalidRequest("resolved_since", f"must be a Unix time >= 0, got {value}")


def check_verdict(answer: ReviewerVerdict) -> None:
    _text(answer.escalation_id, "escalation_id", MAX_REQUEST_ID, required=True)
    check_reviewer(answer.reviewer)
    if answer.verdict is None:
        raise InvalidRequest("verdict", "is required: ACCEPT or OVERRIDE")
    corrected = answer.corrected_class is not None or bool(answer.corrected_label)
    if answer.verdict is Verdict.ACCEPT and corrected:
        field = "corrected_class" if answer.corrected_class is not None else "corrected_label"
        raise InvalidRequest(field, "is only for OVERRIDE; ACCEPT labels the predicted class")
    if answer.verdict is Verdict.OVERRIDE and not corrected:
        raise InvalidRequest(
            "corrected_class", "OVERRIDE needs corrected_class, corrected_label or both"
        )
    if answer.corrected_class is not None and answer.corrected_class < 0:
        raise InvalidRequest("corrected_class", f"must be >= 0, got {answer.corrected_class}")
    _text(answer.corrected_label, "corrected_label", MAX_LABEL)
    _text(answer.rationale, "rationale", MAX_RATIONALE)
    seconds = answer.time_to_label_seconds
    if not (math.isfinite(seconds) and seconds >= 0):
        raise InvalidRequest("time_to_label_seconds", f"must be >= 0 (0: measured), got {seconds}")
    check_evidence(answer.evidence)


def check_evidence(evidence: str) -> None:
    """Empty, or a JSON object of at most MAX_EVIDENCE bytes."""
    if not evidence:
        return
    size = len(evidence.encode())
    if size > MAX_EVIDENCE:
        raise InvalidRequest("evidence", f"is {size} bytes; at most {MAX_EVIDENCE}")
    try:
        parsed = json.loads(evidence)
    except ValueError as exc:
        raise InvalidRequest("evidence", f"is not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise InvalidRequest("evidence", "must be a JSON object")


def check_escalation_id(escalation_id: str) -> None:
    _text(escalation_id, "escalation_id", MAX_REQUEST_ID, required=True)


def _text(value: str, field: str, limit: int, *, required: bool = False) -> None:
    if required and not value:
        raise InvalidRequest(field, "is required")
    if len(value) > limit:
        raise InvalidRequest(field, f"is {len(value)} characters; at most {limit}")
