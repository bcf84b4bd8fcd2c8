"""Who may send which feedback, and who may read it. Pure.

``client`` (an application) sends every type but REVIEW; ``sidecar`` sends OUTCOME
(what RecordOutcome learns); ``review`` (the review queue) sends REVIEW; each may send
a RETRACTION of a label it sent itself (``validation.check_retraction``); ``viewer``
reads a request's history; ``review`` and ``viewer`` read the labels that stand for a
batch of requests (Labels: outcomes and corrections, what the queue compares its
reviewers with); ``exporter`` (a training or recalibration job) exports datasets.
Who sent an event is the principal its credential names."""

from __future__ import annotations

import enum
from collections.abc import Mapping

from hitl_client.stubs.hitl.v1 import feedback_pb2 as fpb
from sidecar.auth import Principal, authorize
from sidecar.errors import PermissionDenied


class FeedbackRole(enum.StrEnum):
    CLIENT = "client"
    SIDECAR = "sidecar"
    REVIEW = "review"
    VIEWER = "viewer"
    EXPORTER = "exporter"


SENDERS = frozenset({FeedbackRole.CLIENT, FeedbackRole.SIDECAR, FeedbackRole.REVIEW})
METHOD_ROLES: Mapping[str, frozenset[str]] = {
    "Record": SENDERS,
    "RecordBatch": SENDERS,
    "RecordDecisions": frozenset({FeedbackRole.SIDECAR}),
    "Get": frozenset({FeedbackRole.VIEWER}),
    "Labels": frozenset({FeedbackRole.REVIEW, FeedbackRole.VIEWER}),
    "Export": frozenset({FeedbackRole.EXPORTER}),
}
# The types each sending role may send.
TYPES_OF: Mapping[str, frozenset[fpb.FeedbackType.ValueType]] = {
    FeedbackRole.CLIENT: frozenset(
        {
            fpb.FEEDBACK_OUTCOME,
            fpb.FEEDBACK_EXPLICIT_CORRECTION,
            fpb.FEEDBACK_RATING,
            fpb.FEEDBACK_IMPLICIT,
            fpb.FEEDBACK_PREFERENCE,
            fpb.FEEDBACK_RETRACTION,
        }
    ),
    FeedbackRole.SIDECAR: frozenset({fpb.FEEDBACK_OUTCOME, fpb.FEEDBACK_RETRACTION}),
    FeedbackRole.REVIEW: frozenset({fpb.FEEDBACK_REVIEW, fpb.FEEDBACK_RETRACTION}),
}


def check_method(principal: Principal, method: str) -> None:
    """PermissionDenied unless the principal's roles allow method."""
    authorize(principal, method, METHOD_ROLES[method])


def check_type(principal: Principal, event_type: fpb.FeedbackType.ValueType) -> None:
    """PermissionDenied unless one of the principal's roles may send the (valid) type."""
    if not any(event_type in TYPES_OF.get(role, ()) for role in principal.roles):
        name = fpb.FeedbackType.Name(event_type)
        raise PermissionDenied(f"{principal.name} may not send {name} feedback")
