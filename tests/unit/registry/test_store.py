"""The registry store's semantics, each on SQLite and on PostgreSQL: revisions and their
pages, proposals decided, superseded and applied at once, concurrent approvals,
calibrator artefacts, principals and their credentials, the audit trail, schema
migrations at open, and a database that fails or goes away."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from psycopg.conninfo import make_conninfo

from sidecar.auth import Principal
from sidecar.errors import ConfigError, Conflict, NotFound, PermissionDenied, StoreUnavailable
from sidecar.registry.model import (
    AuditEntry,
    CalibratorInfo,
    NewProposal,
    Proposal,
    ProposalState,
    Role,
    Settlement,
)
from sidecar.registry.store import RegistryStore, open_store
from sidecar.registry.stores import migrations
from sidecar.registry.stores.sql import SqlStore
from sidecar.storage.migrations import Migration
from sidecar.storage.postgres import PostgresDatabase
from sidecar.storage.sql import POSTGRES, SQLITE
from sidecar.storage.sqlite import SqliteDatabase
from tests.postgres import DSN, dsn_for, end_backends, fresh_schema
from tests.unit.registry.conftest import Backend

PENDING, APPLIED, REJECTED, SUPERSEDED = ProposalState
LATEST = max(m.version for m in migrations.MIGRATIONS)


def change(base: int = 0, document: str = '{"v": 1}', **kw: object) -> NewProposal:
    fields: dict[str, object] = {"proposed_by": "alice", "reason": "why", **kw}
    return NewProposal(base, document, **fields)  # type: ignore[arg-type]


def approve(by: str = "bob", reason: str = "looks right") -> Callable[[Proposal], Settlement]:
    return lambda _: (APPLIED, by, reason)


def reject(by: str = "bob", reason: str = "too wide") -> Callable[[Proposal], Settlement]:
    return lambda _: (REJECTED, by, reason)


def not_called(proposal: Proposal) -> Settlement:
    raise AssertionError(f"settle called for proposal {proposal.id}")


def applied(store: RegistryStore, count: int) -> None:
    """count revisions on top of the head, each applied at once."""
    for _ in range(count):
        head = store.head()
        number = head.revision if head else 0
        store.apply_now(change(number, f'{{"v": {number + 1}}}'), 100.0 + number)


# -- revisions -----------------------------------------------------------------------


def test_empty_store_has_no_revision(store: RegistryStore) -> None:
    """Before the first revision: no head, no history, NotFound for any number."""
    assert store.head() is None
    assert store.revisions(10) == []
    with pytest.raises(NotFound, match="revision 1"):
        store.revision(1)


def test_documents_are_kept_exactly(store: RegistryStore) -> None:
    """A document comes back character for character, whitespace and non-ASCII included."""
    document = '{\n  "models": {"m": {"t_high": 0.9}},\t"note": "ünïcødé ✓ \\u0000"\n}\n'
    pending = store.propose(change(document=document), 1.0)
    _, revision = store.decide(pending.id, approve(), 2.0)
    assert revision is not None
    assert store.proposal(pending.id).document == document
    assert store.revision(1).document == document


def test_revisions_page_newest_first(store: RegistryStore) -> None:
    """limit cuts from the head; before pages on below a number; 0 means from the head."""
    applied(store, 5)
    assert [r.revision for r in store.revisions(2)] == [5, 4]
    assert [r.revision for r in store.revisions(2, before=4)] == [3, 2]
    assert [r.revision for r in store.revisions(2, before=2)] == [1]
    assert store.revisions(2, before=1) == []
    assert [r.revision for r in store.revisions(10, before=0)] == [5, 4, 3, 2, 1]


# -- proposals -----------------------------------------------------------------------


def test_propose_stores_a_pending_proposal(store: RegistryStore) -> None:
    """Every field is kept, the state is PENDING, and ids count up from 1."""
    first = store.propose(change(rollback_of=3, widening=("models.m.t_high: lowered",)), 7.0)
    second = store.propose(change(), 8.0)
    assert first == Proposal(
        id=1,
        base_revision=0,
        document='{"v": 1}',
        proposed_by="alice",
        reason="why",
        rollback_of=3,
        widening=("models.m.t_high: lowered",),
        state=PENDING,
        created_at=7.0,
    )
    assert second.id == 2
    assert store.proposal(1) == first


def test_unknown_proposal_is_not_found(store: RegistryStore) -> None:
    """proposal() and decide() on an id never stored: NotFound, settle never called."""
    with pytest.raises(NotFound, match="proposal 9"):
        store.proposal(9)
    with pytest.raises(NotFound, match="proposal 9"):
        store.decide(9, not_called, 1.0)


def test_proposals_newest_first_by_state(store: RegistryStore) -> None:
    """Newest first; a state filters, None means any; limit cuts the newest."""
    for _ in range(4):
        store.propose(change(), 1.0)
    store.decide(2, reject(), 2.0)
    assert [p.id for p in store.proposals(None, 10)] == [4, 3, 2, 1]
    assert [p.id for p in store.proposals(PENDING, 10)] == [4, 3, 1]
    assert [p.id for p in store.proposals(REJECTED, 10)] == [2]
    assert [p.id for p in store.proposals(None, 2)] == [4, 3]
    assert store.proposals(APPLIED, 10) == []


def test_decide_applies_as_the_next_revision(store: RegistryStore) -> None:
    """APPLIED writes head + 1 from the proposal, approved by the decider."""
    applied(store, 1)
    pending = store.propose(change(1, '{"v": 2}', reason="raise t_high"), 5.0)
    proposal, revision = store.decide(pending.id, approve("bob", "checked"), 6.0)
    assert (proposal.state, proposal.revision) == (APPLIED, 2)
    assert (proposal.decided_by, proposal.decided_at, proposal.decision_reason) == (
        "bob",
        6.0,
        "checked",
    )
    assert revision is not None
    assert revision == store.revision(2) == store.head()
    assert (revision.document, revision.proposal_id, revision.created_at) == (
        '{"v": 2}',
        pending.id,
        6.0,
    )
    assert (revision.proposed_by, revision.approved_by, revision.reason) == (
        "alice",
        "bob",
        "raise t_high",
    )


def test_decide_rejects(store: RegistryStore) -> None:
    """REJECTED records who and why and writes no revision."""
    pending = store.propose(change(), 1.0)
    proposal, revision = store.decide(pending.id, reject("bob", "too wide"), 2.0)
    assert revision is None
    assert (proposal.state, proposal.decided_by, proposal.decided_at) == (REJECTED, "bob", 2.0)
    assert (proposal.decision_reason, proposal.revision) == ("too wide", 0)
    assert store.proposal(pending.id) == proposal
    assert store.head() is None


def test_decided_proposal_is_a_conflict(store: RegistryStore) -> None:
    """Deciding a proposal that is not PENDING: Conflict naming its state, settle not called."""
    pending = store.propose(change(), 1.0)
    store.decide(pending.id, reject(), 2.0)
    with pytest.raises(Conflict, match="REJECTED, not PENDING"):
        store.decide(pending.id, not_called, 3.0)
    assert store.proposal(pending.id).decided_at == 2.0


def test_decide_supersedes_when_the_head_moved(store: RegistryStore) -> None:
    """Approved after the head left its base: Conflict, the proposal SUPERSEDED, no revision."""
    applied(store, 2)
    stale = store.propose(change(1), 5.0)
    with pytest.raises(Conflict, match="head is revision 2, not its base revision 1"):
        store.decide(stale.id, approve(), 6.0)
    proposal = store.proposal(stale.id)
    assert (proposal.state, proposal.decided_at, proposal.revision) == (SUPERSEDED, 6.0, 0)
    assert [r.revision for r in store.revisions(10)] == [2, 1]


def test_rejecting_a_stale_proposal_is_recorded(store: RegistryStore) -> None:
    """A rejection does not depend on the head: REJECTED even though the head moved."""
    applied(store, 1)
    stale = store.propose(change(0), 5.0)
    proposal, _ = store.decide(stale.id, reject(), 6.0)
    assert proposal.state is REJECTED


def test_applying_supersedes_pending_proposals_on_the_same_base(store: RegistryStore) -> None:
    """Others PENDING on the base become SUPERSEDED saying why; those on another base wait."""
    winner, rival, elsewhere = (store.propose(change(base), 1.0) for base in (0, 0, 7))
    store.decide(winner.id, approve(), 2.0)
    superseded = store.proposal(rival.id)
    assert (superseded.state, superseded.decided_by, superseded.decided_at) == (SUPERSEDED, "", 2.0)
    assert superseded.decision_reason == "revision 1 became the head first"
    assert store.proposal(elsewhere.id).state is PENDING


def test_settle_errors_pass_through_and_change_nothing(store: RegistryStore) -> None:
    """Whatever settle raises reaches the caller as it is; the proposal stays PENDING."""
    pending = store.propose(change(), 1.0)

    def refuse(_: Proposal) -> Settlement:
        raise PermissionDenied("alice may not approve her own change")

    with pytest.raises(PermissionDenied, match="her own change"):
        store.decide(pending.id, refuse, 2.0)
    assert store.proposal(pending.id) == pending


def test_settle_may_only_apply_or_reject(store: RegistryStore) -> None:
    """Any other answer is a bug: ValueError, nothing recorded."""
    pending = store.propose(change(), 1.0)
    with pytest.raises(ValueError, match="SUPERSEDED"):
        store.decide(pending.id, lambda _: (SUPERSEDED, "bob", ""), 2.0)
    assert store.proposal(pending.id).state is PENDING


def test_apply_now_makes_the_next_revision(store: RegistryStore) -> None:
    """Stored APPLIED and written as head + 1 in one call, with no approver."""
    proposal, revision = store.apply_now(change(reason="tighten"), 3.0)
    assert (proposal.id, proposal.state, proposal.revision) == (1, APPLIED, 1)
    assert (proposal.decided_by, proposal.decided_at) == ("", 3.0)
    assert (revision.revision, revision.proposal_id, revision.approved_by) == (1, 1, "")
    assert (revision.proposed_by, revision.reason, revision.created_at) == ("alice", "tighten", 3.0)
    assert store.head() == revision
    assert store.proposals(None, 10) == [proposal]


def test_apply_now_supersedes_pending_proposals_on_its_base(store: RegistryStore) -> None:
    """A change applied at once supersedes what waited on the same head."""
    waiting = store.propose(change(), 1.0)
    store.apply_now(change(), 2.0)
    assert store.proposal(waiting.id).state is SUPERSEDED


def test_apply_now_conflicts_when_the_head_moved(store: RegistryStore) -> None:
    """Based on an old head: Conflict, and neither a proposal nor a revision is stored."""
    applied(store, 1)
    with pytest.raises(Conflict, match="head is revision 1, not its base revision 0"):
        store.apply_now(change(0), 5.0)
    assert len(store.proposals(None, 10)) == 1
    assert [r.revision for r in store.revisions(10)] == [1]


def _race(stores: list[RegistryStore], proposal_ids: list[int]) -> list[str]:
    """Approve proposal_ids[i] on stores[i], all at once; each outcome as text."""
    start = threading.Barrier(len(stores))
    outcomes = [""] * len(stores)

    def slow_approval(_: Proposal) -> Settlement:
        time.sleep(0.05)  # a wide window for the other approval to run into
        return APPLIED, "bob", "ok"

    def run(index: int) -> None:
        start.wait()
        try:
            _, revision = stores[index].decide(proposal_ids[index], slow_approval, 2.0)
            outcomes[index] = f"revision {revision.revision if revision else None}"
        except Conflict:
            outcomes[index] = "Conflict"
        except Exception as exc:  # any other outcome fails the caller's assertion
            outcomes[index] = repr(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return sorted(outcomes)


def test_concurrent_approvals_on_one_base_create_one_revision(backend: Backend) -> None:
    """Two replicas approve two proposals on the same head at once: one becomes revision 1,
    the other gets Conflict and ends SUPERSEDED."""
    replicas: list[RegistryStore] = [backend.open(), backend.open()]
    ids = [replicas[0].propose(change(), 1.0).id for _ in replicas]
    assert _race(replicas, ids) == ["Conflict", "revision 1"]
    assert [r.revision for r in replicas[1].revisions(10)] == [1]
    assert sorted(p.state for p in replicas[1].proposals(None, 10)) == [APPLIED, SUPERSEDED]


def test_concurrent_approvals_of_one_proposal_apply_it_once(backend: Backend) -> None:
    """Two replicas approve the same proposal at once: one applies it, the other Conflict."""
    replicas: list[RegistryStore] = [backend.open(), backend.open()]
    pending = replicas[0].propose(change(), 1.0)
    assert _race(replicas, [pending.id, pending.id]) == ["Conflict", "revision 1"]
    assert [r.revision for r in replicas[1].revisions(10)] == [1]


# -- calibrators ---------------------------------------------------------------------


def calibrator(sha256: str = "a" * 64, uploaded_at: float = 1.0, **kw: object) -> CalibratorInfo:
    fields: dict[str, object] = {
        "name": "fraud-temp",
        "version": "3",
        "size": 256,
        "uploaded_by": "alice",
        **kw,
    }
    return CalibratorInfo(sha256=sha256, uploaded_at=uploaded_at, **fields)  # type: ignore[arg-type]


def test_calibrator_bytes_come_back_exactly(store: RegistryStore) -> None:
    """Every byte value survives the round trip, with the artefact's description."""
    content = bytes(range(256))
    assert store.put_calibrator(calibrator(), content) is True
    assert store.calibrator("a" * 64) == (calibrator(), content)


