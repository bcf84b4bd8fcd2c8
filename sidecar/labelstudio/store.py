"""Where the bridge keeps what Label Studio does not: which task holds which
escalation (one task per escalation id: the table's key), each task's deadline and
escalation level (and the level last written to Label Studio), its resolution and
whether the feedback service has it, the sent resolutions an update of their
annotation corrected (``labelstudio_corrections``, each retracted at the service
before the resolution that supersedes it is sent), the annotations refused (so each
is counted once), and how far each project's tasks have been read. One SQL store on
SQLite or PostgreSQL (``sidecar.storage``), migrated at open (``migrations``). Every
method is one transaction and takes ``now`` from the caller."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sidecar.escalation.record import Escalation
from sidecar.labelstudio.migrations import SCHEMA
from sidecar.review.bulk import Reverted
from sidecar.review.item import PRIORITY, ItemState, Resolution, ReviewItem, Verdict
from sidecar.review.sla import Sla
from sidecar.storage.sql import Database, render_all
from sidecar.storage.store import ServiceStore, open_database

_COLUMNS = """escalation_id, task_id, project_id, escalation, data, received_at, due_at,
    escalation_level, synced_level, annotation_id, reviewer, verdict, label_class, label,
    time_to_label_seconds, resolved_at"""
# The number of a task's standing resolution (table alias t): 1 + its corrections.
_NUMBER = """1 + (SELECT COUNT(*) FROM labelstudio_corrections c
    WHERE c.escalation_id = t.escalation_id) AS number"""


class Registered(StrEnum):
    NEW = "new"  # the escalation's task, now tracked
    KNOWN = "known"  # this task, tracked already
    DUPLICATE = "duplicate"  # another task holds the escalation id


class Recorded(StrEnum):
    RESOLVED = "resolved"  # the task's first resolution
    UPDATED = "updated"  # its annotation changed before the resolution was sent
    CORRECTED = "corrected"  # its annotation changed after: a new resolution, the old retracted
    UNCHANGED = "unchanged"  # the same annotation, read again
    SETTLED = "settled"  # resolved by another annotation: kept as it was


@dataclass(frozen=True, slots=True)
class Task:
    """An escalation's task as the bridge tracks it."""

    escalation: Escalation
    task_id: int
    project_id: int
    data: Mapping[str, Any]
    received_at: float
    due_at: float
    escalation_level: int = 0
    synced_level: int = -1
    annotation_id: int | None = None
    resolution: Resolution | None = None

    def item(self) -> ReviewItem:
        """As the review queue's item, for its REVIEW event (``review.outbox``): the
        labelling started lead_time before the resolution (Label Studio has no claim)."""
        r = self.resolution
        return ReviewItem(
            escalation=self.escalation,
            state=ItemState.RESOLVED if r else ItemState.OPEN,
            priority=PRIORITY.get(self.escalation.tier, len(PRIORITY)),
            due_at=self.due_at,
            escalation_level=self.escalation_level,
            received_at=self.received_at,
            claimed_by=r.reviewer if r else "",
            claimed_at=max(self.received_at, r.resolved_at - r.time_to_label_seconds) if r else 0.0,
            resolution=r,
        )


