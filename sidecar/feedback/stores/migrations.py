"""The feedback store's schema, as numbered migrations applied in order at open and
recorded in ``feedback_migrations`` (``sidecar.storage.migrations`` says how). Never
edit or renumber a migration that has shipped: add the next one. No I/O here.

Events and decisions are append-only: no statement of the store updates or deletes
one. ``seq`` orders events as received; ``feedback_id`` is unique, and so is a
decision's ``request_id``, so a resend is found, not stored twice. Dead letters name
events no decision claimed within the join window; a replay removes those whose
decision has arrived since. A retraction is an event too: it names the label event it
withdraws (``retracts``), which stays, and every label query leaves out."""

from __future__ import annotations

from sidecar.storage.migrations import Migration, Schema
from sidecar.storage.principals import principal_table

FEEDBACK_LOCK_KEY = 7435  # its PostgreSQL advisory lock (the review store's is 7432)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "principals who may call the service; the event log",
        (
            *principal_table("feedback_principals"),
            """CREATE TABLE feedback_events (
                seq {serial_key},
                feedback_id TEXT NOT NULL UNIQUE,
                request_id TEXT NOT NULL,
                model TEXT NOT NULL,
                type TEXT NOT NULL,
                event TEXT NOT NULL,
                sender TEXT NOT NULL,
                received_at DOUBLE PRECISION NOT NULL
            )""",
            "CREATE INDEX feedback_events_request ON feedback_events (request_id, seq)",
            "CREATE INDEX feedback_events_model ON feedback_events (model, seq)",
        ),
    ),
)

MIGRATIONS += (
    Migration(
        2,
        "the decisions events are attributed to; events no decision claimed in time",
        (
            """CREATE TABLE feedback_decisions (
                request_id TEXT PRIMARY KEY,
                model TEXT NOT NULL,
                decision TEXT NOT NULL,
                inclusion_probability DOUBLE PRECISION NOT NULL,
                decided_at DOUBLE PRECISION NOT NULL,
                sender TEXT NOT NULL,
                received_at DOUBLE PRECISION NOT NULL
            )""",
            "CREATE INDEX feedback_decisions_model ON feedback_decisions (model, decided_at)",
            """CREATE TABLE feedback_dead_letters (
                feedback_id TEXT PRIMARY KEY,
                reason TEXT NOT NULL,
                dead_at DOUBLE PRECISION NOT NULL
            )""",
            "CREATE INDEX feedback_events_received ON feedback_events (received_at)",
        ),
    ),
)

MIGRATIONS += (
    Migration(
        3,
        "each decision's class count, which a label's class is checked against (0: unknown)",
        ("ALTER TABLE feedback_decisions ADD COLUMN classes INTEGER NOT NULL DEFAULT 0",),
    ),
)

MIGRATIONS += (
    Migration(
        4,
        "each model's last model-update trigger: up to when, and the dataset it named",
        (
            """CREATE TABLE feedback_triggers (
                model TEXT PRIMARY KEY,
                until DOUBLE PRECISION NOT NULL,
                dataset TEXT NOT NULL,
                rows INTEGER NOT NULL,
                at DOUBLE PRECISION NOT NULL
            )""",
        ),
    ),
)

MIGRATIONS += (
    Migration(
        5,
        "what the loop's health is counted from: a decision's tier and predicted class, a"
        " label's class (-1: none)",
        (
            "ALTER TABLE feedback_decisions ADD COLUMN tier TEXT NOT NULL DEFAULT ''",
            """ALTER TABLE feedback_decisions
                ADD COLUMN predicted_class INTEGER NOT NULL DEFAULT -1""",
            "ALTER TABLE feedback_events ADD COLUMN label_class INTEGER NOT NULL DEFAULT -1",
            "CREATE INDEX feedback_decisions_decided ON feedback_decisions (decided_at)",
        ),
    ),
)

MIGRATIONS += (
    Migration(
        6,
        "each decision's class labels (a JSON array; '': not known), which a label's name"
        " is checked against and resolved by",
        ("ALTER TABLE feedback_decisions ADD COLUMN labels TEXT NOT NULL DEFAULT ''",),
    ),
    Migration(
        7,
        "each decision's Route span (trace and span id), which the span of every call"
        " about its request links to",
        (
            "ALTER TABLE feedback_decisions ADD COLUMN trace_id TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE feedback_decisions ADD COLUMN span_id TEXT NOT NULL DEFAULT ''",
        ),
    ),
)

MIGRATIONS += (
    Migration(
        8,
        "retractions: the label event each RETRACTION withdraws ('': none)",
        (
            "ALTER TABLE feedback_events ADD COLUMN retracts TEXT NOT NULL DEFAULT ''",
            """CREATE INDEX feedback_events_retracts
                ON feedback_events (retracts) WHERE retracts <> ''""",
        ),
    ),
)

SCHEMA = Schema("feedback", FEEDBACK_LOCK_KEY, MIGRATIONS)