def test_put_calibrator_is_idempotent_by_sha256(store: RegistryStore) -> None:
    """The same sha256 again: False, and the first upload is kept as it was."""
    store.put_calibrator(calibrator(), b"first")
    assert store.put_calibrator(calibrator(uploaded_by="bob", uploaded_at=9.0), b"other") is False
    assert store.calibrator("a" * 64) == (calibrator(), b"first")
    assert len(store.calibrators()) == 1


def test_calibrators_newest_upload_first(store: RegistryStore) -> None:
    """The list describes every artefact, newest upload first."""
    for sha256, at in [("a" * 64, 1.0), ("b" * 64, 3.0), ("c" * 64, 2.0)]:
        store.put_calibrator(calibrator(sha256, at), b"x")
    assert [c.sha256[0] for c in store.calibrators()] == ["b", "c", "a"]


def test_unknown_calibrator_is_not_found(store: RegistryStore) -> None:
    """A sha256 never stored: NotFound naming it."""
    with pytest.raises(NotFound, match="f" * 64):
        store.calibrator("f" * 64)


# -- principals ----------------------------------------------------------------------

OPERATOR = frozenset({Role.OPERATOR, Role.VIEWER})


def test_principals_are_found_by_token_or_subject(store: RegistryStore) -> None:
    """A token's hash finds its principal, a certificate subject its own; others find none."""
    store.add_principal("alice", OPERATOR, "1" * 64, "", 1.0)
    store.add_principal("sidecar-eu", frozenset({Role.SIDECAR}), "", "sidecar-eu.prod", 1.0)
    assert store.principal_for_token("1" * 64) == Principal("alice", OPERATOR)
    assert store.principal_for_subject("sidecar-eu.prod") == Principal(
        "sidecar-eu", frozenset({Role.SIDECAR})
    )
    assert store.principal_for_token("2" * 64) is None
    assert store.principal_for_subject("alice") is None


