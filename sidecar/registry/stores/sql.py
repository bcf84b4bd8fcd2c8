"""The registry store's SQL, written once for SQLite and PostgreSQL, and the store
logic both run. Statements use ``:name`` parameters; a Dialect renders them once, at
start-up, for its driver (``sidecar.storage.sql``) and adds what only it has (row
locks, column types).

Opening a store applies the migrations (``migrations``) the database lacks, as
``sidecar.storage.migrations`` does for every store.

A revision is written only with ``registry_head`` locked (the first thing such a
transaction does), so concurrent approvals queue: the first writes head + 1, the
next finds the head moved. Documents are kept as text exactly as given; times are
Unix seconds (float) from the caller."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sidecar.errors import Conflict, NotFound
from sidecar.registry.model import (
    AuditEntry,
    CalibratorInfo,
    NewProposal,
    Proposal,
    ProposalState,
    Revision,
    Settlement,
)
from sidecar.registry.stores import migrations
from sidecar.storage.migrations import Schema
from sidecar.storage.sql import Database, Dialect, Transaction, render_all
from sidecar.storage.store import ServiceStore

REGISTRY_LOCK_KEY = 7433  # its PostgreSQL advisory lock; the review store's is 7432

PROPOSAL_COLUMNS = (
    "id, base_revision, document, proposed_by, reason, rollback_of, widening, state, "
    "created_at, decided_by, decided_at, decision_reason, revision"
)
REVISION_COLUMNS = "revision, document, proposal_id, proposed_by, approved_by, reason, created_at"
CALIBRATOR_COLUMNS = "sha256, name, version, size, uploaded_by, uploaded_at"
AUDIT_COLUMNS = "at, principal, method, outcome, detail"


@dataclass(frozen=True, slots=True)
class Statements:
    """Every statement's template; ``statements`` renders them for one dialect."""

    head: str = "SELECT {revision_columns} FROM registry_revisions ORDER BY revision DESC LIMIT 1"
    lock_head: str = "SELECT revision FROM registry_head WHERE id = 1 {row_lock}"
    move_head: str = "UPDATE registry_head SET revision = :revision WHERE id = 1"
    revision: str = "SELECT {revision_columns} FROM registry_revisions WHERE revision = :revision"
    revisions: str = """
        SELECT {revision_columns} FROM registry_revisions
        WHERE (:before = 0 OR revision < :before)
        ORDER BY revision DESC
        LIMIT :limit"""
    insert_revision: str = """
        INSERT INTO registry_revisions ({revision_columns})
        VALUES (:revision, :document, :proposal_id, :proposed_by, :approved_by, :reason,
            :created_at)"""
    insert_proposal: str = """
        INSERT INTO registry_proposals (base_revision, document, proposed_by, reason,
            rollback_of, widening, state, created_at, decided_at, revision)
        VALUES (:base_revision, :document, :proposed_by, :reason, :rollback_of, :widening,
            :state, :created_at, :decided_at, :revision)
        RETURNING {proposal_columns}"""
    proposal: str = "SELECT {proposal_columns} FROM registry_proposals WHERE id = :id"
    lock_proposal: str = (
        "SELECT {proposal_columns} FROM registry_proposals WHERE id = :id {row_lock}"
    )
    proposals: str = """
        SELECT {proposal_columns} FROM registry_proposals
        WHERE (:state = '' OR state = :state)
        ORDER BY id DESC
        LIMIT :limit"""
    settle_proposal: str = """
        UPDATE registry_proposals
        SET state = :state, decided_by = :decided_by, decided_at = :decided_at,
            decision_reason = :decision_reason, revision = :revision
        WHERE id = :id
        RETURNING {proposal_columns}"""
    supersede: str = """
        UPDATE registry_proposals
        SET state = 'SUPERSEDED', decided_at = :now, decision_reason = :decision_reason
        WHERE state = 'PENDING' AND base_revision = :base_revision AND id <> :id"""
    put_calibrator: str = """
        INSERT INTO registry_calibrators ({calibrator_columns}, content)
        VALUES (:sha256, :name, :version, :size, :uploaded_by, :uploaded_at, :content)
        ON CONFLICT (sha256) DO NOTHING"""
    calibrator: str = """
        SELECT {calibrator_columns}, content FROM registry_calibrators WHERE sha256 = :sha256"""
    calibrators: str = """
        SELECT {calibrator_columns} FROM registry_calibrators ORDER BY uploaded_at DESC, sha256"""
    insert_audit: str = """
        INSERT INTO registry_audit ({audit_columns})
        VALUES (:at, :principal, :method, :outcome, :detail)"""
    audit_trail: str = "SELECT {audit_columns} FROM registry_audit ORDER BY id DESC LIMIT :limit"


