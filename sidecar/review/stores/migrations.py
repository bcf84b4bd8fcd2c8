"""The review store's schema, as numbered migrations applied in order at open and
recorded in ``review_migrations`` (``sidecar.storage.migrations`` says how). Never
edit or renumber a migration that has shipped: add the next one. No I/O here.

Migration 1 is the schema the store had before it had migrations, written with ``IF
NOT EXISTS``: a database made then is adopted as it is (the statements find
everything in place, and the migration is recorded), never rebuilt."""

from __future__ import annotations

from sidecar.storage.migrations import Migration, Schema
from sidecar.storage.principals import principal_table

REVIEW_LOCK_KEY = 7432  # its PostgreSQL advisory lock; the registry's is 7433

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "review items: each escalation beside the columns the queue filters and orders by",
        (
            """CREATE TABLE IF NOT EXISTS review_items (
                escalation_id TEXT PRIMARY KEY,
                model TEXT NOT NULL,
                tier TEXT NOT NULL,
                priority INTEGER NOT NULL,
                state TEXT NOT NULL,
                due_at DOUBLE PRECISION NOT NULL,
                escalation_level INTEGER NOT NULL,
                received_at DOUBLE PRECISION NOT NULL,
                trace_id TEXT NOT NULL,
                claimed_by TEXT NOT NULL DEFAULT '',
                claimed_at DOUBLE PRECISION NOT NULL DEFAULT 0,
                lease_expires_at DOUBLE PRECISION NOT NULL DEFAULT 0,
                reviewer TEXT,
                verdict TEXT,
                label_class INTEGER,
                label TEXT,
                rationale TEXT,
                time_to_label_seconds DOUBLE PRECISION,
                resolved_at DOUBLE PRECISION,
                escalation TEXT NOT NULL
            )""",
            """CREATE INDEX IF NOT EXISTS review_items_urgency
                ON review_items (escalation_level DESC, priority, due_at, received_at,
                    escalation_id)
                WHERE state <> 'RESOLVED'""",
            """CREATE INDEX IF NOT EXISTS review_items_due
                ON review_items (due_at) WHERE state <> 'RESOLVED'""",
            "CREATE INDEX IF NOT EXISTS review_items_model ON review_items (model, state)",
            """CREATE INDEX IF NOT EXISTS review_items_resolved
                ON review_items (resolved_at, escalation_id) WHERE state = 'RESOLVED'""",
        ),
    ),
)

MIGRATIONS += (
    Migration(
        2,
        "principals who may call the queue; the lead who recorded a verdict for a reviewer",
        (
            *principal_table("review_principals"),
            "ALTER TABLE review_items ADD COLUMN acted_by TEXT NOT NULL DEFAULT ''",
            """CREATE INDEX review_items_claimed
                ON review_items (claimed_by, lease_expires_at) WHERE state = 'CLAIMED'""",
        ),
    ),
)

MIGRATIONS += (
    Migration(
        3,
        "when each resolution was sent to the feedback service (0: not yet)",
        (
            """ALTER TABLE review_items
                ADD COLUMN forwarded_at DOUBLE PRECISION NOT NULL DEFAULT 0""",
            """CREATE INDEX review_items_unforwarded
                ON review_items (resolved_at) WHERE state = 'RESOLVED' AND forwarded_at = 0""",
        ),
    ),
)

MIGRATIONS += (
    Migration(
        4,
        "what the reviewer was shown with each resolution (a JSON object as text)",
        ("ALTER TABLE review_items ADD COLUMN evidence TEXT NOT NULL DEFAULT ''",),
    ),
)

MIGRATIONS += (
    Migration(
        5,
        "consensus: the reviews each item needs, its answers, and the agreement reached",
        (
            "ALTER TABLE review_items ADD COLUMN reviews_required INTEGER NOT NULL DEFAULT 1",
            "ALTER TABLE review_items ADD COLUMN consensus TEXT NOT NULL DEFAULT 'all'",
            "ALTER TABLE review_items ADD COLUMN answered INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE review_items ADD COLUMN agreement TEXT NOT NULL DEFAULT ''",
            """CREATE TABLE review_answers (
                escalation_id TEXT NOT NULL REFERENCES review_items (escalation_id),
                reviewer TEXT NOT NULL,
                verdict TEXT NOT NULL,
                label_class INTEGER NOT NULL,
                label TEXT NOT NULL,
                rationale TEXT NOT NULL,
                time_to_label_seconds DOUBLE PRECISION NOT NULL,
                answered_at DOUBLE PRECISION NOT NULL,
                acted_by TEXT NOT NULL,
                evidence TEXT NOT NULL,
                PRIMARY KEY (escalation_id, reviewer)
            )""",
        ),
    ),
)

MIGRATIONS += (
    Migration(
        6,
        "reverted resolutions: each kept with who reverted it, when and why",
        (
            """CREATE TABLE review_reverts (
                escalation_id TEXT NOT NULL REFERENCES review_items (escalation_id),
                reviewer TEXT NOT NULL,
                verdict TEXT NOT NULL,
                label_class INTEGER NOT NULL,
                label TEXT NOT NULL,
                rationale TEXT NOT NULL,
                time_to_label_seconds DOUBLE PRECISION NOT NULL,
                resolved_at DOUBLE PRECISION NOT NULL,
                acted_by TEXT NOT NULL,
                evidence TEXT NOT NULL,
                agreement TEXT NOT NULL,
                forwarded_at DOUBLE PRECISION NOT NULL,
                reverted_by TEXT NOT NULL,
                reverted_at DOUBLE PRECISION NOT NULL,
                reason TEXT NOT NULL
            )""",
            "CREATE INDEX review_reverts_item ON review_reverts (escalation_id, reverted_at)",
        ),
    ),
)

MIGRATIONS += (
    Migration(
        7,
        "which of its item's resolutions each reverted one was (1: the first), and when its"
        " retraction reached the feedback service (0: not yet, or it never had the label)",
        (
            "ALTER TABLE review_reverts ADD COLUMN number INTEGER NOT NULL DEFAULT 0",
            """ALTER TABLE review_reverts
                ADD COLUMN retracted_at DOUBLE PRECISION NOT NULL DEFAULT 0""",
            """UPDATE review_reverts SET number = (
                SELECT COUNT(*) FROM review_reverts p
                WHERE p.escalation_id = review_reverts.escalation_id
                  AND p.reverted_at <= review_reverts.reverted_at)""",
            """CREATE INDEX review_reverts_unretracted
                ON review_reverts (reverted_at) WHERE forwarded_at > 0 AND retracted_at = 0""",
        ),
    ),
)

MIGRATIONS += (
    Migration(
        8,
        "each item's claims, releases and escalation level raises, with when and by whom",
        (
            """CREATE TABLE review_events (
                escalation_id TEXT NOT NULL REFERENCES review_items (escalation_id),
                at DOUBLE PRECISION NOT NULL,
                kind TEXT NOT NULL,
                actor TEXT NOT NULL,
                detail TEXT NOT NULL
            )""",
            "CREATE INDEX review_events_item ON review_events (escalation_id, at)",
        ),
    ),
)

SCHEMA = Schema("review", REVIEW_LOCK_KEY, MIGRATIONS)