def test_empty_credentials_identify_nobody(store: RegistryStore) -> None:
    """Many principals may lack a token or a subject; an empty one finds none of them."""
    store.add_principal("alice", OPERATOR, "", "", 1.0)
    store.add_principal("bob", OPERATOR, "", "", 1.0)
    assert store.principal_for_token("") is None
    assert store.principal_for_subject("") is None


def test_add_principal_replaces_one_of_the_same_name(store: RegistryStore) -> None:
    """Roles and credentials are replaced; the old token no longer finds anyone."""
    store.add_principal("alice", OPERATOR, "1" * 64, "alice.corp", 1.0)
    store.add_principal("alice", frozenset({Role.APPROVER}), "2" * 64, "", 2.0)
    assert store.principals() == [Principal("alice", frozenset({Role.APPROVER}))]
    assert store.principal_for_token("1" * 64) is None
    assert store.principal_for_subject("alice.corp") is None
    assert store.principal_for_token("2" * 64) == Principal("alice", frozenset({Role.APPROVER}))


def test_token_held_by_another_is_a_conflict(store: RegistryStore) -> None:
    """A token hash identifies one principal: Conflict naming its holder, nothing changed."""
    store.add_principal("alice", OPERATOR, "1" * 64, "", 1.0)
    with pytest.raises(Conflict, match="token already identifies 'alice'"):
        store.add_principal("mallory", OPERATOR, "1" * 64, "", 2.0)
    assert [p.name for p in store.principals()] == ["alice"]