@dataclass(frozen=True, slots=True)
class _Sql:
    """The store's statements, as templates (``sql.render``: ``{columns}``, :name)."""

    insert: str = """
        INSERT INTO labelstudio_tasks (escalation_id, task_id, project_id, model, tier,
            escalation, data, received_at, due_at)
        VALUES (:escalation_id, :task_id, :project_id, :model, :tier, :escalation, :data,
            :received_at, :due_at)
        ON CONFLICT DO NOTHING"""
    holder: str = "SELECT task_id FROM labelstudio_tasks WHERE escalation_id = :escalation_id"
    task: str = "SELECT {columns} FROM labelstudio_tasks WHERE task_id = :task_id"
    resolution: str = """
        SELECT annotation_id, verdict, label, reviewer, forwarded_at, {number}
        FROM labelstudio_tasks t WHERE task_id = :task_id {row_lock}"""
    # The sent resolution, withdrawn: kept as the correction numbered as it was.
    correct: str = """
        INSERT INTO labelstudio_corrections (escalation_id, number, annotation_id, reviewer,
            verdict, label_class, label, time_to_label_seconds, resolved_at, forwarded_at,
            corrected_by, corrected_at)
        SELECT escalation_id, :number, annotation_id, reviewer, verdict, label_class, label,
            time_to_label_seconds, resolved_at, forwarded_at, :corrected_by, :corrected_at
        FROM labelstudio_tasks WHERE task_id = :task_id"""
    resolve: str = """
        UPDATE labelstudio_tasks SET annotation_id = :annotation_id, reviewer = :reviewer,
            verdict = :verdict, label_class = :label_class, label = :label,
            time_to_label_seconds = :time_to_label, resolved_at = :resolved_at,
            forwarded_at = 0
        WHERE task_id = :task_id"""
    refuse: str = """
        INSERT INTO labelstudio_refusals (annotation_id, reason, detail, refused_at)
        VALUES (:annotation_id, :reason, :detail, :now) ON CONFLICT DO NOTHING"""
    last_task: str = "SELECT last_task_id FROM labelstudio_projects WHERE project_id = :project_id"
    set_last_task: str = """
        INSERT INTO labelstudio_projects (project_id, last_task_id) VALUES (:project_id, :task_id)
        ON CONFLICT (project_id) DO UPDATE SET last_task_id = :task_id
        WHERE labelstudio_projects.last_task_id < :task_id"""
    unchecked: str = """
        SELECT {columns} FROM labelstudio_tasks WHERE resolved_at IS NULL
        ORDER BY checked_at, task_id LIMIT :limit {skip_locked}"""
    checked: str = "UPDATE labelstudio_tasks SET checked_at = :now WHERE task_id = :task_id"
    overdue: str = """
        SELECT {columns} FROM labelstudio_tasks WHERE resolved_at IS NULL AND due_at <= :now
        {skip_locked}"""
    raise_level: str = """
        UPDATE labelstudio_tasks SET escalation_level = escalation_level + 1, due_at = :due_at
        WHERE task_id = :task_id"""
    unsynced: str = """
        SELECT {columns} FROM labelstudio_tasks
        WHERE resolved_at IS NULL AND synced_level < escalation_level
        ORDER BY task_id LIMIT :limit"""
    synced: str = "UPDATE labelstudio_tasks SET synced_level = :level WHERE task_id = :task_id"
    # A correction's resolution waits for the retraction of the one it supersedes.
    unforwarded: str = """
        SELECT {columns}, {number} FROM labelstudio_tasks t
        WHERE resolved_at IS NOT NULL AND forwarded_at = 0
          AND NOT EXISTS (SELECT 1 FROM labelstudio_corrections c
                          WHERE c.escalation_id = t.escalation_id AND c.retracted_at = 0)
        ORDER BY resolved_at, escalation_id LIMIT :limit"""
    # Only the resolution that was sent: an annotation updated while it was on its way
    # stays unsent (and is sent after it).
    forwarded: str = """
        UPDATE labelstudio_tasks SET forwarded_at = :now
        WHERE escalation_id = :escalation_id AND forwarded_at = 0
          AND reviewer = :reviewer AND verdict = :verdict AND label = :label
          AND :number = 1 + (SELECT COUNT(*) FROM labelstudio_corrections c
                             WHERE c.escalation_id = :escalation_id)"""
    unretracted: str = """
        SELECT c.escalation_id, c.number, c.annotation_id, c.reviewer, c.verdict,
            c.label_class, c.label, c.time_to_label_seconds, c.resolved_at, c.forwarded_at,
            c.corrected_by, c.corrected_at, t.escalation
        FROM labelstudio_corrections c JOIN labelstudio_tasks t
            ON t.escalation_id = c.escalation_id
        WHERE c.retracted_at = 0
        ORDER BY c.corrected_at, c.escalation_id, c.number LIMIT :limit"""
    retracted: str = """
        UPDATE labelstudio_corrections SET retracted_at = :now
        WHERE escalation_id = :escalation_id AND number = :number AND retracted_at = 0"""
    forget: str = "DELETE FROM labelstudio_tasks WHERE task_id = :task_id AND resolved_at IS NULL"
    counts: str = """
        SELECT tier, COUNT(*) AS tasks FROM labelstudio_tasks
        WHERE resolved_at IS NULL GROUP BY tier"""


