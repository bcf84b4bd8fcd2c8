"""What the registry keeps: principals, proposals, revisions, calibrator artefacts and
the audit trail of every call. Plain frozen records; no I/O here.

Policy documents are held as canonical JSON text (``sidecar.policy.canonical``): the
policy file's schema without ``revision`` and ``issued_at``, which the registry adds
when it signs a revision for a sidecar."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(enum.StrEnum):
    VIEWER = "viewer"  # read policies, history, proposals and calibrators
    SIDECAR = "sidecar"  # read and watch policies, download calibrators
    OPERATOR = "operator"  # propose changes, upload calibrators, apply tightening at once
    APPROVER = "approver"  # approve or reject another principal's proposal


class ProposalState(enum.StrEnum):
    PENDING = "PENDING"  # waits for an approver
    APPLIED = "APPLIED"  # became a revision
    REJECTED = "REJECTED"  # an approver said no
    SUPERSEDED = "SUPERSEDED"  # another change became the head first


@dataclass(frozen=True, slots=True)
class NewProposal:
    """A change as proposed: the whole document it would make the policy."""

    base_revision: int  # the head it was proposed against (0: no policy yet)
    document: str
    proposed_by: str
    reason: str
    rollback_of: int = 0  # the revision whose document this restores (0: not a rollback)
    widening: tuple[str, ...] = ()  # why it widens automation ("path: why"); empty: tightens only


@dataclass(frozen=True, slots=True)
class Proposal:
    id: int
    base_revision: int
    document: str
    proposed_by: str
    reason: str
    rollback_of: int
    widening: tuple[str, ...]
    state: ProposalState
    created_at: float
    decided_by: str = ""
    decided_at: float = 0.0
    decision_reason: str = ""
    revision: int = 0  # the revision it became (APPLIED only)


@dataclass(frozen=True, slots=True)
class Revision:
    """One version of the policy, as it became the head."""

    revision: int
    document: str
    proposal_id: int
    proposed_by: str
    approved_by: str  # empty when an operator applied a tightening change at once
    reason: str
    created_at: float


@dataclass(frozen=True, slots=True)
class CalibratorInfo:
    """A stored calibrator artefact; its bytes are addressed by sha256."""

    sha256: str
    name: str
    version: str
    size: int
    uploaded_by: str
    uploaded_at: float


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One call to the registry, allowed or not."""

    at: float
    principal: str  # empty when the caller was not authenticated
    method: str  # the rpc name, for example "Approve"
    outcome: str  # a gRPC status name: "OK", "PERMISSION_DENIED", ...
    detail: str


# How a pending proposal is settled: (APPLIED or REJECTED, decided_by, reason).
Settlement = tuple[ProposalState, str, str]