def test_subject_held_by_another_is_a_conflict(store: RegistryStore) -> None:
    """A certificate subject identifies one principal: Conflict naming it, nothing changed."""
    store.add_principal("sidecar-eu", frozenset({Role.SIDECAR}), "", "eu.prod", 1.0)
    with pytest.raises(Conflict, match=r"'eu\.prod' already identifies 'sidecar-eu'"):
        store.add_principal("sidecar-us", frozenset({Role.SIDECAR}), "", "eu.prod", 2.0)
    assert store.principal_for_subject("eu.prod") == Principal(
        "sidecar-eu", frozenset({Role.SIDECAR})
    )


def test_principals_sorted_by_name(store: RegistryStore) -> None:
    """Every principal, by name, with its roles (none is allowed)."""
    for name in ["carol", "alice", "bob"]:
        store.add_principal(name, frozenset() if name == "bob" else OPERATOR, "", "", 1.0)
    assert store.principals() == [
        Principal("alice", OPERATOR),
        Principal("bob", frozenset()),
        Principal("carol", OPERATOR),
    ]


# -- audit ---------------------------------------------------------------------------


def test_audit_trail_newest_first(store: RegistryStore) -> None:
    """Entries come back in reverse order of recording (not of their times), up to limit."""
    entries = [AuditEntry(float(10 - i), f"p{i}", "Approve", "OK", f"#{i}") for i in range(5)]
    store.record(entries[:2])
    store.record([])
    store.record(entries[2:])
    assert store.audit_trail(3) == entries[:1:-1]
    assert store.audit_trail(100) == entries[::-1]