def statements(dialect: Dialect) -> Statements:
    """Every statement, rendered for dialect."""
    return render_all(
        Statements(),
        dialect,
        proposal_columns=PROPOSAL_COLUMNS,
        revision_columns=REVISION_COLUMNS,
        calibrator_columns=CALIBRATOR_COLUMNS,
        audit_columns=AUDIT_COLUMNS,
    )


class SqlStore(ServiceStore):
    """The RegistryStore logic on db: a SQLite file (the embedded default), or
    PostgreSQL for replicas sharing one database.

    On SQLite every transaction is ``BEGIN IMMEDIATE``: it holds the file's write lock
    from its first read, so processes sharing the file never both write the next
    revision. On PostgreSQL transactions run at READ COMMITTED and a revision is
    written only with ``registry_head`` locked ``FOR UPDATE``: of two replicas
    approving at once the second waits, then sees the head moved."""

    def __init__(self, db: Database) -> None:
        self._sql = statements(db.dialect)
        # MIGRATIONS is read at each open, so a test can add one.
        super().__init__(db, Schema("registry", REGISTRY_LOCK_KEY, migrations.MIGRATIONS))

    # -- revisions -----------------------------------------------------------------

    def head(self) -> Revision | None:
        rows = self._rows(self._sql.head, {})
        return Revision(**rows[0]) if rows else None

    def revision(self, number: int) -> Revision:
        rows = self._rows(self._sql.revision, {"revision": number})
        if not rows:
            raise NotFound(f"revision {number}: no such revision")
        return Revision(**rows[0])

    def revisions(self, limit: int, before: int = 0) -> list[Revision]:
        rows = self._rows(self._sql.revisions, {"limit": limit, "before": before})
        return [Revision(**row) for row in rows]

    # -- proposals -----------------------------------------------------------------

    def propose(self, proposal: NewProposal, now: float) -> Proposal:
        with self._transaction() as tx:
            return self._insert_proposal(tx, proposal, ProposalState.PENDING, 0, now)

    def apply_now(self, proposal: NewProposal, now: float) -> tuple[Proposal, Revision]:
        with self._transaction() as tx:
            head = self._lock_head(tx)
            if head != proposal.base_revision:
                raise Conflict(_moved(head, proposal.base_revision))
            applied = self._insert_proposal(tx, proposal, ProposalState.APPLIED, head + 1, now)
            return applied, self._write_revision(tx, applied, "", now)

    def proposal(self, proposal_id: int) -> Proposal:
        rows = self._rows(self._sql.proposal, {"id": proposal_id})
        if not rows:
            raise NotFound(f"proposal {proposal_id}: no such proposal")
        return proposal_from_row(rows[0])

    def proposals(self, state: ProposalState | None, limit: int) -> list[Proposal]:
        parameters = {"state": state.value if state else "", "limit": limit}
        rows = self._rows(self._sql.proposals, parameters)
        return [proposal_from_row(row) for row in rows]

    def decide(
        self, proposal_id: int, settle: Callable[[Proposal], Settlement], now: float
    ) -> tuple[Proposal, Revision | None]:
        with self._transaction() as tx:
            head = self._lock_head(tx)  # before the proposal: every writer locks in this order
            rows = tx.rows(self._sql.lock_proposal, {"id": proposal_id})
            if not rows:
                raise NotFound(f"proposal {proposal_id}: no such proposal")
            pending = proposal_from_row(rows[0])
            if pending.state is not ProposalState.PENDING:
                raise Conflict(f"proposal {proposal_id} is {pending.state}, not PENDING")
            state, decided_by, reason = settle(pending)
            if state is ProposalState.REJECTED:
                return self._settle(tx, proposal_id, state, decided_by, reason, 0, now), None
            if state is not ProposalState.APPLIED:
                raise ValueError(f"settle answered {state}: only APPLIED or REJECTED")
            if head == pending.base_revision:
                applied = self._settle(tx, proposal_id, state, decided_by, reason, head + 1, now)
                return applied, self._write_revision(tx, applied, decided_by, now)
            # Kept when the transaction commits; the caller learns why by the Conflict.
            moved = _moved(head, pending.base_revision)
            self._settle(tx, proposal_id, ProposalState.SUPERSEDED, "", moved, 0, now)
        raise Conflict(f"proposal {proposal_id}: {moved}; it is now SUPERSEDED")

    def _lock_head(self, tx: Transaction) -> int:
        return int(tx.rows(self._sql.lock_head, {})[0]["revision"])

    def _insert_proposal(
        self,
        tx: Transaction,
        proposal: NewProposal,
        state: ProposalState,
        revision: int,
        now: float,
    ) -> Proposal:
        parameters = {
            "base_revision": proposal.base_revision,
            "document": proposal.document,
            "proposed_by": proposal.proposed_by,
            "reason": proposal.reason,
            "rollback_of": proposal.rollback_of,
            "widening": json.dumps(list(proposal.widening)),
            "state": state.value,
            "created_at": now,
            "decided_at": now if revision else 0.0,
            "revision": revision,
        }
        return proposal_from_row(tx.rows(self._sql.insert_proposal, parameters)[0])

    def _settle(
        self,
        tx: Transaction,
        proposal_id: int,
        state: ProposalState,
        decided_by: str,
        reason: str,
        revision: int,
        now: float,
    ) -> Proposal:
        parameters = {
            "id": proposal_id,
            "state": state.value,
            "decided_by": decided_by,
            "decided_at": now,
            "decision_reason": reason,
            "revision": revision,
        }
        return proposal_from_row(tx.rows(self._sql.settle_proposal, parameters)[0])

    def _write_revision(
        self, tx: Transaction, applied: Proposal, approved_by: str, now: float
    ) -> Revision:
        """applied's revision, made the head; others pending on its base superseded."""
        revision = Revision(
            revision=applied.revision,
            document=applied.document,
            proposal_id=applied.id,
            proposed_by=applied.proposed_by,
            approved_by=approved_by,
            reason=applied.reason,
            created_at=now,
        )
        tx.run(self._sql.insert_revision, asdict(revision))
        tx.run(self._sql.move_head, {"revision": revision.revision})
        superseded = {
            "now": now,
            "base_revision": applied.base_revision,
            "id": applied.id,
            "decision_reason": f"revision {revision.revision} became the head first",
        }
        tx.run(self._sql.supersede, superseded)
        return revision

    # -- calibrators ---------------------------------------------------------------

    def put_calibrator(self, info: CalibratorInfo, content: bytes) -> bool:
        parameters = {
            "sha256": info.sha256,
            "name": info.name,
            "version": info.version,
            "size": info.size,
            "uploaded_by": info.uploaded_by,
            "uploaded_at": info.uploaded_at,
            "content": content,
        }
        with self._transaction() as tx:
            return tx.run(self._sql.put_calibrator, parameters) == 1

    def calibrator(self, sha256: str) -> tuple[CalibratorInfo, bytes]:
        rows = self._rows(self._sql.calibrator, {"sha256": sha256})
        if not rows:
            raise NotFound(f"calibrator {sha256}: no such artefact")
        row = rows[0]
        content = bytes(row.pop("content"))
        return CalibratorInfo(**row), content

    def calibrators(self) -> list[CalibratorInfo]:
        rows = self._rows(self._sql.calibrators, {})
        return [CalibratorInfo(**row) for row in rows]

    # -- principals and audit --------------------------------------------------------

    def record(self, entries: Sequence[AuditEntry]) -> None:
        if not entries:
            return
        with self._transaction() as tx:
            tx.run_many(self._sql.insert_audit, [asdict(e) for e in entries])

    def audit_trail(self, limit: int) -> list[AuditEntry]:
        rows = self._rows(self._sql.audit_trail, {"limit": limit})
        return [AuditEntry(**row) for row in rows]


def _moved(head: int, base: int) -> str:
    return f"the head is revision {head}, not its base revision {base}"


def proposal_from_row(row: Mapping[str, Any]) -> Proposal:
    return Proposal(
        id=int(row["id"]),
        base_revision=int(row["base_revision"]),
        document=row["document"],
        proposed_by=row["proposed_by"],
        reason=row["reason"],
        rollback_of=int(row["rollback_of"]),
        widening=tuple(json.loads(row["widening"])),
        state=ProposalState(row["state"]),
        created_at=float(row["created_at"]),
        decided_by=row["decided_by"],
        decided_at=float(row["decided_at"]),
        decision_reason=row["decision_reason"],
        revision=int(row["revision"]),
    )
