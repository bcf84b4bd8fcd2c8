"""What the registry does, independent of gRPC: validate and judge proposed changes,
apply them with the right number of people, sign revisions, keep calibrators.

Who may call what is checked before these methods run (``sidecar.registry.auth``);
what is checked here is what depends on the data: a change's author cannot approve
it, a change that widens automation needs an approver, a tightening change from an
operator is applied at once. Every method blocks on the store (the servicer runs
them in threads)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from sidecar.auth import Principal
from sidecar.calibration.runtime import build_session, verify
from sidecar.clock import Clock
from sidecar.core.diff import FieldChange, diff
from sidecar.core.policy import CalibratorRef, Policy, parse_policy
from sidecar.core.widening import widening
from sidecar.errors import (
    CalibratorError,
    Conflict,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    PolicyError,
)
from sidecar.policy.signing import Signer, canonical
from sidecar.registry.model import (
    CalibratorInfo,
    NewProposal,
    Proposal,
    ProposalState,
    Revision,
    Role,
    Settlement,
)
from sidecar.registry.store import RegistryStore

log = structlog.get_logger("hitl.registry")

MAX_CALIBRATOR_BYTES = 64 * 1024 * 1024
MAX_REASON_CHARS = 2000


@dataclass(frozen=True, slots=True)
class Signed:
    """A revision's document as handed to sidecars, and its signature."""

    revision: int
    issued_at: float
    document: bytes
    signature: bytes
    key_id: str