def test_audit_is_append_only(backend: Backend, store: RegistryStore) -> None:
    """The database itself refuses to change or delete an audit entry."""
    store.record([AuditEntry(1.0, "", "GetPolicy", "UNAUTHENTICATED", "no token")])
    for statement in ["UPDATE registry_audit SET outcome = 'OK'", "DELETE FROM registry_audit"]:
        with pytest.raises(backend.driver_error, match="append-only"), backend.transaction() as tx:
            tx.run(statement, {})
    assert [e.outcome for e in store.audit_trail(10)] == ["UNAUTHENTICATED"]


# -- migrations ----------------------------------------------------------------------

LATER = Migration(
    LATEST + 1,
    "a later version's table",
    ("CREATE TABLE registry_later (id INTEGER PRIMARY KEY)",),
)


def recorded_migrations(backend: Backend) -> list[int]:
    with backend.transaction() as tx:
        rows = tx.rows("SELECT version FROM registry_migrations ORDER BY version", {})
    return [int(row["version"]) for row in rows]


def test_migrations_are_numbered_from_one() -> None:
    """Versions run 1, 2, ... in the order listed, none missing or repeated."""
    versions = [m.version for m in migrations.MIGRATIONS]
    assert versions == list(range(1, len(versions) + 1))


def test_open_applies_every_migration_and_records_it(backend: Backend) -> None:
    """A new database gets the whole schema, each migration recorded."""
    assert backend.open().migrated == list(range(1, LATEST + 1))
    assert recorded_migrations(backend) == list(range(1, LATEST + 1))


def test_reopening_applies_nothing(backend: Backend) -> None:
    """A second open of an up-to-date database is a no-op that keeps its contents."""
    applied(backend.open(), 1)
    again = backend.open()
    assert again.migrated == []
    assert [r.revision for r in again.revisions(10)] == [1]