class BridgeStore(ServiceStore):
    def __init__(self, db: Database) -> None:
        super().__init__(db, SCHEMA)
        self._sql = render_all(_Sql(), db.dialect, columns=_COLUMNS, number=_NUMBER)

    def register(self, task: Task) -> Registered:
        with self._transaction() as tx:
            inserted = tx.run(
                self._sql.insert,
                {
                    "escalation_id": task.escalation.escalation_id,
                    "task_id": task.task_id,
                    "project_id": task.project_id,
                    "model": task.escalation.model,
                    "tier": task.escalation.tier,
                    "escalation": json.dumps(task.escalation.to_dict()),
                    "data": json.dumps(dict(task.data)),
                    "received_at": task.received_at,
                    "due_at": task.due_at,
                },
            )
            rows = tx.rows(
                self._sql.holder,
                {"escalation_id": task.escalation.escalation_id},
            )
        if inserted:
            return Registered.NEW
        return Registered.KNOWN if int(rows[0]["task_id"]) == task.task_id else Registered.DUPLICATE

    def task(self, task_id: int) -> Task | None:
        rows = self._rows(
            self._sql.task,
            {"task_id": task_id},
        )
        return _task(rows[0]) if rows else None

    def record(
        self, task_id: int, annotation_id: int, resolution: Resolution, now: float
    ) -> tuple[Recorded, int]:
        """Record an annotation's resolution of a task: the first one resolves it; the
        same annotation read with other content replaces it until it is sent, and once
        it is sent makes the next resolution, the sent one kept as corrected now (to be
        retracted). What was recorded, and the number of the resolution that stands
        (1: the first; 0: none)."""
        with self._transaction() as tx:
            rows = tx.rows(
                self._sql.resolution,
                {"task_id": task_id},
            )
            if not rows:
                return Recorded.SETTLED, 0  # no longer tracked (deleted in Label Studio)
            held = rows[0]
            number = int(held["number"])
            recorded = Recorded.RESOLVED
            if held["annotation_id"] is not None:
                if int(held["annotation_id"]) != annotation_id:
                    return Recorded.SETTLED, number
                same = (held["verdict"], held["label"], held["reviewer"]) == (
                    resolution.verdict.value,
                    resolution.label,
                    resolution.reviewer,
                )
                if same:
                    return Recorded.UNCHANGED, number
                recorded = Recorded.UPDATED
            if held["forwarded_at"]:
                tx.run(
                    self._sql.correct,
                    {
                        "task_id": task_id,
                        "number": number,
                        "corrected_by": resolution.reviewer,
                        "corrected_at": now,
                    },
                )
                recorded, number = Recorded.CORRECTED, number + 1
            tx.run(
                self._sql.resolve,
                {
                    "task_id": task_id,
                    "annotation_id": annotation_id,
                    "reviewer": resolution.reviewer,
                    "verdict": resolution.verdict.value,
                    "label_class": resolution.label_class,
                    "label": resolution.label,
                    "time_to_label": resolution.time_to_label_seconds,
                    "resolved_at": resolution.resolved_at,
                },
            )
        return recorded, number

    def refuse(self, annotation_id: int, reason: str, detail: str, now: float) -> bool:
        """Keep a refusal; False when this annotation was refused for it before."""
        with self._transaction() as tx:
            return (
                tx.run(
                    self._sql.refuse,
                    {
                        "annotation_id": annotation_id,
                        "reason": reason,
                        "detail": detail,
                        "now": now,
                    },
                )
                > 0
            )

    def last_task_id(self, project_id: int) -> int:
        rows = self._rows(
            self._sql.last_task,
            {"project_id": project_id},
        )
        return int(rows[0]["last_task_id"]) if rows else 0

    def set_last_task_id(self, project_id: int, task_id: int) -> None:
        with self._transaction() as tx:
            tx.run(
                self._sql.set_last_task,
                {"project_id": project_id, "task_id": task_id},
            )

    def unchecked(self, limit: int, now: float) -> list[Task]:
        """Up to limit unresolved tasks, the longest unchecked first, marked checked now."""
        with self._transaction() as tx:
            rows = tx.rows(
                self._sql.unchecked,
                {"limit": limit},
            )
            tx.run_many(
                self._sql.checked,
                [{"now": now, "task_id": row["task_id"]} for row in rows],
            )
        return [_task(row) for row in rows]

    def raise_overdue(self, sla: Sla, now: float) -> list[Task]:
        """Raise each unresolved task past its deadline one level, with a new deadline of
        now plus its tier's SLA; the tasks raised."""
        with self._transaction() as tx:
            rows = tx.rows(
                self._sql.overdue,
                {"now": now},
            )
            raised = [_task(row) for row in rows]
            tx.run_many(
                self._sql.raise_level,
                [
                    {"task_id": t.task_id, "due_at": sla.due_at(t.escalation.tier, now)}
                    for t in raised
                ],
            )
        return [
            Task(
                t.escalation,
                t.task_id,
                t.project_id,
                t.data,
                t.received_at,
                sla.due_at(t.escalation.tier, now),
                t.escalation_level + 1,
                t.synced_level,
            )
            for t in raised
        ]

    def unsynced(self, limit: int) -> list[Task]:
        """Unresolved tasks whose level Label Studio does not show yet."""
        rows = self._rows(
            self._sql.unsynced,
            {"limit": limit},
        )
        return [_task(row) for row in rows]

    def mark_synced(self, task_id: int, level: int) -> None:
        with self._transaction() as tx:
            tx.run(
                self._sql.synced,
                {"task_id": task_id, "level": level},
            )

    def unforwarded_numbered(self, limit: int, now: float) -> list[tuple[ReviewItem, int]]:
        """Up to limit unsent resolutions, the oldest first, each as its task's item
        with its number; a correction's once the one it supersedes is retracted."""
        rows = self._rows(
            self._sql.unforwarded,
            {"limit": limit},
        )
        return [(_task(row).item(), int(row["number"])) for row in rows]

    def mark_forwarded(self, resolved: Sequence[tuple[ReviewItem, int]], now: float) -> None:
        """Mark these resolutions, each (item, its number), sent, each unless it changed
        since it was read."""
        marks = []
        for item, number in resolved:
            r = item.resolution
            assert r is not None  # only resolved items are sent
            marks.append(
                {
                    "escalation_id": item.escalation.escalation_id,
                    "now": now,
                    "reviewer": r.reviewer,
                    "verdict": r.verdict.value,
                    "label": r.label,
                    "number": number,
                }
            )
        with self._transaction() as tx:
            tx.run_many(self._sql.forwarded, marks)

    def unretracted(self, limit: int) -> list[tuple[Escalation, Reverted]]:
        """Up to limit corrected resolutions whose retraction has not reached the
        feedback service, the oldest correction first, each with its escalation (as
        the review queue's reverts, ``review.outbox.retraction_event``)."""
        rows = self._rows(
            self._sql.unretracted,
            {"limit": limit},
        )
        return [
            (Escalation.from_dict(json.loads(row["escalation"])), _corrected(row)) for row in rows
        ]

    def mark_retracted(self, corrections: Sequence[tuple[str, int]], now: float) -> None:
        """Record that the retractions of these corrected resolutions, each
        (escalation_id, number), reached the feedback service."""
        with self._transaction() as tx:
            tx.run_many(
                self._sql.retracted,
                [{"escalation_id": e, "number": n, "now": now} for e, n in corrections],
            )

    def forget(self, task_id: int) -> bool:
        """Stop tracking an unresolved task (deleted in Label Studio); False if none."""
        with self._transaction() as tx:
            return tx.run(self._sql.forget, {"task_id": task_id}) > 0

    def counts(self) -> dict[str, int]:
        """Unresolved tasks by tier."""
        rows = self._rows(
            self._sql.counts,
            {},
        )
        return {str(row["tier"]): int(row["tasks"]) for row in rows}


