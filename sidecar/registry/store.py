"""Where the registry keeps its state: one interface, implemented once in SQL
(``stores.sql``) on a SQLite file, the embedded default, or PostgreSQL for replicas
sharing one database, with numbered schema migrations applied at open.

Every method is one transaction and takes ``now`` from the caller: stores read no
clock. A store raises NotFound and Conflict as documented, whatever a ``settle``
callback raises as it is, and StoreUnavailable when the database fails or cannot be
reached (the caller may retry)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from sidecar.auth import Principal
from sidecar.registry.model import (
    AuditEntry,
    CalibratorInfo,
    NewProposal,
    Proposal,
    ProposalState,
    Revision,
    Role,
    Settlement,
)
from sidecar.registry.stores.sql import SqlStore
from sidecar.storage.store import open_database

# What settle() returns for a pending proposal: apply it (the store writes the next
# revision with approved_by) or reject it; ``reason`` is kept as the decision's.


class RegistryStore(Protocol):
    # -- revisions -----------------------------------------------------------------

    def head(self) -> Revision | None:
        """The newest revision; None before the first."""
        ...

    def revision(self, number: int) -> Revision:
        """That revision; NotFound when there is none."""
        ...

    def revisions(self, limit: int, before: int = 0) -> list[Revision]:
        """Up to limit revisions, newest first, numbered below before (0: from the head)."""
        ...

    # -- proposals -----------------------------------------------------------------

    def propose(self, proposal: NewProposal, now: float) -> Proposal:
        """Store a PENDING proposal with the next id."""
        ...

    def apply_now(self, proposal: NewProposal, now: float) -> tuple[Proposal, Revision]:
        """Store proposal as APPLIED and make it revision head + 1 (approved_by empty),
        in one transaction; Conflict when the head is no longer proposal.base_revision.
        Other PENDING proposals based on the old head become SUPERSEDED."""
        ...

    def proposal(self, proposal_id: int) -> Proposal:
        """NotFound when there is none."""
        ...

    def proposals(self, state: ProposalState | None, limit: int) -> list[Proposal]:
        """Newest first; state None means any."""
        ...

    def decide(
        self, proposal_id: int, settle: Callable[[Proposal], Settlement], now: float
    ) -> tuple[Proposal, Revision | None]:
        """Lock the proposal, call settle(proposal) and record its answer. NotFound when
        there is no such proposal; Conflict when it is not PENDING, or when settle says
        APPLIED and the head is no longer its base_revision (it is then marked
        SUPERSEDED in the same transaction). APPLIED writes revision head + 1 with the
        proposal's document, proposed_by, reason and approved_by = decided_by, and
        marks other PENDING proposals on the same base SUPERSEDED."""
        ...

    # -- calibrators ---------------------------------------------------------------

    def put_calibrator(self, info: CalibratorInfo, content: bytes) -> bool:
        """Store content under info.sha256 (the caller has verified it). False, and
        nothing changes, when that sha256 is already held."""
        ...

    def calibrator(self, sha256: str) -> tuple[CalibratorInfo, bytes]:
        """NotFound when there is none."""
        ...

    def calibrators(self) -> list[CalibratorInfo]:
        """Every artefact, newest upload first."""
        ...

    # -- principals and audit --------------------------------------------------------

    def add_principal(
        self, name: str, roles: frozenset[Role], token_sha256: str, cert_subject: str, now: float
    ) -> None:
        """Create or replace the principal called name. token_sha256 (hex, may be empty)
        and cert_subject (a client certificate's subject CN, may be empty) each identify
        at most one principal: Conflict when another holds it."""
        ...

    def principal_for_token(self, token_sha256: str) -> Principal | None: ...

    def principal_for_subject(self, cert_subject: str) -> Principal | None: ...

    def principals(self) -> list[Principal]: ...

    def record(self, entries: Sequence[AuditEntry]) -> None:
        """Append to the audit trail."""
        ...

    def audit_trail(self, limit: int) -> list[AuditEntry]:
        """The newest limit entries, newest first."""
        ...

    def close(self) -> None: ...


def open_store(url: str) -> RegistryStore:
    """The store on ``postgresql://...`` (a libpq URI) or ``sqlite:PATH`` (or a bare
    path); ``sidecar.storage.store.open_database`` says how each is opened."""
    return SqlStore(open_database(url))