class Registry:
    def __init__(self, store: RegistryStore, signer: Signer, clock: Clock) -> None:
        self.store = store
        self._signer = signer
        self._clock = clock

    # -- policies -------------------------------------------------------------------

    def sign(self, revision: Revision) -> Signed:
        """revision's document with its number and the time now, signed."""
        issued_at = self._clock.now()
        doc = json.loads(revision.document)
        doc["revision"] = revision.revision
        doc["issued_at"] = datetime.fromtimestamp(issued_at, UTC).isoformat()
        document = canonical(doc)
        return Signed(
            revision.revision,
            issued_at,
            document,
            self._signer.sign(document),
            self._signer.key_id,
        )

    def revision(self, number: int) -> Revision:
        """number, or the head for 0; NotFound when there is none."""
        if number:
            return self.store.revision(number)
        head = self.store.head()
        if head is None:
            raise NotFound("no policy has been approved yet")
        return head

    def history(self, limit: int, before: int) -> list[tuple[Revision, list[FieldChange]]]:
        """Revisions newest first, each with what it changed against the one before."""
        revisions = self.store.revisions(limit + 1, before)
        return [
            (
                revision,
                changes(revisions[i + 1] if i + 1 < len(revisions) else None, revision.document),
            )
            for i, revision in enumerate(revisions[:limit])
        ]

    def propose(
        self, principal: Principal, doc: Mapping[str, Any], reason: str, base: int
    ) -> Proposal:
        """Judge a change to doc; apply it at once when it only tightens and the author
        is an operator, else store it PENDING for an approver."""
        return self._propose(principal, doc, reason, base, rollback_of=0)

    def rollback(self, principal: Principal, to_revision: int, reason: str) -> Proposal:
        """Propose the policy of an earlier revision as the next one."""
        target = self.store.revision(to_revision)
        head = self.store.head()
        base = head.revision if head else 0
        if head is not None and to_revision >= head.revision:
            raise InvalidRequest("to_revision", f"must be below the head, {head.revision}")
        doc = json.loads(target.document)
        return self._propose(principal, doc, reason, base, rollback_of=to_revision)

    def _propose(
        self,
        principal: Principal,
        doc: Mapping[str, Any],
        reason: str,
        base: int,
        rollback_of: int,
    ) -> Proposal:
        reason = _reason(reason)
        head = self.store.head()
        head_number = head.revision if head else 0
        if base != head_number:
            raise Conflict(
                f"base_revision {base} is not the head ({head_number}): "
                "review the current policy and propose against it"
            )
        policy = self.validate(doc, head_number + 1)
        document = canonical(doc).decode()
        before = self.validate(json.loads(head.document), head_number) if head else None
        if head is not None and head.document == document:
            raise InvalidRequest("policy", f"is the same as revision {head_number}")
        reasons = widening(before, policy)
        proposal = NewProposal(base, document, principal.name, reason, rollback_of, reasons)
        now = self._clock.now()
        if not reasons and principal.has(Role.OPERATOR):
            applied, revision = self.store.apply_now(proposal, now)
            log.info(
                "registry.applied",
                proposal=applied.id,
                revision=revision.revision,
                by=principal.name,
                path="tightening",
            )
            return applied
        pending = self.store.propose(proposal, now)
        log.info("registry.proposed", proposal=pending.id, by=principal.name, widening=reasons)
        return pending

    def validate(self, doc: Mapping[str, Any], revision: int) -> Policy:
        """doc parsed as revision (PolicyError naming the field when invalid); every
        calibrator it names must be stored, with the version it states."""
        if not isinstance(doc, Mapping):
            raise PolicyError("", "a policy must be a mapping")
        if "revision" in doc or "issued_at" in doc:
            field = "revision" if "revision" in doc else "issued_at"
            raise PolicyError(field, "is set by the registry; leave it out")
        stamped = {**doc, "revision": revision, "issued_at": "1970-01-01T00:00:00+00:00"}
        policy = parse_policy(stamped)
        for name, model in policy.models.items():
            ref = model.calibrator
            where = f"models.{name}.calibrator"
            if not ref.name:
                raise PolicyError(f"{where}.name", "is required (upload the file first)")
            try:
                info, _ = self.store.calibrator(ref.sha256)
            except NotFound:
                raise PolicyError(
                    f"{where}.sha256", f"{ref.sha256} is not stored in the registry"
                ) from None
            if info.version != ref.version:
                raise PolicyError(
                    f"{where}.version", f"{ref.version!r}; the stored one is {info.version!r}"
                )
        return policy

    def approve(self, principal: Principal, proposal_id: int, reason: str) -> Proposal:
        reason = _reason(reason, required=False)

        def settle(proposal: Proposal) -> Settlement:
            if proposal.proposed_by == principal.name:
                raise PermissionDenied(
                    f"{principal.name} proposed change {proposal.id}; "
                    "another approver must approve it"
                )
            return ProposalState.APPLIED, principal.name, reason

        proposal, revision = self.store.decide(proposal_id, settle, self._clock.now())
        log.info(
            "registry.approved",
            proposal=proposal.id,
            revision=revision.revision if revision else 0,
            by=principal.name,
        )
        return proposal

    def reject(self, principal: Principal, proposal_id: int, reason: str) -> Proposal:
        reason = _reason(reason, required=False)

        def settle(proposal: Proposal) -> Settlement:
            if not principal.has(Role.APPROVER) and proposal.proposed_by != principal.name:
                raise PermissionDenied(
                    f"{principal.name} may withdraw only their own proposals (role approver "
                    "rejects others')"
                )
            return ProposalState.REJECTED, principal.name, reason

        proposal, _ = self.store.decide(proposal_id, settle, self._clock.now())
        log.info("registry.rejected", proposal=proposal.id, by=principal.name)
        return proposal

    def proposal_changes(self, proposal: Proposal) -> list[FieldChange]:
        """What proposal changes against the revision it was based on."""
        base = self.store.revision(proposal.base_revision) if proposal.base_revision else None
        return changes(base, proposal.document)

    # -- calibrators ----------------------------------------------------------------

    def put_calibrator(
        self, principal: Principal, name: str, version: str, sha256: str, data: bytes
    ) -> CalibratorInfo:
        """Store an uploaded artefact once it proves to be what it claims."""
        for field, value in (("info.name", name), ("info.version", version)):
            if not value:
                raise InvalidRequest(field, "is required")
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256.lower():
            raise InvalidRequest("info.sha256", f"{sha256}, but the bytes hash to {digest}")
        try:
            verify(build_session(data, name), CalibratorRef("", digest, version, name))
        except CalibratorError as exc:
            raise InvalidRequest("data", str(exc)) from exc
        info = CalibratorInfo(digest, name, version, len(data), principal.name, self._clock.now())
        if self.store.put_calibrator(info, data):
            log.info("registry.calibrator_stored", sha256=digest, name=name, version=version)
            return info
        stored, _ = self.store.calibrator(digest)
        return stored


def changes(before: Revision | None, document: str) -> list[FieldChange]:
    return diff(json.loads(before.document) if before else None, json.loads(document))


def _reason(reason: str, *, required: bool = True) -> str:
    reason = reason.strip()
    if required and not reason:
        raise InvalidRequest("reason", "is required: say why the policy changes")
    if len(reason) > MAX_REASON_CHARS:
        raise InvalidRequest("reason", f"is longer than {MAX_REASON_CHARS} characters")
    return reason