def open_store(url: str) -> BridgeStore:
    """The store on url: ``sqlite:PATH`` or ``postgresql://...``."""
    return BridgeStore(open_database(url))


def _corrected(row: Mapping[str, Any]) -> Reverted:
    """A correction as the revert of the resolution it withdrew."""
    return Reverted(
        escalation_id=row["escalation_id"],
        resolution=_resolution(row),
        reverted_by=row["corrected_by"],
        reverted_at=float(row["corrected_at"]),
        reason=f"annotation {row['annotation_id']} updated in Label Studio",
        forwarded_at=float(row["forwarded_at"]),
        number=int(row["number"]),
    )


def _resolution(row: Mapping[str, Any]) -> Resolution:
    return Resolution(
        reviewer=row["reviewer"],
        verdict=Verdict(row["verdict"]),
        label_class=int(row["label_class"]),
        label=row["label"],
        rationale="",
        time_to_label_seconds=float(row["time_to_label_seconds"]),
        resolved_at=float(row["resolved_at"]),
    )


def _task(row: Mapping[str, Any]) -> Task:
    resolution = None if row["resolved_at"] is None else _resolution(row)
    return Task(
        escalation=Escalation.from_dict(json.loads(row["escalation"])),
        task_id=int(row["task_id"]),
        project_id=int(row["project_id"]),
        data=json.loads(row["data"]),
        received_at=float(row["received_at"]),
        due_at=float(row["due_at"]),
        escalation_level=int(row["escalation_level"]),
        synced_level=int(row["synced_level"]),
        annotation_id=None if row["annotation_id"] is None else int(row["annotation_id"]),
        resolution=resolution,
    )