def test_open_applies_the_migrations_a_database_lacks(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database written by this version, opened by one with a later migration, gets
    only that migration and keeps its contents."""
    applied(backend.open(), 1)
    monkeypatch.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS, LATER))
    upgraded = backend.open()
    assert upgraded.migrated == [LATER.version]
    assert recorded_migrations(backend) == list(range(1, LATER.version + 1))
    with backend.transaction() as tx:
        assert tx.rows("SELECT COUNT(*) AS n FROM registry_later", {}) == [{"n": 0}]
    assert upgraded.head() is not None


def test_database_from_a_newer_version_is_refused(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database recording a migration this version does not know: ConfigError naming it."""
    with monkeypatch.context() as later:
        later.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS, LATER))
        backend.open().close()
    with pytest.raises(ConfigError, match=f"migration\\(s\\) {LATER.version}, which this"):
        backend.open()
    assert recorded_migrations(backend) == list(range(1, LATER.version + 1))


def test_replicas_opening_together_migrate_once(backend: Backend) -> None:
    """Four stores opening one new database at once: one migrates, the rest find it done."""
    start = threading.Barrier(4)
    migrated: list[str] = []

    def open_one() -> None:
        start.wait()
        try:
            migrated.append(str(backend.open().migrated))
        except Exception as exc:  # any failure to open fails the assertion below
            migrated.append(repr(exc))

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(migrated) == [str(list(range(1, LATEST + 1))), "[]", "[]", "[]"]


# -- opening and failing -------------------------------------------------------------


def test_open_store_chooses_the_store_by_url(tmp_path: Path) -> None:
    """sqlite:PATH or a bare path opens a SQLite file; a postgresql:// URI PostgreSQL."""
    for url in [f"sqlite:{tmp_path / 'a.db'}", str(tmp_path / "b.db")]:
        store = open_store(url)
        assert isinstance(store, SqlStore)
        assert store.database.dialect is SQLITE
        store.close()
    with fresh_schema() as schema:
        store = open_store(dsn_for(schema))
        assert isinstance(store, SqlStore)
        assert store.database.dialect is POSTGRES
        assert store.migrated == list(range(1, LATEST + 1))
        store.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_unreachable_database_is_store_unavailable(kind: str, tmp_path: Path) -> None:
    """A file that cannot be created, or a server that refuses: StoreUnavailable saying where."""
    if kind == "sqlite":
        (tmp_path / "file").write_text("not a directory")
        with pytest.raises(StoreUnavailable, match="SQLite"):
            SqlStore(SqliteDatabase(tmp_path / "file" / "registry.db"))
    else:
        with pytest.raises(StoreUnavailable, match=r"PostgreSQL 127\.0\.0\.1:1/test"):
            SqlStore(PostgresDatabase("postgresql://postgres@127.0.0.1:1/test"))


def _named_store(schema: str) -> SqlStore:
    """A store in schema whose connections are named schema (for end_backends)."""
    return SqlStore(PostgresDatabase(make_conninfo(DSN, application_name=schema), schema=schema))


def test_postgres_store_recovers_after_losing_its_connection() -> None:
    """Its connection ended by the server: StoreUnavailable once, then it reconnects."""
    with fresh_schema() as schema:
        store = SqlStore(
            PostgresDatabase(make_conninfo(DSN, application_name=schema), schema=schema)
        )
        try:
            store.propose(change(), 1.0)
            assert end_backends(schema) == 1
            with pytest.raises(StoreUnavailable, match=f"schema {schema}"):
                store.proposal(1)
            assert store.proposal(1).state is PENDING
        finally:
            store.close()


def test_postgres_connection_lost_mid_decision_changes_nothing() -> None:
    """The server ends the connection while settle decides: StoreUnavailable, the proposal
    still PENDING and no revision written; the retry applies it."""
    with fresh_schema() as schema:
        store = SqlStore(
            PostgresDatabase(make_conninfo(DSN, application_name=schema), schema=schema)
        )
        try:
            pending = store.propose(change(), 1.0)

            def approve_as_the_server_goes(_: Proposal) -> Settlement:
                assert end_backends(schema) == 1
                return APPLIED, "bob", "ok"

            with pytest.raises(StoreUnavailable):
                store.decide(pending.id, approve_as_the_server_goes, 2.0)
            assert (store.proposal(pending.id).state, store.head()) == (PENDING, None)
            _, revision = store.decide(pending.id, approve(), 3.0)
            assert revision is not None
            assert revision.revision == 1
        finally:
            store.close()
