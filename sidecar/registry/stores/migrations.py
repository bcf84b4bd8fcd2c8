"""The registry's schema, as numbered migrations applied in order at open and
recorded in ``registry_migrations`` (``sidecar.storage.migrations`` says how). Never
edit or renumber a migration that has shipped: add the next one. No I/O here."""

from __future__ import annotations

from sidecar.storage.migrations import Migration
from sidecar.storage.principals import principal_table

_APPEND_ONLY = "registry_audit is append-only"

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "principals, proposals, revisions and their head, calibrators, audit",
        (
            *principal_table("registry_principals"),
            """CREATE TABLE registry_proposals (
                id {serial_key},
                base_revision INTEGER NOT NULL,
                document TEXT NOT NULL,
                proposed_by TEXT NOT NULL,
                reason TEXT NOT NULL,
                rollback_of INTEGER NOT NULL,
                widening TEXT NOT NULL,
                state TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                decided_by TEXT NOT NULL DEFAULT '',
                decided_at DOUBLE PRECISION NOT NULL DEFAULT 0,
                decision_reason TEXT NOT NULL DEFAULT '',
                revision INTEGER NOT NULL DEFAULT 0
            )""",
            "CREATE INDEX registry_proposals_state ON registry_proposals (state, id)",
            """CREATE TABLE registry_revisions (
                revision INTEGER PRIMARY KEY,
                document TEXT NOT NULL,
                proposal_id BIGINT NOT NULL REFERENCES registry_proposals (id),
                proposed_by TEXT NOT NULL,
                approved_by TEXT NOT NULL,
                reason TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL
            )""",
            # One row: the head's number. Every transaction that may write a revision
            # locks it first, so concurrent approvals queue instead of racing for head + 1.
            """CREATE TABLE registry_head (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                revision INTEGER NOT NULL
            )""",
            "INSERT INTO registry_head (id, revision) VALUES (1, 0)",
            """CREATE TABLE registry_calibrators (
                sha256 TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                version TEXT NOT NULL,
                size BIGINT NOT NULL,
                uploaded_by TEXT NOT NULL,
                uploaded_at DOUBLE PRECISION NOT NULL,
                content {blob} NOT NULL
            )""",
            """CREATE TABLE registry_audit (
                id {serial_key},
                at DOUBLE PRECISION NOT NULL,
                principal TEXT NOT NULL,
                method TEXT NOT NULL,
                outcome TEXT NOT NULL,
                detail TEXT NOT NULL
            )""",
        ),
        sqlite=(
            f"""CREATE TRIGGER registry_audit_no_update BEFORE UPDATE ON registry_audit
                BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END""",
            f"""CREATE TRIGGER registry_audit_no_delete BEFORE DELETE ON registry_audit
                BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END""",
        ),
        postgresql=(
            f"""CREATE FUNCTION registry_audit_refuse() RETURNS trigger
                LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION '{_APPEND_ONLY}'; END $$""",
            """CREATE TRIGGER registry_audit_append_only
                BEFORE UPDATE OR DELETE OR TRUNCATE ON registry_audit
                FOR EACH STATEMENT EXECUTE FUNCTION registry_audit_refuse()""",
        ),
    ),
)
