"""The bridge store's schema, as numbered migrations applied in order at open and
recorded in ``labelstudio_migrations`` (``sidecar.storage.migrations``). Never edit
or renumber a migration that has shipped: add the next one. No I/O here."""

from __future__ import annotations

from sidecar.storage.migrations import Migration, Schema

LABELSTUDIO_LOCK_KEY = 7436  # its PostgreSQL advisory lock (the review store's is 7432)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "Label Studio tasks of escalations: deadline, level, resolution; refusals; projects",
        (
            """CREATE TABLE labelstudio_tasks (
                escalation_id TEXT PRIMARY KEY,
                task_id BIGINT NOT NULL UNIQUE,
                project_id BIGINT NOT NULL,
                model TEXT NOT NULL,
                tier TEXT NOT NULL,
                escalation TEXT NOT NULL,
                data TEXT NOT NULL,
                received_at DOUBLE PRECISION NOT NULL,
                due_at DOUBLE PRECISION NOT NULL,
                escalation_level INTEGER NOT NULL DEFAULT 0,
                synced_level INTEGER NOT NULL DEFAULT -1,
                checked_at DOUBLE PRECISION NOT NULL DEFAULT 0,
                annotation_id BIGINT,
                reviewer TEXT,
                verdict TEXT,
                label_class INTEGER,
                label TEXT,
                time_to_label_seconds DOUBLE PRECISION,
                resolved_at DOUBLE PRECISION,
                forwarded_at DOUBLE PRECISION NOT NULL DEFAULT 0
            )""",
            """CREATE INDEX labelstudio_tasks_open
                ON labelstudio_tasks (checked_at, task_id) WHERE resolved_at IS NULL""",
            """CREATE INDEX labelstudio_tasks_unsent
                ON labelstudio_tasks (resolved_at) WHERE resolved_at IS NOT NULL
                AND forwarded_at = 0""",
            """CREATE TABLE labelstudio_refusals (
                annotation_id BIGINT NOT NULL,
                reason TEXT NOT NULL,
                detail TEXT NOT NULL,
                refused_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (annotation_id, reason)
            )""",
            """CREATE TABLE labelstudio_projects (
                project_id BIGINT PRIMARY KEY,
                last_task_id BIGINT NOT NULL DEFAULT 0
            )""",
        ),
    ),
    Migration(
        2,
        "Corrections: each sent resolution an update of its annotation withdrew, to retract",
        (
            # number: which of the task's resolutions it was (1: the first); the task's
            # standing resolution is number 1 + its corrections. retracted_at: when its
            # retraction reached the feedback service (0: not yet).
            """CREATE TABLE labelstudio_corrections (
                escalation_id TEXT NOT NULL,
                number INTEGER NOT NULL,
                annotation_id BIGINT NOT NULL,
                reviewer TEXT NOT NULL,
                verdict TEXT NOT NULL,
                label_class INTEGER NOT NULL,
                label TEXT NOT NULL,
                time_to_label_seconds DOUBLE PRECISION NOT NULL,
                resolved_at DOUBLE PRECISION NOT NULL,
                forwarded_at DOUBLE PRECISION NOT NULL,
                corrected_by TEXT NOT NULL,
                corrected_at DOUBLE PRECISION NOT NULL,
                retracted_at DOUBLE PRECISION NOT NULL DEFAULT 0,
                PRIMARY KEY (escalation_id, number)
            )""",
            """CREATE INDEX labelstudio_corrections_unretracted
                ON labelstudio_corrections (corrected_at) WHERE retracted_at = 0""",
        ),
    ),
)

SCHEMA = Schema("labelstudio", LABELSTUDIO_LOCK_KEY, MIGRATIONS)
